"""Sliced datasets, transforms and samplers (`loader`) and on-device augmentation (`augment`)."""
