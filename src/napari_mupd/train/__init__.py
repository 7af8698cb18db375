"""Training MuPD on a user's own data: datasets, augmentation, the training loop."""
