"""configs/demo/train.yaml runs from a fresh clone: every file it names is in the repository."""

from __future__ import annotations

from helpers import ROOT
from napari_mupd.train.config import TrainConfig
from napari_mupd.train.datasets import CaptionedTiles

DEMO = ROOT / "configs" / "demo" / "train.yaml"
PATH_KEYS = {"csv", "slide", "h5ad", "image", "folder", "fixed_image", "moving_image",
             "fixed_landmarks", "moving_landmarks"}  # fmt: skip


def test_every_file_of_the_demo_config_exists():
    config = TrainConfig.from_yaml(DEMO)
    named = [
        config.path(value)
        for task in config.tasks
        for spec in task.data
        for args in spec.values()
        for key, value in args.items()
        if key in PATH_KEYS
    ]
    assert len(named) > 20
    missing = [str(p) for p in named if not p.exists()]
    assert not missing, f"the demo config names files that are not in the repository: {missing}"


def test_the_demo_captions_read():
    tiles = CaptionedTiles(DEMO.parent / "captions.csv", 32)  # checks every path exists
    assert len(tiles) == 11 and tiles[0].image.shape == (32, 32, 3)
