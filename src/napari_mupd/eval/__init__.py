"""Evaluation of generated and virtually stained tiles against real ones (Qt-free).

Modules: `stain` (colour deconvolution), `metrics` (Pearson, SSIM, PSNR, Dice),
`features` (an offline handcrafted histology encoder, Fréchet and kernel distances),
`nuclei` (nuclei segmentation and composition), `baselines` (colour-deconvolution,
nearest-neighbour and regression baselines) and `report` (tables and plots).
Importing `baselines` imports torch; the other modules need only numpy, scipy,
scikit-image and pandas (matplotlib inside `report.plot_report`).
"""

from __future__ import annotations

from napari_mupd.eval._checks import EvalError, MetricWarning

__all__ = ["EvalError", "MetricWarning"]
