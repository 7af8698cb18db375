"""`MuPDConfig`: everything that defines a checkpoint, and the targets it knows."""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from napari_mupd.errors import ConditionError, ConfigError

CONFIG_NAME = "config.json"

#: Channels of the stain latent of IHC targets and of the source features of virtual
#: staining (see :mod:`napari_mupd.model.stain_renderer`).
STAIN_CHANNELS = 4

#: IHC markers whose DAB lies in the nucleus (positive nuclei are brown, the rest blue);
#: the others stain membranes or cytoplasm and leave every nucleus blue.
DEFAULT_NUCLEAR_MARKERS: tuple[str, ...] = (
    "Ki67", "MKI67", "ER", "PR", "AR", "p53", "TP53", "p63", "p16", "FOXP3", "PHH3",
    "SOX10", "TTF1", "GATA3", "CDX2", "MLH1", "MSH2", "MSH6", "PMS2", "WT1", "PAX8", "ERG",
    "INSM1", "ATRX", "BAP1", "SMARCB1", "MYOD1", "SOX2", "OLIG2", "IDH1",
)  # fmt: skip

TargetKind = Literal["H&E", "IHC", "mIF"]

#: A panel of common pathology marker genes: the default RNA feature set of the presets.
DEFAULT_GENES: tuple[str, ...] = (
    "ACTB", "GAPDH", "PTPRC", "CD3E", "CD4", "CD8A", "CD19", "MS4A1",
    "CD68", "CD163", "EPCAM", "KRT8", "KRT18", "KRT19", "VIM", "ACTA2",
    "PECAM1", "COL1A1", "MKI67", "TOP2A", "ESR1", "PGR", "ERBB2", "AR",
    "CDH1", "TP53", "MYC", "FOXP3", "GZMB", "PDCD1", "CD274", "LYZ",
)  # fmt: skip

#: Words the built-in tokenizer knows as whole words (anything else is spelled in characters).
DEFAULT_TEXT_VOCAB: tuple[str, ...] = (
    "a", "an", "the", "of", "with", "and", "in", "from", "tissue", "tumor", "tumour",
    "normal", "cancer", "carcinoma", "adenocarcinoma", "squamous", "cell", "cells",
    "stroma", "necrosis", "lymphocytes", "immune", "infiltrate", "gland", "glands",
    "high", "low", "grade", "breast", "colon", "lung", "liver", "kidney", "prostate",
    "skin", "brain", "stomach", "stain", "ihc", "mif", "nuclei", "mitosis",
    "fat", "muscle", "vessel", "mucosa", "fibrosis", "inflammation", "benign",
)  # fmt: skip


#: ``kind`` of a codec config that builds a linear patch codec (absent: an AutoencoderKL)
PATCH_PCA = "patch_pca"
#: What a patch codec may code (``space`` of its config): RGB, or optical density.
CODE_SPACES = ("rgb", "od")


def _vae(
    in_channels: int,
    latent_channels: int,
    widths: list[int],
    groups: int,
    layers: int = 1,
    scaling_factor: float = 1.0,
    mid_attention: bool = False,
) -> dict[str, Any]:
    """An AutoencoderKL config with four 2x stages (8x downsampling)."""
    out: dict[str, Any] = {
        "in_channels": in_channels,
        "out_channels": in_channels,
        "latent_channels": latent_channels,
        "down_block_types": ["DownEncoderBlock2D"] * 4,
        "up_block_types": ["UpDecoderBlock2D"] * 4,
        "block_out_channels": widths,
        "layers_per_block": layers,
        "norm_num_groups": groups,
        "scaling_factor": scaling_factor,
    }
    if not mid_attention:
        out["mid_block_add_attention"] = False
    return out


def _tiny_vae(in_channels: int, latent_channels: int) -> dict[str, Any]:
    return _vae(in_channels, latent_channels, [8, 8, 16, 16], groups=4)


def _small_vae(in_channels: int, latent_channels: int) -> dict[str, Any]:
    return _vae(in_channels, latent_channels, [16, 32, 64, 64], groups=16)


def _sd_vae(in_channels: int, latent_channels: int) -> dict[str, Any]:
    """The Stable Diffusion VAE layout (83 M parameters for RGB)."""
    return _vae(
        in_channels,
        latent_channels,
        [128, 256, 512, 512],
        groups=32,
        layers=2,
        scaling_factor=0.18215,
        mid_attention=True,
    )


