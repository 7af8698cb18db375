"""`MuPDPipeline`: encoders -> SiT with DCA -> decoders, in the diffusers style.

What `image=` means depends on the target: for ``"H&E"`` it is a reference tile that
reaches the network through the image DCA stream (image -> image, style); for IHC and
mIF targets it is the source H&E of virtual staining, whose stain features (8 x 8 block
statistics of its haematoxylin, eosin and darkness) are concatenated to the noisy latent at
the patch embedding (output size = source size).

Decoders: H&E through the VAE; IHC through the structure-conditioned
:class:`~napari_mupd.model.stain_renderer.StainRenderer`, which draws the predicted stain
latent on the source's own nuclei (optionally from ``detail``, the same field at a finer
pixel size); mIF markers through the single-channel mIF VAE.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from napari_mupd.errors import CheckpointError, ConditionError, ConfigError
from napari_mupd.imaging.pixels import to_uint8
from napari_mupd.model.attention import STREAMS, StreamInput
from napari_mupd.model.config import MuPDConfig, TargetSpec
from napari_mupd.model.encoders.image import ReferenceImageEncoder, image_to_tensor
from napari_mupd.model.encoders.rna import Normalization, RNAEncoder, RNAReport, expression_features
from napari_mupd.model.encoders.text import (
    HFTextEncoder,
    PromptWords,
    TextEncoder,
    check_prompts,
    unique_words,
)
from napari_mupd.model.guidance import GuidanceScale, combine_guidance, guidance_passes
from napari_mupd.model.schedulers import (
    FlowMatchEulerScheduler,
    FlowMatchScheduler,
    VelocityFn,
    scheduler_from_config,
)
from napari_mupd.model.stain_renderer import (
    StainRenderer,
    anchor_to_source,
    compose_stains,
    nuclear_readout,
    pooled_stains,
    source_structure,
    stain_densities,
)
from napari_mupd.model.transformer import MuPDTransformer
from napari_mupd.model.vae import (
    PatchCodec,
    build_autoencoder,
    build_vae,
    decode,
    decode_markers,
    encode,
    encode_markers,
)

if TYPE_CHECKING:
    from diffusers.models.autoencoders.autoencoder_kl import AutoencoderKL
    from PIL import Image

SCHEDULER_CONFIG = "scheduler_config.json"
HF_TEXT_DIR = "text_encoder"
OutputType = Literal["np", "pil", "pt"]
#: How virtual IHC colours nuclei: "cells" decides each nucleus (brown or blue, as an IHC
#: shows them), "mean" leaves the renderer's mean-field mixture (the expected stain).
NucleiMode = Literal["cells", "mean"]
#: What `MuPDPipeline._build` makes: transformer, VAE, mIF VAE, text, RNA, image encoders
#: and the stain renderer (None without IHC targets).
Components = tuple[
    MuPDTransformer,
    "AutoencoderKL | PatchCodec",
    "AutoencoderKL | None",
    TextEncoder | HFTextEncoder,
    RNAEncoder,
    ReferenceImageEncoder,
    StainRenderer | None,
]
#: Component names, in the order of `Components` (each is saved as ``<name>.safetensors``).
COMPONENT_NAMES = (
    "transformer",
    "vae",
    "mif_vae",
    "text_encoder",
    "rna_encoder",
    "image_encoder",
    "stain_renderer",
)
StepCallback = Callable[["MuPDPipeline", int, float, dict[str, Any]], "dict[str, Any] | None"]


def auto_device() -> torch.device:
    """CUDA if available, else Apple MPS, else CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


