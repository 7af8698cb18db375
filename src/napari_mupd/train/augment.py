"""Augmentations that respect histology: dihedral flips/rotations and mild stain jitter.

Training draws them per sample; the pieces live in :mod:`napari_mupd.imaging.augment`,
which the tile export shares.
"""

from __future__ import annotations

from napari_mupd.imaging.augment import dihedral, stain_jitter

__all__ = ["dihedral", "stain_jitter"]