@dataclass(frozen=True)
class TargetSpec:
    """A requested output resolved against a config.

    `name` is the known target it is generated with (canonical spelling), `markers`
    the channels returned (requested order; a subset of the target's panel for mIF),
    `index` the target-embedding row, `channels` the latent canvas channels it uses.
    """

    name: str
    kind: TargetKind
    index: int
    markers: tuple[str, ...]
    panel: tuple[str, ...]
    channels: tuple[int, ...]

    @property
    def uses_source(self) -> bool:
        """Virtual staining targets take `image` as the source H&E (patch embedding)."""
        return self.kind != "H&E"


def split_target(target: str) -> tuple[TargetKind, tuple[str, ...]]:
    """Parse ``"H&E"``, ``"IHC:<marker>"`` or ``"mIF:<m1>,<m2>,..."`` (case-insensitive)."""
    if not isinstance(target, str) or not target.strip():
        raise ConditionError(f"target must be a non-empty string, got {target!r}")
    head, _, tail = target.strip().partition(":")
    kinds: dict[str, TargetKind] = {"h&e": "H&E", "he": "H&E", "ihc": "IHC", "mif": "mIF"}
    kind = kinds.get(head.strip().lower())
    markers = tuple(m.strip() for m in tail.split(",")) if tail.strip() else ()
    if kind is None:
        raise ConditionError(
            f"target {target!r} is not of the form 'H&E', 'IHC:<marker>' or 'mIF:<m1>,<m2>,...'"
        )
    if kind == "H&E" and markers:
        raise ConditionError(f"target {target!r}: H&E takes no markers")
    if kind == "IHC" and len(markers) != 1:
        raise ConditionError(f"target {target!r}: IHC takes exactly one marker")
    if kind == "mIF" and not markers:
        raise ConditionError(f"target {target!r}: mIF needs at least one marker")
    if any(not m for m in markers):
        raise ConditionError(f"target {target!r} has an empty marker name")
    if len({m.lower() for m in markers}) != len(markers):
        raise ConditionError(f"target {target!r} names a marker twice")
    return kind, markers


