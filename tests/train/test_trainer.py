"""The training loop on tiny configs and real data: the loss falls, resume is exact."""

from __future__ import annotations

import json

import anndata
import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from safetensors.torch import load_file

from helpers import BRAIN, DATA, brain_spots, serial_sections
from napari_mupd.errors import ConfigError
from napari_mupd.model import MuPDConfig, MuPDPipeline
from napari_mupd.train.config import TrainConfig, model_config
from napari_mupd.train.trainer import Trainer


def config(tmp_path, steps: int = 4, **overrides) -> TrainConfig:
    return TrainConfig.from_dict(raw_config(tmp_path, steps, **overrides), base_dir=tmp_path)


def raw_config(tmp_path, steps: int = 4, **overrides) -> dict:
    """The tiny training config on real data, as the dict a YAML file would hold."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    genes = list(anndata.read_h5ad(BRAIN / "test_data.h5ad").var_names[:8])
    tiles = DATA / "tiles" / "labeled" / "TCGA-3X-AAVA-01Z-00-DX1"
    pd.DataFrame(
        {
            "path": [str(p) for p in sorted(tiles.glob("*.jpg"))],
            "organ": "bile duct",
            "diagnosis": "cholangiocarcinoma",
        }
    ).to_csv(tmp_path / "captions.csv", index=False)
    raw = {
        "out_dir": str(tmp_path / "run"),
        "model": {"preset": "tiny", "genes": genes},
        "steps": steps,
        "batch_size": 2,
        "lr": 1e-3,
        "warmup_steps": 0,
        "checkpoint_every": 2,
        "log_every": 1,
        "seed": 3,
        "tasks": [
            {
                "name": "ki67",
                "kind": "stain",
                "data": [serial_sections()],
            },
            {
                "name": "caption",
                "kind": "text",
                "data": [{"captioned_tiles": {"csv": str(tmp_path / "captions.csv")}}],
            },
            {
                "name": "spots",
                "kind": "rna",
                "data": [brain_spots()],
            },
            {
                "name": "reference",
                "kind": "image",
                "data": [{"captioned_tiles": {"csv": str(tmp_path / "captions.csv")}}],
            },
        ],
    }
    raw.update(overrides)
    return raw


def test_training_lowers_the_loss_on_a_fixed_batch(tmp_path):
    trainer = Trainer(config(tmp_path))
    batch = trainer._batch(trainer.tasks[0], np.random.default_rng(0))

    def loss() -> float:
        with torch.no_grad():
            return float(trainer.module(batch, torch.Generator().manual_seed(0)))

    before = loss()
    for _ in range(15):
        trainer.train_step()
    assert loss() < before


def test_every_task_runs_and_the_run_exports_a_loadable_pipeline(tmp_path):
    trainer = Trainer(config(tmp_path, steps=12))
    out = trainer.train()
    log = pd.read_csv(tmp_path / "run" / "log.csv")
    assert set(log["task"]) == {"ki67", "caption", "spots", "reference"}
    assert np.isfinite(log["loss"]).all()
    pipe = MuPDPipeline.from_pretrained(out)
    image = pipe(text="bile duct", num_inference_steps=2, generator=0).images
    assert image.shape == (1, 64, 64, 3)


def test_resume_continues_exactly(tmp_path):
    straight = Trainer(config(tmp_path / "a"))
    straight.train()
    first = Trainer(config(tmp_path / "b"))
    first.train(steps=2)  # stops after its step-2 checkpoint, as if killed
    second = Trainer(config(tmp_path / "b"))
    assert second.resume() and second.step == 2
    second.train()
    a = load_file(straight.checkpoints()[-1] / "trainable.safetensors")
    b = load_file(second.checkpoints()[-1] / "trainable.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)


def test_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="unknown training option"):
        TrainConfig.from_dict({"out_dir": "x", "tasks": [], "learning_rate": 1})
    with pytest.raises(ConfigError, match="at least one task"):
        TrainConfig.from_dict({"out_dir": "x", "tasks": []})
    with pytest.raises(ConfigError, match="unknown kind"):
        TrainConfig.from_dict(
            {"out_dir": "x", "tasks": [{"name": "t", "kind": "dance", "data": []}]}
        )


def test_the_reference_of_an_image_task_is_its_target_turned(tmp_path):
    """Each reference is the sample's own tile under some rotation / flip (so the model
    learns to follow it), not another tile of the dataset."""
    trainer = Trainer(config(tmp_path))
    (task,) = [t for t in trainer.tasks if t.config.kind == "image"]
    batch = trainer._batch(task, np.random.default_rng(1))
    c = trainer.pipe.config.latent_channels
    assert batch.reference is not None and task.latents is not None
    for target, reference in zip(batch.latents[:, :c], batch.reference, strict=True):
        turns = [torch.rot90(target, k, dims=(-2, -1)) for k in range(4)]
        turns += [t.flip(-1) for t in turns]
        assert any(torch.allclose(t, reference) for t in turns)
    assert not torch.allclose(batch.reference[0], batch.reference[1])


def test_train_vae_writes_a_loadable_vae(tmp_path):
    from napari_mupd.train.trainer import build_pipeline
    from napari_mupd.train.vae import train_vae

    cfg = config(tmp_path, vae_training={"steps": 3, "batch_size": 2})
    folder = train_vae(cfg)
    assert (folder / "vae.safetensors").exists()
    scaling = json.loads((folder / "config.json").read_text())["scaling_factor"]
    assert scaling > 0 and scaling != 1.0
    cfg.vae = str(folder)
    pipe = build_pipeline(cfg)
    assert pipe.vae.config.scaling_factor == pytest.approx(scaling)
    assert pipe.config.vae["scaling_factor"] == pytest.approx(scaling)


def test_train_vae_fits_a_patch_codec_the_trainer_loads(tmp_path):
    """A ``kind: patch_pca`` codec is fitted in closed form on the config's training tiles;
    the transformer trains on its latents (16 channels beside the 4 stain channels) and
    the checkpoint saves and loads it."""
    from napari_mupd.model.vae import decode, encode
    from napari_mupd.train.trainer import build_pipeline, load_vae
    from napari_mupd.train.vae import rgb_tiles, train_vae

    codec = {"kind": "patch_pca", "in_channels": 3, "latent_channels": 16, "patch": 8}
    raw = raw_config(tmp_path, steps=2)
    raw["model"].update(latent_channels=16, vae=codec)
    cfg = TrainConfig.from_dict(raw, base_dir=tmp_path)
    folder = train_vae(cfg)
    cfg.vae = str(folder)
    trainer = Trainer(cfg)
    pipe = trainer.pipe
    assert pipe.config.canvas_channels == 16
    tiles = [d[i].he for d in rgb_tiles(cfg, 64) for i in range(len(d))]
    x = torch.from_numpy(np.stack(tiles)).permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():
        z = encode(pipe.vae, x)
        error = float((decode(pipe.vae, z) - x).abs().mean())
        blocks = torch.nn.functional.interpolate(
            torch.nn.functional.avg_pool2d(x, 8), scale_factor=8
        )
    assert z.shape[1] == 16 and abs(float(z.std()) - 1) < 0.1
    assert error < 0.8 * float((blocks - x).abs().mean())  # more than each block's colour
    trainer.train()
    saved = MuPDPipeline.from_pretrained(cfg.path(cfg.out_dir) / "final")
    assert torch.equal(saved.vae.basis, pipe.vae.basis)
    out = saved(text="cholangiocarcinoma", target="H&E", num_inference_steps=2, generator=0)
    assert out.images.shape[-3:] == (64, 64, 3)
    other = build_pipeline(config(tmp_path / "kl"))
    with pytest.raises(ConfigError, match="patch_pca"):
        load_vae(other, folder)
    raw["model"]["vae"] = {**codec, "space": "od"}
    od = build_pipeline(TrainConfig.from_dict(raw, base_dir=tmp_path))
    with pytest.raises(ConfigError, match="codes rgb blocks"):
        load_vae(od, folder)  # an RGB fit is no OD codec


def test_train_vae_decoder_only_keeps_the_latents(tmp_path, capsys):
    """``mupd train-vae --init --decoder-only`` trains the decoder alone: the encoder, hence
    every latent a transformer was trained on, and the scaling factor stay as they were."""
    from napari_mupd.cli import main
    from napari_mupd.train.vae import train_vae

    first = train_vae(config(tmp_path / "a", vae_training={"steps": 2, "batch_size": 2}))
    path = tmp_path / "b" / "config.yaml"
    raw = raw_config(tmp_path / "b", vae_training={"batch_size": 2})
    path.write_text(yaml.safe_dump(raw))
    second = tmp_path / "decoder"
    args = ["--init", str(first), "--decoder-only", "--steps", "3", "--out", str(second)]
    assert main(["train-vae", str(path), *args]) == 0
    assert str(second) in capsys.readouterr().out
    before = load_file(first / "vae.safetensors")
    after = load_file(second / "vae.safetensors")
    for name, weight in before.items():
        same = torch.equal(weight, after[name])
        assert same == (not name.startswith(("decoder.", "post_quant_conv."))), name
    config_of = [json.loads((f / "config.json").read_text()) for f in (first, second)]
    assert config_of[0]["scaling_factor"] == config_of[1]["scaling_factor"]
    with pytest.raises(ConfigError, match="needs init"):
        train_vae(config(tmp_path / "c", vae_training={"steps": 1, "decoder_only": True}))


def test_train_renderer_learns_to_draw_real_ihc_back(tmp_path):
    """Self-supervised on the real Ki67 section: the loss falls, the weights load into a
    pipeline, and the trainer sets the stain statistics from the data."""
    from napari_mupd.train.renderer import ihc_tiles, train_renderer
    from napari_mupd.train.trainer import build_pipeline

    cfg = config(tmp_path, renderer_training={"steps": 60, "batch_size": 8, "crop": 32})
    assert len(ihc_tiles(cfg, 64)) > 10
    folder = train_renderer(cfg)
    losses = pd.read_csv(folder / "log.csv")["loss"].to_numpy()
    assert losses[-3:].mean() < 0.6 * losses[:3].mean()
    cfg.renderer = str(folder)
    pipe = build_pipeline(cfg)
    weights = load_file(folder / "stain_renderer.safetensors")
    assert pipe.stain_renderer is not None
    for name, value in pipe.stain_renderer.state_dict().items():
        assert torch.equal(value, weights[name])
    trainer = Trainer(cfg)
    stats = trainer.pipe.config.stain_stats
    assert stats["latent_mean"][0] > 0.05 and stats["source_mean"][0] > 0.05  # haematoxylin
    assert all(s > 0 for s in stats["latent_std"])


def test_train_renderer_needs_ihc_tasks(tmp_path):
    from napari_mupd.train.renderer import train_renderer

    cfg = config(tmp_path)
    cfg.tasks = [t for t in cfg.tasks if t.kind != "stain"]
    with pytest.raises(ConfigError, match="IHC targets"):
        train_renderer(cfg)


def test_fine_tuning_adds_a_new_ihc_marker(tmp_path):
    """`init` + `new_targets`: the checkpoint's targets keep their embeddings, the new
    marker starts from the mean of the IHC ones and trains on real kidney pairs."""
    base = MuPDPipeline.from_config(MuPDConfig.tiny(), device="cpu")
    base.save_pretrained(tmp_path / "base")
    kidney = DATA / "serial_sections" / "rat_kidney"
    pairs = {
        "serial_sections": {
            "fixed_image": str(kidney / "Rat-Kidney_HE.jpg"),
            "moving_image": str(kidney / "Rat-Kidney_PanCytokeratin.jpg"),
            "fixed_landmarks": str(kidney / "Rat-Kidney_HE.csv"),
            "moving_landmarks": str(kidney / "Rat-Kidney_PanCytokeratin.csv"),
            "target": "IHC:PanCK",
            "stride": 128,
        }
    }
    cfg = TrainConfig.from_dict(
        {
            "out_dir": str(tmp_path / "run"),
            "init": str(tmp_path / "base"),
            "new_targets": ["IHC:PanCK", "IHC:ki67"],  # Ki67 is known: not added twice
            "steps": 3,
            "batch_size": 2,
            "checkpoint_every": 3,
            "tasks": [{"name": "panck", "kind": "stain", "data": [pairs]}],
        },
        base_dir=tmp_path,
    )
    trainer = Trainer(cfg)
    config = trainer.pipe.config
    assert config.targets == [*MuPDConfig.tiny().targets, "IHC:PanCK"]
    embed = trainer.pipe.transformer.target_embed.weight
    old = base.transformer.target_embed.weight
    assert torch.equal(embed[: len(old)], old)
    assert torch.allclose(embed[-1], old[config.resolve_target("IHC:Ki67").index])
    folder = trainer.train()
    tuned = MuPDPipeline.from_pretrained(folder, device="cpu")
    tile = np.full((64, 64, 3), 200, np.uint8)
    assert tuned(image=tile, target="IHC:panck", num_inference_steps=1).images.shape == (
        1, 64, 64, 3
    )  # fmt: skip
    bad = {**cfg.__dict__, "new_targets": ["mIF:CD3"]}
    with pytest.raises(ConfigError, match="only IHC"):
        Trainer(TrainConfig(**bad))


def test_new_models_learn_source_guidance_and_checkpoints_keep_their_own(tmp_path):
    """A fresh training drops a stain's source (so guidance can steer it) unless the config
    says otherwise; fine-tuning keeps the checkpoint's choice unless asked."""
    assert model_config(config(tmp_path / "a")).source_guidance
    off = {"preset": "tiny", "source_guidance": False}
    assert not model_config(config(tmp_path / "b", model=off)).source_guidance
    MuPDPipeline.from_config(MuPDConfig.tiny(), device="cpu").save_pretrained(tmp_path / "old")
    tuned = config(tmp_path / "c", init=str(tmp_path / "old"))
    assert not model_config(tuned).source_guidance  # saved before source dropout
    asked = config(tmp_path / "d", init=str(tmp_path / "old"), model={"source_guidance": True})
    assert model_config(asked).source_guidance
    assert Trainer(asked).pipe.config.source_guidance  # what the run trains and saves
