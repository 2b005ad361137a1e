"""Training: the typed configuration and its command line (`config`), the epoch engine (`engine`),
checkpoints (`checkpoint`), learning-rate rules (`lr_schedule`) and the entry point (`main`)."""
