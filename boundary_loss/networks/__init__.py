"""The segmentation networks (`enet`, `unet`, `dimwit`), their shared blocks (`blocks`) and the
registry `--network` chooses from (`registry`)."""
