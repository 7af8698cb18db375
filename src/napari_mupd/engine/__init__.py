"""Tiling, tissue detection and registration: what runs between slides and the model."""
