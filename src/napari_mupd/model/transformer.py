"""`MuPDTransformer`: a SiT/DiT backbone with decoupled cross-modal attention (DCA)."""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import Tensor, nn

from napari_mupd.model.attention import STREAMS, DecoupledCrossAttention, SelfAttention, StreamInput
from napari_mupd.model.config import STAIN_CHANNELS, MuPDConfig


def timestep_embedding(t: Tensor, dim: int, max_period: float = 10_000.0) -> Tensor:
    """Sinusoidal features of ``1000 * t`` for t in [0, 1] (as DiT, on the 1000-step scale)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device) / half)
    args = 1000.0 * t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


def sincos_pos_embed(dim: int, grid_h: int, grid_w: int, device: torch.device) -> Tensor:
    """Fixed 2-D sine-cosine position embedding (grid_h * grid_w, dim), as in MAE/DiT."""
    quarter = dim // 4
    omega = 1.0 / 10_000 ** (torch.arange(quarter, device=device, dtype=torch.float64) / quarter)
    ys, xs = torch.meshgrid(
        torch.arange(grid_h, device=device, dtype=torch.float64),
        torch.arange(grid_w, device=device, dtype=torch.float64),
        indexing="ij",
    )
    out = [
        f(c.reshape(-1)[:, None] * omega[None]) for c in (ys, xs) for f in (torch.sin, torch.cos)
    ]
    emb = torch.cat(out, dim=1).float()
    return nn.functional.pad(emb, (0, dim - emb.shape[1]))


def _linears(module: nn.Module) -> list[nn.Linear]:
    """The linear layers directly inside a module (e.g. a ``nn.Sequential``), in order."""
    return [m for m in module.children() if isinstance(m, nn.Linear)]


def modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    """adaLN modulation: ``x * (1 + scale) + shift`` with per-sample (B, D) parameters."""
    return x * (1 + scale[:, None]) + shift[:, None]


class MuPDBlock(nn.Module):
    """Self-attention -> decoupled cross-modal attention -> MLP, adaLN-Zero modulated."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, stream_dims: dict[str, int]):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.attn = SelfAttention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.cross = DecoupledCrossAttention(dim, num_heads, stream_dims)
        self.norm3 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))

    def forward(
        self, x: Tensor, c: Tensor, streams: Mapping[str, StreamInput], scales: Mapping[str, float]
    ) -> Tensor:
        shift1, scale1, gate1, shift2, scale2, gate2 = self.ada(c).chunk(6, dim=-1)
        x = x + gate1[:, None] * self.attn(modulate(self.norm1(x), shift1, scale1))
        cross = self.cross(self.norm2(x), streams, scales)
        if cross is not None:
            x = x + cross
        return x + gate2[:, None] * self.mlp(modulate(self.norm3(x), shift2, scale2))


