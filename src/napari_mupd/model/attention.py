"""Attention layers: fused self-attention and decoupled cross-modal attention (DCA)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor, nn

#: The condition streams, in a fixed order.
STREAMS: tuple[str, ...] = ("text", "rna", "image")


@dataclass
class StreamInput:
    """One condition stream for a batch.

    tokens: (B, L, D_stream); present: (B,) bool, False where the sample has no such
    condition; key_mask: (B, L) bool, True for real tokens (None: all real).
    """

    tokens: Tensor
    present: Tensor
    key_mask: Tensor | None = None


def _heads(x: Tensor, num_heads: int) -> Tensor:
    b, n, d = x.shape
    return x.view(b, n, num_heads, d // num_heads).transpose(1, 2)


def _merge(x: Tensor) -> Tensor:
    b, h, n, d = x.shape
    return x.transpose(1, 2).reshape(b, n, h * d)


class SelfAttention(nn.Module):
    """Multi-head self-attention with one fused QKV projection and SDPA."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.num_heads, d // self.num_heads).unbind(2)
        o = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        return self.out(_merge(o))


class DecoupledCrossAttention(nn.Module):
    """One cross-attention stream per condition, queried by the image tokens.

    The query projection is shared; each stream has its own fused key/value projection.
    Stream outputs are summed, each multiplied by ``scale[stream] * present`` per sample,
    then projected (no bias). A stream that is absent for a sample, or scaled by 0,
    therefore adds exactly zero. Streams scaled by 0 are skipped, as are streams left out
    of the mapping (do that when no sample has the condition; no device sync is needed).
    """

    def __init__(self, dim: int, num_heads: int, stream_dims: Mapping[str, int]) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.ModuleDict({name: nn.Linear(d, 2 * dim) for name, d in stream_dims.items()})
        self.out = nn.Linear(dim, dim, bias=False)

    def forward(
        self,
        x: Tensor,
        streams: Mapping[str, StreamInput],
        scales: Mapping[str, float],
    ) -> Tensor | None:
        """Return the summed stream outputs (B, N, D), or None when no stream is active."""
        active = [(name, s) for name, s in streams.items() if scales.get(name, 1.0) != 0.0]
        if not active:
            return None
        q = _heads(self.q(x), self.num_heads)
        total: Tensor | None = None
        for name, s in active:
            k, v = self.kv[name](s.tokens.to(x.dtype)).chunk(2, dim=-1)
            mask = None
            if s.key_mask is not None:
                # absent samples attend to their (finite, ignored) tokens: no all-masked rows
                keep = s.key_mask | ~s.present[:, None]
                mask = keep[:, None, None, :]
            o = F.scaled_dot_product_attention(
                q, _heads(k, self.num_heads), _heads(v, self.num_heads), attn_mask=mask
            )
            gate = (s.present.to(x.dtype) * scales.get(name, 1.0))[:, None, None, None]
            total = o * gate if total is None else total + o * gate
        assert total is not None
        return self.out(_merge(total))
