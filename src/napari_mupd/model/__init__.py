"""The MuPD model for inference: SiT with decoupled cross-modal attention, encoders, VAEs,
samplers and the pipeline; `loading` is how entry points load checkpoints.

Qt-free library code. Names are imported on first use, so `napari_mupd.model.config`
loads without torch (argument checks answer at once); the pipeline imports torch, and
diffusers when a VAE is built. Training (the loss, batches, the loop) lives in
:mod:`napari_mupd.train`.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "DecoupledCrossAttention": "napari_mupd.model.attention",
    "FlowMatchEulerScheduler": "napari_mupd.model.schedulers",
    "FlowMatchHeunScheduler": "napari_mupd.model.schedulers",
    "FlowMatchScheduler": "napari_mupd.model.schedulers",
    "HFTextEncoder": "napari_mupd.model.encoders",
    "MuPDConfig": "napari_mupd.model.config",
    "MuPDPipeline": "napari_mupd.model.pipeline",
    "MuPDPipelineOutput": "napari_mupd.model.pipeline",
    "MuPDTransformer": "napari_mupd.model.transformer",
    "RNAEncoder": "napari_mupd.model.encoders",
    "RNAReport": "napari_mupd.model.encoders",
    "ReferenceImageEncoder": "napari_mupd.model.encoders",
    "STREAMS": "napari_mupd.model.attention",
    "StreamInput": "napari_mupd.model.attention",
    "TargetSpec": "napari_mupd.model.config",
    "TextEncoder": "napari_mupd.model.encoders",
    "TextTokenizer": "napari_mupd.model.encoders",
    "auto_device": "napari_mupd.model.pipeline",
    "combine_guidance": "napari_mupd.model.guidance",
    "expression_features": "napari_mupd.model.encoders",
    "guidance_passes": "napari_mupd.model.guidance",
    "image_to_tensor": "napari_mupd.model.encoders",
    "scheduler_from_config": "napari_mupd.model.schedulers",
}


def __getattr__(name: str) -> Any:
    """Import what is asked for when it is asked for (PEP 562): `model.config` and the
    other torch-free modules load without torch."""
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if TYPE_CHECKING:
    from napari_mupd.model.attention import STREAMS, DecoupledCrossAttention, StreamInput
    from napari_mupd.model.config import MuPDConfig, TargetSpec
    from napari_mupd.model.encoders import (
        HFTextEncoder,
        ReferenceImageEncoder,
        RNAEncoder,
        RNAReport,
        TextEncoder,
        TextTokenizer,
        expression_features,
        image_to_tensor,
    )
    from napari_mupd.model.guidance import combine_guidance, guidance_passes
    from napari_mupd.model.pipeline import MuPDPipeline, MuPDPipelineOutput, auto_device
    from napari_mupd.model.schedulers import (
        FlowMatchEulerScheduler,
        FlowMatchHeunScheduler,
        FlowMatchScheduler,
        scheduler_from_config,
    )
    from napari_mupd.model.transformer import MuPDTransformer

__all__ = [
    "STREAMS",
    "DecoupledCrossAttention",
    "FlowMatchEulerScheduler",
    "FlowMatchHeunScheduler",
    "FlowMatchScheduler",
    "HFTextEncoder",
    "MuPDConfig",
    "MuPDPipeline",
    "MuPDPipelineOutput",
    "MuPDTransformer",
    "RNAEncoder",
    "RNAReport",
    "ReferenceImageEncoder",
    "StreamInput",
    "TargetSpec",
    "TextEncoder",
    "TextTokenizer",
    "auto_device",
    "combine_guidance",
    "expression_features",
    "guidance_passes",
    "image_to_tensor",
    "scheduler_from_config",
]
