from __future__ import annotations

import dataclasses

import pytest

from napari_mupd.errors import ConditionError, ConfigError, MuPDError
from napari_mupd.model import MuPDConfig


@pytest.mark.parametrize("preset", ["tiny", "demo", "sit_b", "sit_xl"])
def test_presets_round_trip_through_json(preset: str, tmp_path) -> None:
    config = getattr(MuPDConfig, preset)()
    path = config.save(tmp_path)
    assert path.name == "config.json"
    assert MuPDConfig.load(tmp_path) == config
    assert MuPDConfig.load(path) == config


def test_tiny_knows_every_kind_of_target(config: MuPDConfig) -> None:
    kinds = {config.resolve_target(t).kind for t in config.targets}
    assert kinds == {"H&E", "IHC", "mIF"}
    mif = config.resolve_target("mIF:CD3,CD8")
    assert mif.markers == ("CD3", "CD8")
    assert config.mif_markers == ["CD3", "CD8"]


def test_targets_match_case_insensitively(config: MuPDConfig) -> None:
    assert config.resolve_target("ihc:KI67").name == "IHC:Ki67"
    assert config.resolve_target("he").name == "H&E"
    spec = config.resolve_target("MIF: cd8 ,Cd3")
    assert spec.name == "mIF:CD3,CD8"
    assert spec.markers == ("CD8", "CD3")
    assert spec.panel == ("CD3", "CD8")


def test_marker_channel_groups_do_not_overlap(config: MuPDConfig) -> None:
    rgb = config.resolve_target("H&E").channels
    mif = config.resolve_target("mIF:CD3,CD8").channels
    assert rgb == (0, 1, 2, 3)
    assert mif == tuple(range(2 * config.mif_latent_channels))
    assert config.canvas_channels == max(len(rgb), len(mif))
    demo = MuPDConfig.demo()
    assert demo.canvas_channels == 4
    cd8 = demo.resolve_target("mIF:CD8")
    assert (cd8.markers, cd8.channels) == (("CD8",), (0, 1, 2, 3))  # generated with its panel


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("IHC:ER", "known IHC markers: Ki67"),
        ("mIF:CD3,FOXP3", "'FOXP3'; known mIF markers: CD3, CD8"),
        ("Masson", "not of the form"),
        ("IHC:Ki67,ER", "exactly one marker"),
        ("mIF:CD3,cd3", "twice"),
        ("", "non-empty"),
    ],
)
def test_unknown_targets_are_condition_errors(
    config: MuPDConfig, target: str, expected: str
) -> None:
    with pytest.raises(ConditionError, match=expected):
        config.resolve_target(target)


def test_unknown_kind_lists_the_known_targets() -> None:
    config = MuPDConfig(targets=["H&E"])
    with pytest.raises(ConditionError, match=r"knows: H&E"):
        config.resolve_target("IHC:Ki67")


def test_invalid_configs_are_rejected() -> None:
    tiny = MuPDConfig.tiny()
    with pytest.raises(ConfigError, match="divisible"):
        dataclasses.replace(tiny, num_heads=3)
    with pytest.raises(ConfigError, match="mif_vae"):
        dataclasses.replace(tiny, mif_vae=None)
    with pytest.raises(ConfigError, match="twice"):
        dataclasses.replace(tiny, targets=["H&E", "h&e"])
    with pytest.raises(ConfigError, match="targets: target 'IHC'"):
        dataclasses.replace(tiny, targets=["H&E", "IHC"])
    with pytest.raises(ConfigError, match="unknown MuPDConfig field"):
        MuPDConfig.from_dict({**tiny.to_dict(), "colour": "blue"})
    with pytest.raises(ConfigError, match="invalid MuPDConfig"):
        MuPDConfig.from_dict({**tiny.to_dict(), "depth": None, "num_heads": "two"})
    assert issubclass(ConfigError, MuPDError)
