"""Pure pixel helpers (numpy, scipy, scikit-image, Pillow): the bottom layer of the core.

``pixels`` (uint8 conversions), ``resize`` (area downsampling, tile fitting, affine
resampling), ``stains`` (colour deconvolution), ``tissue`` (tissue masks and the one
"is there tissue here" test) and ``regions`` (the one region type). Nothing here reads
files or knows about slides, models or napari.
"""
