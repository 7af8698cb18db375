"""Evaluation of generated and virtually stained tiles against real ones (Qt-free).

Metrics, which take tiles and know nothing of training: `metrics` (Pearson, SSIM, PSNR,
Dice), `compare` (a real against a virtual stain on one grid), `features` (an offline
handcrafted histology encoder, Fréchet and kernel distances), `nuclei` (nuclei
segmentation and composition), `adherence` (do generated tiles answer to their
condition: label and reference adherence), `baselines` (colour-deconvolution,
nearest-neighbour and regression baselines) and `report` (tables and plots). Colour
deconvolution itself is :mod:`napari_mupd.imaging.stains`.

Experiments, which build datasets from a training config and run a checkpoint:
`experiments.heldout` (a checkpoint on its held-out split), `experiments.adherence` (the
adherence of its tiles to text, RNA and references), `experiments.fewshot` (few-shot
classification with synthetic tiles) and `experiments.downstream` (the same from 1-3 real
tiles, against classical augmentation).

Importing `baselines` imports torch; the metric modules need only numpy, scipy,
scikit-image and pandas (matplotlib inside `report.plot_report`).
"""
