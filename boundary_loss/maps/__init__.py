"""Label encodings (`onehot`), signed distance maps on the CPU (`distance`) and on the device
(`distance_torch`), and the label adjacency graph of Ganaye et al. (MICCAI 2018, `adjacency`)."""
