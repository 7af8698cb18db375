from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from napari_mupd.model import MuPDConfig, MuPDTransformer, StreamInput

CONFIG = MuPDConfig.tiny()
torch.manual_seed(0)
MODEL = MuPDTransformer(CONFIG).eval()


def inputs(b: int = 2, h: int = 8, w: int = 8, seed: int = 0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, CONFIG.canvas_channels, h, w, generator=g)
    t = torch.rand(b, generator=g)
    ids = torch.zeros(b, dtype=torch.long)
    return x, t, ids


def stream(b: int, length: int, dim: int, seed: int, present: list[bool]) -> StreamInput:
    g = torch.Generator().manual_seed(seed)
    return StreamInput(torch.randn(b, length, dim, generator=g), torch.tensor(present))


@torch.no_grad()
def test_output_shape_on_a_non_square_grid() -> None:
    x, t, ids = inputs(h=8, w=12)
    assert MODEL(x, t, ids).shape == x.shape


@torch.no_grad()
def test_sit_initialisation_starts_at_zero_velocity() -> None:
    model = MuPDTransformer(CONFIG)
    model.initialize_weights()
    x, t, ids = inputs()
    text = stream(2, 5, CONFIG.text_dim, 1, [True, True])
    assert torch.count_nonzero(model(x, t, ids, {"text": text})) == 0


@torch.no_grad()
def test_absent_condition_adds_exactly_nothing() -> None:
    """A sample whose condition is absent is unaffected by whatever tokens sit there."""
    x, t, ids = inputs()
    a = stream(2, 5, CONFIG.rna_dim, 1, [True, False])
    b = stream(2, 5, CONFIG.rna_dim, 2, [True, False])
    b.tokens[0] = a.tokens[0]
    out_a = MODEL(x, t, ids, {"rna": a})
    out_b = MODEL(x, t, ids, {"rna": b})
    assert torch.equal(out_a, out_b)
    alone = MODEL(x[1:], t[1:], ids[1:])
    torch.testing.assert_close(out_a[1:], alone, rtol=0, atol=1e-6)
    assert not torch.allclose(out_a[:1], MODEL(x[:1], t[:1], ids[:1]), atol=1e-4)


@torch.no_grad()
def test_padded_text_tokens_are_masked_out() -> None:
    x, t, ids = inputs(b=1)
    s = stream(1, 6, CONFIG.text_dim, 3, [True])
    s.key_mask = torch.tensor([[True, True, True, False, False, False]])
    other = StreamInput(s.tokens.clone(), s.present, s.key_mask)
    other.tokens[:, 3:] = 100.0
    assert torch.equal(MODEL(x, t, ids, {"text": s}), MODEL(x, t, ids, {"text": other}))


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 2**16), name=st.sampled_from(["text", "rna", "image"]))
@torch.no_grad()
def test_zero_scale_removes_a_stream(seed: int, name: str) -> None:
    dim = {"text": CONFIG.text_dim, "rna": CONFIG.rna_dim, "image": CONFIG.image_dim}[name]
    x, t, ids = inputs(seed=seed)
    a = stream(2, 4, dim, seed + 1, [True, True])
    b = stream(2, 4, dim, seed + 2, [True, True])
    off = {name: 0.0}
    assert torch.equal(MODEL(x, t, ids, {name: a}, None, None, off), MODEL(x, t, ids))
    assert torch.equal(
        MODEL(x, t, ids, {name: a}, None, None, off), MODEL(x, t, ids, {name: b}, None, None, off)
    )
    assert not torch.allclose(MODEL(x, t, ids, {name: a}), MODEL(x, t, ids, {name: b}), atol=1e-5)


@torch.no_grad()
def test_source_enters_only_where_present() -> None:
    x, t, ids = inputs()
    src = torch.randn(2, CONFIG.latent_channels, 8, 8)
    with_src = MODEL(x, t, ids, source=src, source_present=torch.tensor([True, False]))
    without = MODEL(x, t, ids)
    assert torch.equal(with_src[1], without[1])
    assert not torch.allclose(with_src[0], without[0], atol=1e-5)