@dataclass
class MuPDPipelineOutput:
    """Generated images and their provenance.

    images: "np" -> float32 array (N, H, W, C) in [0, 1]; "pt" -> the same as a CPU
    tensor; "pil" -> a list of RGB images (RGB targets only). C is 3 for H&E/IHC and
    the number of requested markers for mIF (in `channels` order).
    """

    images: np.ndarray | Tensor | list[Image.Image]
    target: str
    channels: tuple[str, ...]
    seed: int
    num_inference_steps: int
    steps_done: int
    interrupted: bool
    guidance_scale: float | dict[str, float]
    cross_attention_scales: dict[str, float]
    scheduler: dict[str, Any]
    model_name: str
    model_hash: str
    rna_report: RNAReport | None = None
    conditions: tuple[str, ...] = field(default=())

    def provenance(self) -> dict[str, Any]:
        """A JSON-serialisable record of how the images were made."""
        return {
            "model": self.model_name,
            "model_hash": self.model_hash,
            "target": self.target,
            "channels": list(self.channels),
            "conditions": list(self.conditions),
            "seed": self.seed,
            "num_inference_steps": self.num_inference_steps,
            "steps_done": self.steps_done,
            "interrupted": self.interrupted,
            "guidance_scale": self.guidance_scale,
            "cross_attention_scales": self.cross_attention_scales,
            "scheduler": self.scheduler,
            "rna": None if self.rna_report is None else self.rna_report.to_dict(),
        }


@dataclass
class EncodedConditions:
    """The condition streams and source latents of a batch, repeated per output image."""

    streams: dict[str, StreamInput]
    source: Tensor | None
    n: int  # images to generate: B inputs x num_images
    report: RNAReport | None = None
    structure: Tensor | None = None  # (n, 3, H, W) RGB the IHC renderer draws on

    @property
    def names(self) -> tuple[str, ...]:
        """The conditions given, as the output's provenance lists them."""
        return tuple(self.streams) + (("source",) if self.source is not None else ())


def _resolve_generator(generator: torch.Generator | int | None) -> tuple[torch.Generator, int]:
    if isinstance(generator, torch.Generator):
        return generator, int(generator.initial_seed())
    seed = secrets.randbits(63) if generator is None else int(generator)
    return torch.Generator().manual_seed(seed), seed


def _tensor_bytes(t: Tensor) -> bytes:
    return t.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


