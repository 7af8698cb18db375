"""The MuPD model for inference: SiT with decoupled cross-modal attention, encoders, VAEs,
samplers and the pipeline; `loading` is how entry points load checkpoints.

Qt-free library code. Importing this package imports torch; diffusers is imported when
a VAE is built. Training (the loss, batches, the loop) lives in :mod:`napari_mupd.train`.
"""

from __future__ import annotations

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
