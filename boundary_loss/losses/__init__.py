"""The losses: the original's API on probabilities and one-hot targets (`idc_losses`), the same
losses on integer label maps (`label_losses`), for Keras 3 (`keras_loss`), and the schedules of
their weights (`weight_schedules`)."""
