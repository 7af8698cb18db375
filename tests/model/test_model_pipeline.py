from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from napari_mupd.errors import CheckpointError, ConditionError, ConfigError
from napari_mupd.model import FlowMatchHeunScheduler, MuPDConfig, MuPDPipeline

SETTINGS = settings(
    max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
GENES = MuPDConfig.tiny().genes


def test_components_are_exposed(pipe: MuPDPipeline) -> None:
    parts = pipe.components
    assert set(parts) == {
        "transformer", "vae", "mif_vae", "text_encoder", "rna_encoder", "image_encoder",
        "stain_renderer", "scheduler",
    }  # fmt: skip
    assert parts["transformer"] is pipe.transformer
    assert pipe.device == torch.device("cpu")


@pytest.mark.parametrize(
    ("target", "channels"),
    [("H&E", ("R", "G", "B")), ("IHC:Ki67", ("R", "G", "B")), ("mIF:CD3,CD8", ("CD3", "CD8"))],
)
def test_output_shapes_per_target(pipe, make_tile, target: str, channels: tuple) -> None:
    out = pipe(
        text="tumor", rna={"CD3E": 2.0}, image=make_tile(0), target=target, num_images=2,
        num_inference_steps=2, generator=0,
    )  # fmt: skip
    assert out.images.shape == (2, 64, 64, len(channels))
    assert out.images.dtype == np.float32
    assert out.images.min() >= 0.0 and out.images.max() <= 1.0
    assert out.channels == channels
    expected = ("text", "rna", "image") if target == "H&E" else ("text", "rna", "source")
    assert out.conditions == expected


def test_virtual_staining_output_follows_the_source_size(pipe, make_tile) -> None:
    src = make_tile(1, size=96)
    out = pipe(image=src, target="IHC:Ki67", generator=0, num_inference_steps=1)
    assert out.images.shape == (1, 96, 96, 3)
    with pytest.raises(ConditionError, match="differ from the source"):
        pipe(image=src, target="IHC:Ki67", height=64, width=64)


def test_batched_conditions_and_height_width(pipe) -> None:
    out = pipe(text=["tumor", "normal"], num_images=3, height=32, width=48, num_inference_steps=1)
    assert out.images.shape == (6, 32, 48, 3)
    with pytest.raises(ConditionError, match="different batch sizes"):
        pipe(text=["tumor", "normal"], rna=pd_rows(3))


def pd_rows(n: int):
    import pandas as pd

    return pd.DataFrame(np.ones((n, len(GENES))), columns=GENES)


def test_mif_subset_is_the_panel_channel(pipe, make_tile) -> None:
    full = pipe(image=make_tile(2), target="mIF:CD3,CD8", generator=5)
    cd8 = pipe(image=make_tile(2), target="mif:cd8", generator=5)
    assert full.num_inference_steps == 1  # single-step read-out by default
    assert cd8.channels == ("CD8",)
    np.testing.assert_allclose(cd8.images[..., 0], full.images[..., 1], atol=1e-5)


def test_seed_determinism(pipe) -> None:
    a = pipe(text="tumor", generator=3, num_inference_steps=2)
    b = pipe(text="tumor", generator=torch.Generator().manual_seed(3), num_inference_steps=2)
    c = pipe(text="tumor", generator=4, num_inference_steps=2)
    assert np.array_equal(a.images, b.images)
    assert not np.allclose(a.images, c.images)
    assert a.seed == 3
    assert pipe(num_inference_steps=1).seed != pipe(num_inference_steps=1).seed


def test_save_load_gives_identical_outputs(pipe, make_tile, tmp_path) -> None:
    pipe.scheduler = FlowMatchHeunScheduler(shift=2.0)
    pipe.save_pretrained(tmp_path)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert all(n.endswith((".json", ".safetensors")) for n in names)
    assert "config.json" in names and "transformer.safetensors" in names
    loaded = MuPDPipeline.from_pretrained(tmp_path, device="cpu")
    assert isinstance(loaded.scheduler, FlowMatchHeunScheduler) and loaded.scheduler.shift == 2.0
    assert loaded.config == pipe.config
    assert loaded.model_hash == pipe.model_hash
    kwargs = {"text": "tumor", "rna": {"MKI67": 1.0}, "image": make_tile(3), "generator": 7,
              "num_inference_steps": 2}  # fmt: skip
    assert "stain_renderer.safetensors" in names
    for target in ("H&E", "IHC:Ki67", "mIF:CD3,CD8"):
        a, b = pipe(target=target, **kwargs), loaded(target=target, **kwargs)
        assert np.array_equal(a.images, b.images)


def test_from_pretrained_rejects_a_folder_without_weights(pipe, tmp_path) -> None:
    pipe.save_pretrained(tmp_path)
    (tmp_path / "rna_encoder.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"rna_encoder\.safetensors"):
        MuPDPipeline.from_pretrained(tmp_path)
    with pytest.raises(CheckpointError, match=r"no config\.json"):
        MuPDPipeline.from_pretrained(tmp_path / "nothing")


def test_from_pretrained_names_a_corrupt_file_or_config(pipe, tmp_path) -> None:
    pipe.save_pretrained(tmp_path)
    (tmp_path / "vae.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match=r"vae\.safetensors"):
        MuPDPipeline.from_pretrained(tmp_path)
    config = tmp_path / "config.json"
    config.write_text(config.read_text().replace('"name"', '"colour": "blue", "name"'))
    with pytest.raises(ConfigError, match=r"unknown MuPDConfig field.*colour"):
        MuPDPipeline.from_pretrained(tmp_path)
    config.write_text("{not json")
    with pytest.raises(ConfigError, match=r"config\.json"):
        MuPDPipeline.from_pretrained(tmp_path)


def test_model_hash_follows_the_weights(pipe) -> None:
    before = pipe.model_hash
    assert before == pipe.model_hash and len(before) == 64
    with torch.no_grad():
        pipe.rna_encoder.pos.add_(1.0)
    assert pipe.model_hash != before


def _differs(pipe, scale: float, **pair) -> tuple[bool, bool]:
    ((name, (a, b)),) = pair.items()
    scales = {name: scale}
    ra = pipe(**{name: a}, cross_attention_scales=scales, generator=1, num_inference_steps=1)
    rb = pipe(**{name: b}, cross_attention_scales=scales, generator=1, num_inference_steps=1)
    return not np.array_equal(ra.images, rb.images), ra.images


@SETTINGS
@given(st.text("abcdefgh ", min_size=1, max_size=12), st.text("abcdefgh ", min_size=1, max_size=12))
def test_text_scale_zero_removes_the_prompt(pipe, a: str, b: str) -> None:
    assume(a.strip() and b.strip())
    assume(pipe.text_encoder.tokenizer.ids(a) != pipe.text_encoder.tokenizer.ids(b))
    differs, images = _differs(pipe, 0.0, text=(a, b))
    assert not differs
    none = pipe(generator=1, num_inference_steps=1).images
    assert np.array_equal(images, none)
    assert _differs(pipe, 1.0, text=(a, b))[0]


@SETTINGS
@given(st.lists(st.floats(0.0, 5.0), min_size=len(GENES), max_size=len(GENES)), st.integers(0, 7))
def test_rna_scale_zero_removes_the_profile(pipe, values: list[float], bump: int) -> None:
    a = dict(zip(GENES, values, strict=True))
    b = {**a, GENES[bump]: a[GENES[bump]] + 1.0}
    assert not _differs(pipe, 0.0, rna=(a, b))[0]
    assert _differs(pipe, 1.0, rna=(a, b))[0]


@SETTINGS
@given(st.integers(0, 2**31), st.integers(0, 2**31))
def test_image_scale_zero_removes_the_reference(pipe, make_tile, sa: int, sb: int) -> None:
    assume(sa != sb)
    assert not _differs(pipe, 0.0, image=(make_tile(sa), make_tile(sb)))[0]
    assert _differs(pipe, 1.0, image=(make_tile(sa), make_tile(sb)))[0]


def test_guided_velocity_matches_the_formula(pipe) -> None:
    spec = pipe.config.resolve_target("H&E")
    with torch.no_grad():
        text, rna = pipe.encode_text("tumor"), pipe.encode_rna({"CD3E": 1.0})[0]
        x = torch.randn(1, pipe.config.canvas_channels, 8, 8)
        streams = {"text": text, "rna": rna}

        def v(*names: str) -> torch.Tensor:
            return pipe.predict_velocity(x, 0.7, spec, {k: streams[k] for k in names})

        vu, vt, vr, vall = v(), v("text"), v("rna"), v("text", "rna")
        per = pipe.predict_velocity(x, 0.7, spec, streams, guidance_scale={"text": 2.0, "rna": 3.0})
        joint = pipe.predict_velocity(x, 0.7, spec, streams, guidance_scale=4.0)
    assert not torch.allclose(vt, vu, atol=1e-5) and not torch.allclose(vr, vu, atol=1e-5)
    torch.testing.assert_close(per, vu + 2.0 * (vt - vu) + 3.0 * (vr - vu), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(joint, vu + 4.0 * (vall - vu), atol=1e-5, rtol=1e-5)
    assert torch.count_nonzero(per[:, 4:]) == 0  # only the target's channels move


def test_source_guidance_moves_a_virtual_stain_away_from_its_sourceless_self(
    pipe, make_tile
) -> None:
    spec = pipe.config.resolve_target("IHC:Ki67")
    with torch.no_grad():
        source = pipe.encode_source(make_tile(3))
        x = torch.randn(1, pipe.config.canvas_channels, 8, 8)
        # a checkpoint that never learnt the stain without its source: guidance leaves it
        assert not pipe.config.source_guidance
        unguided = pipe.predict_velocity(x, 0.6, spec, {}, source, guidance_scale=3.0)
        torch.testing.assert_close(unguided, pipe.predict_velocity(x, 0.6, spec, {}, source))
        with pytest.raises(ConditionError, match="cannot be guided"):
            pipe(image=make_tile(3), target="IHC:Ki67", guidance_scale={"source": 2.0})
        pipe.config.source_guidance = True
        without = pipe.predict_velocity(x, 0.6, spec, {})  # no source: the unconditional pass
        given = pipe.predict_velocity(x, 0.6, spec, {}, source)
        guided = pipe.predict_velocity(x, 0.6, spec, {}, source, guidance_scale={"source": 2.5})
        zero = pipe.predict_velocity(x, 0.6, spec, {}, source, guidance_scale=0.0)
    assert not torch.allclose(given, without, atol=1e-5)
    torch.testing.assert_close(guided, without + 2.5 * (given - without), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(zero, without, atol=1e-6, rtol=1e-6)


def test_callback_runs_per_step_and_may_replace_latents(pipe) -> None:
    seen: list[tuple[int, float]] = []

    def callback(p, step, t, kwargs):
        seen.append((step, t))
        return {"latents": torch.zeros_like(kwargs["latents"])} if step == 2 else None

    out = pipe(num_inference_steps=3, callback_on_step_end=callback, generator=0)
    assert [s for s, _ in seen] == [0, 1, 2]
    assert [round(t, 6) for _, t in seen] == [round(2 / 3, 6), round(1 / 3, 6), 0.0]
    spec = pipe.config.resolve_target("H&E")
    with torch.no_grad():
        zeros = pipe.decode_latents(torch.zeros(1, 4, 8, 8), spec).permute(0, 2, 3, 1).numpy()
    np.testing.assert_allclose(out.images, zeros, atol=1e-6)


def test_interrupt_stops_at_the_next_step(pipe) -> None:
    calls: list[int] = []

    def stop_after_two(p, step, t, kwargs):
        calls.append(step)
        if step == 1:
            p.interrupt = True

    out = pipe(num_inference_steps=5, callback_on_step_end=stop_after_two)
    assert calls == [0, 1]
    assert out.steps_done == 2 and out.interrupted
    assert out.provenance()["interrupted"] is True
    again = pipe(num_inference_steps=3)
    assert again.steps_done == 3 and not again.interrupted


def test_output_types(pipe) -> None:
    pil = pipe(output_type="pil", num_images=2, num_inference_steps=1)
    assert len(pil.images) == 2 and pil.images[0].size == (64, 64)
    pt = pipe(output_type="pt", num_inference_steps=1, target="mIF:CD3,CD8")
    assert isinstance(pt.images, torch.Tensor) and pt.images.shape == (1, 64, 64, 2)
    with pytest.raises(ConditionError, match="RGB targets"):
        pipe(output_type="pil", target="mIF:CD3,CD8")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"target": "IHC:ER"}, "unknown IHC marker 'ER'; known IHC markers: Ki67"),
        ({"target": "mIF:CD3,PD1"}, "unknown mIF marker"),
        ({"image": np.zeros((32, 32, 3), np.uint8)}, "expected 64x64 px tiles, got 32x32"),
        ({"image": np.zeros((64, 64, 3), np.uint16)}, "dtype uint16"),
        ({"image": np.zeros((40, 40, 3), np.uint8), "target": "IHC:Ki67"}, "multiples of 16"),
        ({"rna": {"CD3E": np.nan}}, "all NaN"),
        ({"rna": {"NOTAGENE": 1.0}}, "none of the 8 genes"),
        ({"text": "  "}, "empty or whitespace"),
        ({"cross_attention_scales": {"audio": 0.0}}, "unknown stream"),
        ({"guidance_scale": {"txt": 2.0}}, "unknown modality"),
        ({"height": 50}, "multiples of 16"),
        ({"num_inference_steps": 0}, "at least 1"),
        ({"text": 42}, "got int"),
    ],
)
def test_bad_inputs_raise_condition_errors(pipe, kwargs: dict, message: str) -> None:
    with pytest.raises(ConditionError, match=message):
        pipe(**kwargs)
