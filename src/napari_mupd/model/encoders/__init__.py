"""Condition encoders: text, RNA expression, reference image."""

from __future__ import annotations

from napari_mupd.model.encoders.image import ReferenceImageEncoder, image_to_tensor
from napari_mupd.model.encoders.rna import (
    RNAEncoder,
    RNAFeatures,
    RNAReport,
    expression_features,
    read_expression,
)
from napari_mupd.model.encoders.text import (
    HFTextEncoder,
    PromptWords,
    TextEncoder,
    TextTokenizer,
)

__all__ = [
    "HFTextEncoder",
    "PromptWords",
    "RNAEncoder",
    "RNAFeatures",
    "RNAReport",
    "ReferenceImageEncoder",
    "TextEncoder",
    "TextTokenizer",
    "expression_features",
    "image_to_tensor",
    "read_expression",
]
