"""Evaluation of generated and virtually stained tiles against real ones (Qt-free).

Metrics, which take tiles and know nothing of training: `metrics` (Pearson, SSIM, PSNR,
Dice), `compare` (a real against a virtual stain on one grid), `features` (an offline
handcrafted histology encoder, Fréchet and kernel distances), `nuclei` (nuclei
segmentation and composition), `baselines` (colour-deconvolution, nearest-neighbour and
regression baselines) and `report` (tables and plots). Colour deconvolution itself is
:mod:`napari_mupd.imaging.stains`.

Experiments, which build datasets from a training config and run a checkpoint:
`experiments.heldout` (a checkpoint on its held-out split) and `experiments.fewshot`
(few-shot classification with synthetic tiles).

Importing `baselines` imports torch; the metric modules need only numpy, scipy,
scikit-image and pandas (matplotlib inside `report.plot_report`).
"""