class MuPDTransformer(nn.Module):
    """Velocity network on VAE latents (flow matching, SiT/DiT-style).

    Input channels at the patch embedding: the noisy latent canvas
    (``config.canvas_channels``), the source H&E stain features (``STAIN_CHANNELS``,
    zeros when absent) and one flag channel (1 where a source is given, else 0).
    adaLN-Zero modulation comes from the timestep plus a learned target embedding only;
    text, RNA and reference-image tokens reach the network only through their DCA streams.
    The output is the velocity on the whole canvas; callers read the target's channels.
    """

    def __init__(self, config: MuPDConfig) -> None:
        super().__init__()
        self.config = config
        d, p = config.hidden_size, config.patch_size
        self.in_channels = config.canvas_channels + STAIN_CHANNELS + 1
        self.out_channels = config.canvas_channels
        self.patch_embed = nn.Conv2d(self.in_channels, d, kernel_size=p, stride=p)
        self.t_embed = nn.Sequential(nn.Linear(256, d), nn.SiLU(), nn.Linear(d, d))
        self.target_embed = nn.Embedding(len(config.targets), d)
        dims = {"text": config.text_dim, "rna": config.rna_dim, "image": config.image_dim}
        self.blocks = nn.ModuleList(
            MuPDBlock(d, config.num_heads, config.mlp_ratio, dims) for _ in range(config.depth)
        )
        self.final_norm = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        self.final_ada = nn.Sequential(nn.SiLU(), nn.Linear(d, 2 * d))
        self.final = nn.Linear(d, p * p * self.out_channels)
        self._pos_cache: dict[tuple[int, int, str], Tensor] = {}

    def initialize_weights(self) -> None:
        """The SiT/DiT initialisation for training from scratch (adaLN-Zero).

        Xavier-uniform linear layers, zero biases, N(0, 0.02) embeddings, zero adaLN
        projections and a zero output layer: every block starts as the identity and the
        velocity as zero. The constructor leaves PyTorch's default initialisation
        (like diffusers models), so a fresh model's output depends on its inputs.
        """
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        w = self.patch_embed.weight
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        if self.patch_embed.bias is not None:
            nn.init.zeros_(self.patch_embed.bias)
        nn.init.normal_(self.target_embed.weight, std=0.02)
        for lin in _linears(self.t_embed):
            nn.init.normal_(lin.weight, std=0.02)
        blocks = [b for b in self.blocks if isinstance(b, MuPDBlock)]
        adaptive = [lin for b in blocks for lin in _linears(b.ada)]
        for lin in [*adaptive, *_linears(self.final_ada), self.final]:
            nn.init.zeros_(lin.weight)
            nn.init.zeros_(lin.bias)

    def _pos_embed(self, gh: int, gw: int, device: torch.device) -> Tensor:
        key = (gh, gw, str(device))
        if key not in self._pos_cache:
            self._pos_cache[key] = sincos_pos_embed(self.config.hidden_size, gh, gw, device)
        return self._pos_cache[key]

    def forward(
        self,
        latents: Tensor,
        t: Tensor,
        target_ids: Tensor,
        streams: Mapping[str, StreamInput] | None = None,
        source: Tensor | None = None,
        source_present: Tensor | None = None,
        cross_attention_scales: Mapping[str, float] | None = None,
    ) -> Tensor:
        """Predict the velocity (B, canvas_channels, h, w).

        latents: (B, canvas_channels, h, w) noisy latents; t: (B,) or scalar in [0, 1]
        (1 = noise); target_ids: (B,) rows of `config.targets`; streams: condition
        tokens by name (``"text"``, ``"rna"``, ``"image"``); source: (B, STAIN_CHANNELS,
        h, w) source H&E latents, used where `source_present` (B,) is True (default: all);
        cross_attention_scales: per-stream multipliers (default 1).
        """
        b, _, h, w = latents.shape
        p = self.config.patch_size
        if h % p or w % p:
            raise ValueError(f"latent size {h}x{w} is not a multiple of the patch size {p}")
        unknown = set(streams or {}) - set(STREAMS)
        if unknown:
            raise ValueError(f"unknown condition stream(s) {sorted(unknown)}; known: {STREAMS}")
        if source is None:
            flag = latents.new_zeros(b, 1, h, w)
            source = latents.new_zeros(b, STAIN_CHANNELS, h, w)
        else:
            present = torch.ones(b, dtype=torch.bool, device=latents.device)
            if source_present is not None:
                present = source_present.to(latents.device)
            flag = present.to(latents.dtype)[:, None, None, None].expand(b, 1, h, w)
            source = source.to(latents.dtype) * flag
        x = self.patch_embed(torch.cat([latents, source.to(latents.dtype), flag], dim=1))
        gh, gw = x.shape[-2:]
        x = x.flatten(2).transpose(1, 2) + self._pos_embed(gh, gw, x.device).to(x.dtype)
        c = self.t_embed(timestep_embedding(t.expand(b), 256).to(x.dtype))
        c = c + self.target_embed(target_ids.expand(b))
        scales = dict(cross_attention_scales or {})
        for block in self.blocks:
            x = block(x, c, streams or {}, scales)
        shift, scale = self.final_ada(c).chunk(2, dim=-1)
        x = self.final(modulate(self.final_norm(x), shift, scale))
        x = x.view(b, gh, gw, p, p, self.out_channels).permute(0, 5, 1, 3, 2, 4)
        return x.reshape(b, self.out_channels, h, w)