@dataclass
class MuPDConfig:
    """Architecture, conditions and targets of one MuPD checkpoint (JSON round-trip).

    Latent canvas: the transformer sees ``canvas_channels`` latent channels. RGB targets
    (H&E, IHC) use the first ``latent_channels`` (the RGB VAE latent); every mIF marker
    of ``mif_markers`` owns a group of ``mif_latent_channels`` channels (the per-marker
    latent of the single-channel mIF VAE).
    """

    name: str = "mupd"
    targets: list[str] = field(default_factory=lambda: ["H&E"])
    #: the virtual stain front ends offer first (None: the first staining target)
    default_target: str | None = None
    resolution: int = 256
    mpp: float = 0.5
    #: pixel size of the virtual-staining targets (IHC, mIF) when it differs from `mpp`
    stain_mpp: float | None = None
    # transformer
    patch_size: int = 2
    hidden_size: int = 384
    depth: int = 12
    num_heads: int = 6
    mlp_ratio: float = 4.0
    # latents and VAEs
    latent_channels: int = 4
    mif_latent_channels: int = 4
    vae: dict[str, Any] = field(default_factory=lambda: _small_vae(3, 4))
    mif_vae: dict[str, Any] | None = None
    # virtual IHC: the stain renderer and the normalisation of stain latents and sources
    stain_renderer: dict[str, Any] = field(default_factory=lambda: {"width": 32})
    stain_stats: dict[str, list[float]] = field(default_factory=lambda: identity_stats())
    nuclear_markers: list[str] = field(default_factory=lambda: list(DEFAULT_NUCLEAR_MARKERS))
    # text stream
    text_vocab: list[str] = field(default_factory=lambda: list(DEFAULT_TEXT_VOCAB))
    text_max_tokens: int = 64
    text_dim: int = 256
    text_layers: int = 2
    text_heads: int = 4
    hf_text_encoder: str | None = None
    # RNA stream
    genes: list[str] = field(default_factory=lambda: list(DEFAULT_GENES))
    gene_sets: dict[str, list[str]] = field(default_factory=dict)
    rna_tokens: int = 8
    rna_hidden: int = 256
    rna_dim: int = 256
    # reference-image stream
    image_patch: int = 4
    image_dim: int = 256
    # sampling and training
    default_steps: dict[str, int] = field(default_factory=lambda: {"H&E": 25, "IHC": 25, "mIF": 1})
    condition_dropout: float = 0.1
    # trained with a virtual stain's source dropped too (at condition_dropout), so that
    # guidance can steer the source (new trainings; checkpoints from before lack it)
    source_guidance: bool = False

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_heads:
            raise ConfigError("hidden_size must be divisible by num_heads")
        if self.text_dim % self.text_heads:
            raise ConfigError("text_dim must be divisible by text_heads")
        if self.resolution % (8 * math.lcm(self.patch_size, self.image_patch)):
            raise ConfigError("resolution must be a multiple of 8 * patch_size and 8 * image_patch")
        if not self.targets:
            raise ConfigError("a config needs at least one target")
        seen: set[str] = set()
        for t in self.targets:
            try:
                kind, markers = split_target(t)
            except ConditionError as exc:
                raise ConfigError(f"targets: {exc}") from exc
            key = canonical_key(kind, markers)
            if key in seen:
                raise ConfigError(f"target {t!r} is listed twice")
            seen.add(key)
        if self.default_target is not None:
            try:
                self.resolve_target(self.default_target)
            except ConditionError as exc:
                raise ConfigError(f"default_target: {exc}") from exc
        if self.vae.get("latent_channels", self.latent_channels) != self.latent_channels:
            raise ConfigError(
                f"the vae has {self.vae['latent_channels']} latent channels, "
                f"latent_channels says {self.latent_channels}"
            )
        if self.vae.get("kind") == PATCH_PCA and self.vae.get("patch", 8) != 8:
            raise ConfigError("a patch_pca vae codes 8 x 8 blocks (patch: 8), as the model expects")
        if self.vae.get("kind") == PATCH_PCA and self.vae.get("space", "rgb") not in CODE_SPACES:
            raise ConfigError(
                f"a patch_pca vae codes 'rgb' or 'od' blocks, not {self.vae['space']!r}"
            )
        if self.mif_markers and self.mif_vae is None:
            raise ConfigError("mIF targets need a mif_vae config")
        if self.mif_vae is not None and (
            self.mif_vae.get("in_channels", 3) != 1 or "kind" in self.mif_vae
        ):
            raise ConfigError("mif_vae must be a single-channel AutoencoderKL (in_channels=1)")
        for key in STAT_KEYS:
            values = self.stain_stats.get(key)
            if values is None or len(values) != STAIN_CHANNELS:
                raise ConfigError(f"stain_stats[{key!r}] must hold {STAIN_CHANNELS} numbers")
        if any(v <= 0 for k in ("latent_std", "source_std") for v in self.stain_stats[k]):
            raise ConfigError("stain_stats: standard deviations must be positive")
        if self.stain_mpp is not None and self.stain_mpp <= 0:
            raise ConfigError(f"stain_mpp must be positive, got {self.stain_mpp}")

    # ----- derived -----
    @property
    def latent_size(self) -> int:
        """Side of the latent grid of a tile at `resolution` (8x VAE downsampling)."""
        return self.resolution // 8

    @property
    def source_gain(self) -> float:
        """Nuclear density of the training IHC (haematoxylin + DAB) per unit of the training
        H&E's haematoxylin, from `stain_stats`; 1 where they are not measured."""
        latent, source = self.stain_stats["latent_mean"], self.stain_stats["source_mean"]
        if source[0] <= 0 or latent[0] + latent[1] <= 0:
            return 1.0
        return (latent[0] + latent[1]) / source[0]

    @property
    def mif_markers(self) -> list[str]:
        """All mIF markers, each owning one latent channel group (first spelling wins)."""
        out: dict[str, str] = {}
        for t in self.targets:
            kind, markers = split_target(t)
            if kind == "mIF":
                for m in markers:
                    out.setdefault(m.lower(), m)
        return list(out.values())

    @property
    def canvas_channels(self) -> int:
        """Latent channels of the transformer's input and output."""
        ihc = STAIN_CHANNELS if any(split_target(t)[0] == "IHC" for t in self.targets) else 0
        return max(self.latent_channels, ihc, self.mif_latent_channels * len(self.mif_markers))

    @property
    def ihc_markers(self) -> list[str]:
        """The markers of the IHC targets."""
        return [m for t in self.targets for k, ms in [split_target(t)] if k == "IHC" for m in ms]

    def is_nuclear(self, marker: str) -> bool:
        """Whether an IHC marker stains nuclei (case-insensitive, see `nuclear_markers`)."""
        return marker.lower() in {m.lower() for m in self.nuclear_markers}

    def mpp_for(self, spec: TargetSpec) -> float:
        """The pixel size (um/px) a target was trained at."""
        if spec.uses_source and self.stain_mpp is not None:
            return self.stain_mpp
        return self.mpp

    @property
    def rna_features(self) -> int:
        """Length of the RNA feature vector: gene-set scores if sets are named, else genes."""
        return len(self.gene_sets) if self.gene_sets else len(self.genes)

    @property
    def image_tokens(self) -> int:
        """Number of reference-image tokens (latent patches of a `resolution` tile)."""
        return (self.latent_size // self.image_patch) ** 2

    # ----- targets -----
    def resolve_target(self, target: str) -> TargetSpec:
        """Match `target` against `targets` (case-insensitive); ConditionError if unknown.

        An mIF request may name any subset of a known mIF panel, in any order: it is
        generated with that panel's target and only the requested markers are returned.
        """
        kind, markers = split_target(target)
        known = [(t, *split_target(t)) for t in self.targets]
        for index, (name, k, panel) in enumerate(known):
            if k != kind:
                continue
            lower = [p.lower() for p in panel]
            if kind != "mIF" and [m.lower() for m in markers] != lower:
                continue
            if kind == "mIF" and not all(m.lower() in lower for m in markers):
                continue
            chosen = tuple(panel[lower.index(m.lower())] for m in markers)
            return TargetSpec(name, kind, index, chosen, panel, self._channels(kind, panel))
        same = [t for t, k, _ in known if k == kind]
        if kind == "H&E" or not same:
            raise ConditionError(
                f"unknown target {target!r}; this checkpoint knows: {', '.join(self.targets)}"
            )
        if kind == "IHC":
            names = sorted({m for _, k, p in known if k == "IHC" for m in p})
            raise ConditionError(
                f"unknown IHC marker {markers[0]!r}; known IHC markers: {', '.join(names)} "
                f"(targets: {', '.join(self.targets)})"
            )
        lower_all = {m.lower() for m in self.mif_markers}
        unknown = [m for m in markers if m.lower() not in lower_all]
        if unknown:
            raise ConditionError(
                f"unknown mIF marker(s) {', '.join(map(repr, unknown))}; known mIF markers: "
                f"{', '.join(self.mif_markers)} (targets: {', '.join(self.targets)})"
            )
        raise ConditionError(
            f"no single mIF target has all of {', '.join(markers)}; known mIF targets: "
            f"{', '.join(same)}"
        )

    def _channels(self, kind: str, panel: tuple[str, ...]) -> tuple[int, ...]:
        if kind == "IHC":
            return tuple(range(STAIN_CHANNELS))
        if kind == "H&E":
            return tuple(range(self.latent_channels))
        slots = [m.lower() for m in self.mif_markers]
        c = self.mif_latent_channels
        return tuple(
            ch
            for m in panel
            for ch in range(slots.index(m.lower()) * c, (slots.index(m.lower()) + 1) * c)
        )

    # ----- serialisation -----
    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict of every field."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MuPDConfig:
        """Inverse of `to_dict`; unknown keys are an error (a newer checkpoint)."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ConfigError(f"unknown MuPDConfig field(s): {', '.join(unknown)}")
        try:
            return cls(**data)
        except TypeError as exc:  # a value of the wrong type, e.g. a string for a number
            raise ConfigError(f"invalid MuPDConfig: {exc}") from exc

    def save(self, directory: str | os.PathLike[str]) -> Path:
        """Write ``config.json`` into `directory`; returns its path."""
        path = Path(directory) / CONFIG_NAME
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")
        return path

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> MuPDConfig:
        """Read a config from ``config.json`` or from the folder that holds it."""
        p = Path(path)
        if p.is_dir():
            p = p / CONFIG_NAME
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:  # missing, unreadable, not JSON
            raise ConfigError(f"{p}: cannot read the model config: {exc}") from exc
        if not isinstance(data, dict):
            raise ConfigError(f"{p}: expected a JSON object, got {type(data).__name__}")
        try:
            return cls.from_dict(data)
        except ConfigError as exc:
            raise ConfigError(f"{p}: {exc}") from exc

    # ----- presets -----
    @classmethod
    def tiny(cls) -> MuPDConfig:
        """Every kind of target and stream, random weights, forward in ~1 ms on CPU (tests)."""
        return cls(
            name="mupd-tiny",
            targets=["H&E", "IHC:Ki67", "mIF:CD3,CD8"],
            resolution=64,
            patch_size=2,
            hidden_size=32,
            depth=2,
            num_heads=2,
            mif_latent_channels=2,
            vae=_tiny_vae(3, 4),
            mif_vae=_tiny_vae(1, 2),
            text_vocab=["tumor", "normal", "stroma", "lymphocytes", "breast", "colon"],
            text_max_tokens=16,
            text_dim=16,
            text_layers=1,
            text_heads=2,
            genes=["CD3E", "CD8A", "MKI67", "EPCAM", "KRT8", "VIM", "PTPRC", "ACTB"],
            rna_tokens=4,
            rna_hidden=32,
            rna_dim=16,
            image_patch=2,
            image_dim=16,
            default_steps={"H&E": 4, "IHC": 4, "mIF": 1},
        )

    @classmethod
    def demo(cls) -> MuPDConfig:
        """256 px tiles, latent 32x32x4, ~5 M parameters: trainable on a CPU in about an hour."""
        return cls(
            name="mupd-demo",
            targets=["H&E", "IHC:Ki67", "IHC:CD31", "mIF:DAPI,CD3,CD8,PanCK"],
            resolution=256,
            patch_size=2,
            hidden_size=192,
            depth=6,
            num_heads=3,
            mif_latent_channels=1,
            vae=_small_vae(3, 4),
            mif_vae=_small_vae(1, 1),
            text_max_tokens=32,
            text_dim=128,
            text_layers=2,
            text_heads=4,
            rna_tokens=8,
            rna_hidden=256,
            rna_dim=128,
            image_patch=4,
            image_dim=128,
        )

    @classmethod
    def sit_b(cls) -> MuPDConfig:
        """SiT-B/2 backbone (768 wide, 12 blocks, 12 heads) with the three DCA streams."""
        return cls._sit("mupd-sit-b", hidden_size=768, depth=12, num_heads=12)

    @classmethod
    def sit_xl(cls) -> MuPDConfig:
        """SiT-XL/2 backbone (1152 wide, 28 blocks, 16 heads): the released model's size."""
        return cls._sit("mupd-sit-xl", hidden_size=1152, depth=28, num_heads=16)

    @classmethod
    def _sit(cls, name: str, *, hidden_size: int, depth: int, num_heads: int) -> MuPDConfig:
        orion = "DAPI,CD31,CD45,CD68,CD4,FOXP3,CD8a,CD45RO,CD20,PD-L1,CD3e,CD163,E-cadherin,PD-1,Ki67,PanCK"  # noqa: E501
        return cls(
            name=name,
            targets=["H&E", "IHC:ER", "IHC:PR", "IHC:HER2", "IHC:Ki67", f"mIF:{orion}"],
            resolution=256,
            patch_size=2,
            mif_latent_channels=1,
            vae=_sd_vae(3, 4),
            mif_vae=_sd_vae(1, 1),
            text_max_tokens=77,
            text_dim=768,
            text_layers=12,
            text_heads=12,
            rna_tokens=16,
            rna_hidden=1024,
            rna_dim=768,
            image_patch=2,
            image_dim=1024,
            hidden_size=hidden_size,
            depth=depth,
            num_heads=num_heads,
        )


#: The keys of `MuPDConfig.stain_stats`: per-channel mean and std of the stain latents of
#: IHC targets and of the source features, measured on the training data.
STAT_KEYS = ("latent_mean", "latent_std", "source_mean", "source_std")


def identity_stats() -> dict[str, list[float]]:
    """`MuPDConfig.stain_stats` that leave latents and sources as they are."""
    return {key: [0.0 if key.endswith("mean") else 1.0] * STAIN_CHANNELS for key in STAT_KEYS}


def canonical_key(kind: str, markers: tuple[str, ...]) -> str:
    """Case-insensitive identity of a target, to find duplicates in `targets`."""
    return f"{kind}:{','.join(m.lower() for m in markers)}"