class MuPDPipeline:
    """Text / RNA / reference image / source H&E -> H&E, IHC or mIF tiles.

    Build with `from_config` (random weights) or `from_pretrained` (a local folder
    written by `save_pretrained`). Swap samplers by assigning `scheduler`.
    """

    def __init__(
        self,
        config: MuPDConfig,
        transformer: MuPDTransformer,
        vae: AutoencoderKL | PatchCodec,
        mif_vae: AutoencoderKL | None,
        text_encoder: TextEncoder | HFTextEncoder,
        rna_encoder: RNAEncoder,
        image_encoder: ReferenceImageEncoder,
        stain_renderer: StainRenderer | None = None,
        scheduler: FlowMatchScheduler | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        self.config = config
        self.transformer = transformer
        self.vae = vae
        self.mif_vae = mif_vae
        self.text_encoder = text_encoder
        self.rna_encoder = rna_encoder
        self.image_encoder = image_encoder
        self.stain_renderer = stain_renderer
        self.scheduler = scheduler or FlowMatchEulerScheduler()
        self._interrupt = False
        self._hash: tuple[tuple[int, ...], str] | None = None
        self.to(device or auto_device())
        for m in self._modules().values():
            m.eval()

    # ----- construction and persistence -----
    @classmethod
    def from_config(
        cls, config: MuPDConfig, device: torch.device | str | None = None, seed: int | None = 0
    ) -> MuPDPipeline:
        """Every component built from `config` with random weights (seeded unless None)."""
        with torch.random.fork_rng(devices=[]):
            if seed is not None:
                torch.manual_seed(seed)
            parts = cls._build(config, None)
        return cls(config, *parts, device=device)

    @staticmethod
    def _build(config: MuPDConfig, root: Path | None) -> Components:
        if config.hf_text_encoder:
            path = Path(config.hf_text_encoder)
            text: TextEncoder | HFTextEncoder = HFTextEncoder(
                path if path.is_absolute() or root is None else root / path,
                config.text_max_tokens,
            )
            if text.dim != config.text_dim:
                raise ConfigError(
                    f"text_dim is {config.text_dim} but the HF text encoder has width {text.dim}"
                )
        else:
            text = TextEncoder(
                config.text_vocab,
                config.text_max_tokens,
                config.text_dim,
                config.text_layers,
                config.text_heads,
            )
        return (
            MuPDTransformer(config),
            build_vae(config.vae),
            None if config.mif_vae is None else build_autoencoder(config.mif_vae),
            text,
            RNAEncoder(config.rna_features, config.rna_hidden, config.rna_tokens, config.rna_dim),
            ReferenceImageEncoder(
                config.latent_channels, config.image_patch, config.image_tokens, config.image_dim
            ),
            StainRenderer(**config.stain_renderer) if config.ihc_markers else None,
        )

    @classmethod
    def from_pretrained(
        cls, path: str | os.PathLike[str], device: torch.device | str | None = None
    ) -> MuPDPipeline:
        """Load a folder written by `save_pretrained` (safetensors only; no network).

        Raises :class:`~napari_mupd.errors.CheckpointError` for a missing or corrupt file
        and :class:`~napari_mupd.errors.ConfigError` for an invalid ``config.json``. Entry
        points load through :func:`napari_mupd.model.loading.load_pipeline` instead, which
        also checks the device and caches.
        """
        root = Path(path)
        if not (root / "config.json").is_file():
            raise CheckpointError(f"{root} has no config.json: not a MuPD checkpoint")
        config = MuPDConfig.load(root)
        parts = cls._build(config, root)
        for name, module in zip(COMPONENT_NAMES, parts, strict=True):
            if module is None or isinstance(module, HFTextEncoder):
                continue
            file = root / f"{name}.safetensors"
            if not file.is_file():
                raise CheckpointError(f"checkpoint {root} lacks {file.name}")
            try:
                module.load_state_dict(load_file(file), strict=True)
            except Exception as exc:  # safetensors and torch raise several types
                raise CheckpointError(
                    f"checkpoint {root}: {file.name} does not load into the {name} that "
                    f"config.json describes ({type(exc).__name__}: {str(exc)[:300]})"
                ) from exc
        scheduler = None
        if (root / SCHEDULER_CONFIG).is_file():
            try:
                scheduler_config = json.loads((root / SCHEDULER_CONFIG).read_text())
            except (OSError, ValueError) as exc:
                raise CheckpointError(f"checkpoint {root}: {SCHEDULER_CONFIG}: {exc}") from exc
            scheduler = scheduler_from_config(scheduler_config)
        return cls(config, *parts, scheduler=scheduler, device=device)

    def save_pretrained(self, path: str | os.PathLike[str]) -> Path:
        """Write config.json, scheduler_config.json and one .safetensors per component."""
        root = Path(path)
        root.mkdir(parents=True, exist_ok=True)
        config = self.config
        if isinstance(self.text_encoder, HFTextEncoder):
            self.text_encoder.save(root / HF_TEXT_DIR)
            config = MuPDConfig.from_dict({**config.to_dict(), "hf_text_encoder": HF_TEXT_DIR})
        config.save(root)
        for name, module in self._modules().items():
            if isinstance(module, HFTextEncoder):
                continue
            state = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
            save_file(state, root / f"{name}.safetensors", metadata={"format": "pt"})
        (root / SCHEDULER_CONFIG).write_text(json.dumps(self.scheduler.config, indent=2) + "\n")
        return root

    def _modules(self) -> dict[str, nn.Module]:
        mods: dict[str, nn.Module | None] = {
            "transformer": self.transformer,
            "vae": self.vae,
            "mif_vae": self.mif_vae,
            "text_encoder": self.text_encoder,
            "rna_encoder": self.rna_encoder,
            "image_encoder": self.image_encoder,
            "stain_renderer": self.stain_renderer,
        }
        return {k: v for k, v in mods.items() if v is not None}

    @property
    def components(self) -> dict[str, Any]:
        """The parts, as diffusers names them (mif_vae only when the config has mIF targets,
        stain_renderer only with IHC targets)."""
        return {**self._modules(), "scheduler": self.scheduler}

    # ----- device, hash, interrupt -----
    @property
    def device(self) -> torch.device:
        return next(self.transformer.parameters()).device

    def to(self, device: torch.device | str) -> MuPDPipeline:
        """Move every module to `device`; returns self."""
        for m in self._modules().values():
            m.to(device)
        return self

    @property
    def model_hash(self) -> str:
        """sha256 over every component's weights (names, dtypes, shapes, bytes)."""
        tensors = [
            (c, k, v)
            for c, m in sorted(self._modules().items())
            for k, v in sorted(m.state_dict().items())
        ]
        # inference tensors (weights loaded under inference_mode) have no version counter
        versions = tuple(0 if v.is_inference() else v._version for _, _, v in tensors)
        key = versions + tuple(v.data_ptr() for _, _, v in tensors)
        if self._hash is None or self._hash[0] != key:
            h = hashlib.sha256()
            for comp, name, v in tensors:
                h.update(f"{comp}.{name}:{v.dtype}:{tuple(v.shape)}".encode())
                h.update(_tensor_bytes(v))
            self._hash = (key, h.hexdigest())
        return self._hash[1]

    @property
    def interrupt(self) -> bool:
        """Set to True (e.g. from `callback_on_step_end`) to stop before the next step."""
        return self._interrupt

    @interrupt.setter
    def interrupt(self, value: bool) -> None:
        self._interrupt = bool(value)

    def autocast(self) -> torch.autocast:
        """Mixed precision where it pays: bf16 autocast on CUDA, nothing elsewhere."""
        return torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.device.type == "cuda")

    # ----- encoding -----
    def encode_text(self, text: str | Sequence[str]) -> StreamInput:
        """Prompts -> text stream (B tokens); ConditionError on an empty prompt."""
        ids, mask = self.text_encoder.tokenize(text)
        ids, mask = ids.to(self.device), mask.to(self.device)
        tokens = self.text_encoder(ids, mask).float()
        return StreamInput(tokens, torch.ones(len(ids), dtype=torch.bool, device=self.device), mask)

    def check_words(self, text: str | Sequence[str]) -> PromptWords:
        """The words of a prompt (or of a list, merged) that the text encoder does not
        know or cuts off; say them to the user (``PromptWords.note``), never drop them
        silently. ConditionError on an empty prompt."""
        found = [self.text_encoder.check_words(p) for p in check_prompts(text)]
        if len(found) == 1:
            return found[0]
        return PromptWords(
            unique_words(w for f in found for w in f.unknown),
            unique_words(w for f in found for w in f.cut),
            found[0].max_tokens,
            found[0].fallback,
        )

    def encode_rna(
        self, rna: object, normalize: Normalization = "auto"
    ) -> tuple[StreamInput, RNAReport]:
        """Expression (AnnData rows, Series/dict, DataFrame, CSV) -> RNA stream and report."""
        feats = expression_features(rna, self.config.genes, self.config.gene_sets, normalize)
        tokens = self.rna_encoder(feats.tensor().to(self.device)).float()
        present = torch.ones(len(tokens), dtype=torch.bool, device=self.device)
        return StreamInput(tokens, present), feats.report

    def encode_reference(self, image: object) -> StreamInput:
        """Reference tile(s) (config.resolution square, RGB) -> image stream."""
        x = image_to_tensor(image, size=self.config.resolution, what="reference image")
        tokens = self.image_encoder(encode(self.vae, x.to(self.device))).float()
        return StreamInput(tokens, torch.ones(len(tokens), dtype=torch.bool, device=self.device))

    def encode_source(self, image: object) -> Tensor:
        """Source H&E tile(s) for virtual staining -> normalised stain features
        (B, 4, H/8, W/8): per 8 x 8 block, haematoxylin, darkness, its spread and eosin.

        Sides must be multiples of ``8 * patch_size`` px; the output has the same size.
        """
        x = image_to_tensor(image, multiple_of=self._multiple, what="source image")
        return self._normalise(pooled_stains(stain_densities(x.to(self.device))), "source")

    def _normalise(self, x: Tensor, kind: Literal["latent", "source"]) -> Tensor:
        stats = self.config.stain_stats
        mean = torch.tensor(stats[f"{kind}_mean"], device=x.device)[None, :, None, None]
        std = torch.tensor(stats[f"{kind}_std"], device=x.device)[None, :, None, None]
        return (x - mean) / std

    def normalise_latent(self, z: Tensor) -> Tensor:
        """Stain latents in optical density (B, 4, h, w: haematoxylin, DAB, DAB root mean
        square, eosin per block) -> the unit-variance latents the transformer models."""
        return self._normalise(z, "latent")

    def denormalise_latent(self, z: Tensor) -> Tensor:
        """The transformer's stain latents -> optical densities (inverse of
        `normalise_latent`)."""
        stats = self.config.stain_stats
        mean = torch.tensor(stats["latent_mean"], device=z.device)[None, :, None, None]
        std = torch.tensor(stats["latent_std"], device=z.device)[None, :, None, None]
        return z * std + mean

    @property
    def _multiple(self) -> int:
        return 8 * self.config.patch_size

    def encode_target(self, images: object, target: str) -> tuple[Tensor, TargetSpec]:
        """Target tiles -> latent canvas (B, canvas, h, w): RGB (B, H, W, 3) for H&E/IHC,
        or (B, H, W, K) marker intensities of the whole panel (panel order) for mIF."""
        spec = self.config.resolve_target(target)
        canvas_c = self.config.canvas_channels
        if spec.kind == "mIF":
            assert self.mif_vae is not None
            x = image_to_tensor(
                images, multiple_of=self._multiple, channels=len(spec.panel), what="mIF target"
            )
            z = encode_markers(self.mif_vae, x.to(self.device))
        elif spec.kind == "IHC":
            x = image_to_tensor(images, multiple_of=self._multiple, what=f"{spec.name} target")
            z = self.normalise_latent(pooled_stains(stain_densities(x.to(self.device))))
        else:
            x = image_to_tensor(images, multiple_of=self._multiple, what=f"{spec.name} target")
            z = encode(self.vae, x.to(self.device))
        out = z.new_zeros(z.shape[0], canvas_c, *z.shape[-2:])
        out[:, list(spec.channels)] = z
        return out, spec

    def decode_latents(
        self,
        latents: Tensor,
        spec: TargetSpec,
        structure: Tensor | None = None,
        noise: Tensor | None = None,
        nuclei: NucleiMode = "cells",
    ) -> Tensor:
        """Latent canvas -> images (N, C, H, W) in [0, 1] for the target's channels.

        IHC is rendered on ``structure``, the source H&E (N, 3, H, W) in [0, 1] at the
        latent's size times 8 or a multiple of it (the output's size); without one, on the
        latent's own (smooth) nuclear density at 8x. ``nuclei="cells"`` then decides each
        nucleus with draws from ``noise`` (the sampler's initial noise; see
        `stain_renderer.nuclear_readout`).
        """
        if spec.kind == "IHC":
            z = latents[:, : len(spec.channels)]
            return self.render_ihc(z, spec, structure, noise if nuclei == "cells" else None)
        if spec.kind == "H&E":
            return decode(self.vae, latents[:, : self.config.latent_channels])
        assert self.mif_vae is not None
        c = self.config.mif_latent_channels
        slots = [m.lower() for m in self.config.mif_markers]
        idx = [slots.index(m.lower()) * c + j for m in spec.markers for j in range(c)]
        return decode_markers(self.mif_vae, latents[:, idx], len(spec.markers))

    def render_ihc(
        self,
        latents: Tensor,
        spec: TargetSpec,
        structure: Tensor | None,
        noise: Tensor | None = None,
    ) -> Tensor:
        """Normalised stain latents (N, 4, h, w) -> IHC RGB (N, 3, H, W) drawn on
        ``structure``, its nuclear density the source's (`anchor_to_source`), nucleus by
        nucleus when ``noise`` is given (see `decode_latents`)."""
        assert self.stain_renderer is not None
        z = self.denormalise_latent(latents.float()).clamp(min=0)
        if structure is None:
            smooth = z[:, 0:1] + z[:, 1:2]
            s = nn.functional.interpolate(smooth, scale_factor=8, mode="bilinear")
        else:
            s = source_structure(structure.to(z.device))
            z = anchor_to_source(z, s, self.config.source_gain)
        densities = self.stain_renderer(z, s)
        if noise is not None and structure is not None:
            factor = s.shape[-2] // z.shape[-2]
            nuclear = self.config.is_nuclear(spec.markers[0])
            densities = nuclear_readout(densities, s, factor, noise, nuclear)
        return compose_stains(densities)

    # ----- sampling: the steps of __call__, in order -----
    def check_inputs(
        self,
        target: str,
        num_images: int,
        num_inference_steps: int | None,
        guidance_scale: GuidanceScale,
        cross_attention_scales: Mapping[str, float] | None,
        output_type: str,
    ) -> tuple[TargetSpec, int, dict[str, float]]:
        """Check the sampling settings; the target's spec, the step count and the scales.

        Raises :class:`~napari_mupd.errors.ConditionError` naming what is wrong.
        """
        spec = self.config.resolve_target(target)
        if num_images < 1:
            raise ConditionError("num_images must be at least 1")
        if output_type not in ("np", "pil", "pt"):
            raise ConditionError(f"output_type must be 'np', 'pil' or 'pt', got {output_type!r}")
        if output_type == "pil" and spec.kind == "mIF":
            raise ConditionError("output_type='pil' is for RGB targets; use 'np' or 'pt' for mIF")
        scales = dict(cross_attention_scales or {})
        unknown = set(scales) - set(STREAMS)
        if unknown:
            raise ConditionError(
                f"cross_attention_scales: unknown stream {sorted(unknown)}; "
                f"known: {', '.join(STREAMS)}"
            )
        if isinstance(guidance_scale, Mapping):
            guidance_passes([], guidance_scale)  # validates the keys
            if "source" in guidance_scale and not self.config.source_guidance:
                raise ConditionError(
                    "guidance_scale: this checkpoint never learnt a stain without its source "
                    "(trained before source dropout), so the source cannot be guided"
                )
        steps = num_inference_steps
        if steps is None:
            steps = self.config.default_steps.get(spec.kind, 25)
        if steps < 1:
            raise ConditionError(f"num_inference_steps must be at least 1, got {steps}")
        return spec, steps, {k: float(v) for k, v in scales.items()}

    def encode_conditions(
        self,
        spec: TargetSpec,
        text: object,
        rna: object,
        image: object,
        num_images: int,
        detail: object = None,
    ) -> EncodedConditions:
        """Encode the given conditions and repeat each of their B rows ``num_images`` times.

        ``image`` is the source H&E for IHC and mIF targets, the reference tile for H&E;
        ``detail`` the source at a finer pixel size (sides an integer multiple of the
        source's), on which IHC is rendered.
        """
        streams: dict[str, StreamInput] = {}
        report = None
        if text is not None:
            streams["text"] = self.encode_text(text)  # type: ignore[arg-type]
        if rna is not None:
            streams["rna"], report = self.encode_rna(rna)
        if image is not None and not spec.uses_source:
            streams["image"] = self.encode_reference(image)
        b = self._batch_size({len(s.present) for s in streams.values()})
        source = structure = None
        if image is not None and spec.uses_source:
            x = image_to_tensor(image, multiple_of=self._multiple, what="source image")
            source = self._normalise(pooled_stains(stain_densities(x.to(self.device))), "source")
            b = self._batch_size({b, len(source)})
            structure = x if detail is None else self._detail(detail, x)
        elif detail is not None:
            raise ConditionError("detail is the source H&E at a finer pixel size: give image too")

        def expand(x: Tensor) -> Tensor:
            return x.expand(b, *x.shape[1:]).repeat_interleave(num_images, dim=0)

        repeated = {
            k: StreamInput(
                expand(s.tokens),
                expand(s.present),
                None if s.key_mask is None else expand(s.key_mask),
            )
            for k, s in streams.items()
        }
        source = None if source is None else expand(source)
        structure = None if structure is None else expand(structure)
        return EncodedConditions(repeated, source, b * num_images, report, structure)

    @staticmethod
    def _detail(detail: object, source: Tensor) -> Tensor:
        x = image_to_tensor(detail, what="detail image")
        (h, w), (sh, sw) = x.shape[-2:], source.shape[-2:]
        if len(x) != len(source) or h % sh or w % sw or h // sh != w // sw:
            raise ConditionError(
                f"detail must be the source's {len(source)} tile(s) at an integer multiple of "
                f"its {sw}x{sh} px size, got {len(x)} of {w}x{h} px"
            )
        return x

    @staticmethod
    def _batch_size(sizes: set[int]) -> int:
        big = sizes - {1}
        if len(big) > 1:
            raise ConditionError(
                f"conditions have different batch sizes {sorted(sizes)}: "
                "give one of each or the same number"
            )
        return big.pop() if big else 1

    def prepare_latents(
        self,
        spec: TargetSpec,
        n: int,
        size: tuple[int, int],
        generator: torch.Generator,
        latents: Tensor | None = None,
    ) -> Tensor:
        """The initial noise on the latent canvas (n, canvas, h/8, w/8), zero outside the
        target's channels: drawn from ``generator``, or ``latents`` (per target channel)."""
        h, w = size
        canvas = (n, self.config.canvas_channels, h // 8, w // 8)
        if latents is None:
            noise = torch.randn(canvas, generator=generator, device=generator.device)
            noise = noise.to(self.device)
        else:
            expected = (n, len(spec.channels), h // 8, w // 8)
            if tuple(latents.shape) != expected:
                raise ConditionError(
                    f"latents must have shape {expected}, got {tuple(latents.shape)}"
                )
            noise = torch.zeros(canvas, device=self.device)
            noise[:, list(spec.channels)] = latents.to(self.device, torch.float32)
        mask = torch.zeros(canvas[1], device=self.device)
        mask[list(spec.channels)] = 1.0
        return noise * mask[None, :, None, None]

    def denoise(
        self,
        latents: Tensor,
        velocity: VelocityFn,
        steps: int,
        callback_on_step_end: StepCallback | None = None,
    ) -> tuple[Tensor, int]:
        """Integrate from noise (t = 1) to data (t = 0) in ``steps`` scheduler steps; the
        latents and the steps done (fewer when ``interrupt`` was set)."""
        self.scheduler.set_timesteps(steps)
        done = 0
        for i in range(steps):
            if self._interrupt:
                break
            latents = self.scheduler.step(velocity, latents, i)
            done += 1
            if callback_on_step_end is not None:
                t = float(self.scheduler.timesteps[i + 1])
                result = callback_on_step_end(self, i, t, {"latents": latents})
                if result and "latents" in result:
                    latents = result["latents"]
        return latents, done

    def decode(
        self,
        latents: Tensor,
        spec: TargetSpec,
        output_type: str,
        structure: Tensor | None = None,
        noise: Tensor | None = None,
        nuclei: NucleiMode = "cells",
    ) -> np.ndarray | Tensor | list[Image.Image]:
        """Latents -> images in [0, 1] as ``output_type`` asks (see `MuPDPipelineOutput`)."""
        with self.autocast():
            images = self.decode_latents(latents, spec, structure, noise, nuclei)
            images = images.float().permute(0, 2, 3, 1).cpu()
        if output_type == "np":
            return images.numpy()
        if output_type == "pil":
            from PIL import Image

            return [Image.fromarray(to_uint8(im.numpy())) for im in images]
        return images

    def predict_velocity(
        self,
        latents: Tensor,
        t: float,
        spec: TargetSpec,
        streams: Mapping[str, StreamInput],
        source: Tensor | None = None,
        guidance_scale: GuidanceScale = 1.0,
        cross_attention_scales: Mapping[str, float] | None = None,
    ) -> Tensor:
        """The guided velocity for `latents` (N, canvas, h, w) at time `t`.

        Streams and source must already have batch N. The guidance passes are run as one
        batch; the result is zero outside the target's channels.
        """
        guided_source = source is not None and self.config.source_guidance
        given = [*streams, *(["source"] if guided_source else [])]
        passes = guidance_passes(given, guidance_scale)
        n, reps = latents.shape[0], len(passes)
        tiled = {
            name: StreamInput(
                s.tokens.repeat(reps, 1, 1),
                torch.cat([s.present & (name in p) for p in passes]),
                None if s.key_mask is None else s.key_mask.repeat(reps, 1),
            )
            for name, s in streams.items()
        }
        ids = torch.full((n * reps,), spec.index, dtype=torch.long, device=latents.device)
        src = None if source is None else source.repeat(reps, 1, 1, 1)
        src_present = None
        if guided_source:
            src_present = torch.tensor([("source" in p) for p in passes], device=latents.device)
            src_present = src_present.repeat_interleave(n)
        with self.autocast():
            v = self.transformer(
                latents.repeat(reps, 1, 1, 1),
                torch.full((n * reps,), t, device=latents.device),
                ids,
                tiled,
                src,
                src_present,
                cross_attention_scales,
            )
        v = combine_guidance(list(v.float().chunk(reps)), passes, guidance_scale)
        mask = torch.zeros(latents.shape[1], device=latents.device)
        mask[list(spec.channels)] = 1.0
        return v * mask[None, :, None, None]

    @torch.inference_mode()
    def __call__(
        self,
        text: str | Sequence[str] | None = None,
        rna: object = None,
        image: object = None,
        target: str = "H&E",
        num_images: int = 1,
        height: int | None = None,
        width: int | None = None,
        num_inference_steps: int | None = None,
        guidance_scale: GuidanceScale = 1.0,
        cross_attention_scales: Mapping[str, float] | None = None,
        generator: torch.Generator | int | None = None,
        output_type: OutputType = "np",
        callback_on_step_end: StepCallback | None = None,
        latents: Tensor | None = None,
        detail: object = None,
        nuclei: NucleiMode = "cells",
    ) -> MuPDPipelineOutput:
        """Generate tiles of `target` from any subset of text, RNA and image.

        text: a prompt or a list; rna: see `encode_rna` (several rows = a batch); image:
        reference tile for "H&E", source H&E for IHC/mIF (see the module docstring).
        Batched conditions must agree in size B (or be single); the output has
        ``B * num_images`` tiles. num_inference_steps defaults to
        ``config.default_steps[kind]`` (1 for mIF: a single-step read-out).
        guidance_scale: a float (joint CFG) or a dict per modality (compositional CFG).
        cross_attention_scales: per-stream multipliers; 0 removes a condition.
        generator: a torch.Generator or an int seed (None: a fresh random seed, recorded).
        callback_on_step_end(pipe, step, t, {"latents": x}) may return {"latents": x'}
        and may set ``pipe.interrupt = True``.
        latents: the initial noise, (N, latent channels of the target, h/8, w/8) — e.g.
        crops of one noise field shared by overlapping tiles; default: drawn from
        `generator`.
        detail: for IHC, the source at a finer pixel size (its sides k times the source's,
        k an integer): the stain is rendered on its nuclei, and the output has its size.
        nuclei: for IHC, "cells" (default) draws each nucleus brown or blue as an IHC shows
        it; "mean" keeps the expected stain per pixel (a mixture, best for correlations).
        """
        spec, steps, scales = self.check_inputs(
            target,
            num_images,
            num_inference_steps,
            guidance_scale,
            cross_attention_scales,
            output_type,
        )
        self._interrupt = False
        conditions = self.encode_conditions(spec, text, rna, image, num_images, detail)
        size = self._output_size(spec, conditions.source, height, width)
        generator, seed = _resolve_generator(generator)
        if nuclei not in ("cells", "mean"):
            raise ConditionError(f"nuclei must be 'cells' or 'mean', got {nuclei!r}")
        x = noise = self.prepare_latents(spec, conditions.n, size, generator, latents)

        def velocity(x: Tensor, t: float) -> Tensor:
            return self.predict_velocity(
                x, t, spec, conditions.streams, conditions.source, guidance_scale, scales
            )

        x, done = self.denoise(x, velocity, steps, callback_on_step_end)
        return MuPDPipelineOutput(
            images=self.decode(
                x, spec, output_type, conditions.structure, noise[:, list(spec.channels)], nuclei
            ),
            target=spec.name,
            channels=("R", "G", "B") if spec.kind != "mIF" else spec.markers,
            seed=seed,
            num_inference_steps=steps,
            steps_done=done,
            interrupted=done < steps,
            guidance_scale=dict(guidance_scale)
            if isinstance(guidance_scale, Mapping)
            else float(guidance_scale),
            cross_attention_scales=scales,
            scheduler=self.scheduler.config,
            model_name=self.config.name,
            model_hash=self.model_hash,
            rna_report=conditions.report,
            conditions=conditions.names,
        )

    def _output_size(
        self, spec: TargetSpec, source: Tensor | None, height: int | None, width: int | None
    ) -> tuple[int, int]:
        if source is not None:
            h, w = source.shape[-2] * 8, source.shape[-1] * 8
            if (height or h, width or w) != (h, w):
                raise ConditionError(
                    f"height/width {height}x{width} differ from the source image {h}x{w}"
                )
            return h, w
        h, w = height or self.config.resolution, width or self.config.resolution
        if h % self._multiple or w % self._multiple or h <= 0 or w <= 0:
            raise ConditionError(
                f"height and width must be positive multiples of {self._multiple} px, got {h}x{w}"
            )
        return h, w
