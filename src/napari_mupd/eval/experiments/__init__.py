"""Experiments that drive a checkpoint over the data of a training config: the held-out
evaluation (`heldout`), adherence to the conditions (`adherence`), the few-shot
classification with synthetic tiles (`fewshot`) and its scarce-data version against
classical augmentation (`downstream`).

Unlike the metric modules of :mod:`napari_mupd.eval`, these build datasets with
:mod:`napari_mupd.train`.
"""
