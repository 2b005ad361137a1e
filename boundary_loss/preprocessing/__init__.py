"""From source archives to sliced data: lineage (`verify_lineage`, `dataset_lineage`), unpacking
(`unpack`), volumes and their geometry (`volumes`), the slicers (`slice_*`, `slicing`,
`slices`), the nnU-Net and Decathlon formats (`nnunet_format`) and the synthetic stand-ins
(`synthetic*`)."""
