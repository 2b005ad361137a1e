# acdc.make: ACDC 2017 (cardiac cine MRI, 4 classes: background, right ventricle, myocardium, left
# ventricle cavity). Variables and trainings only; the recipes are in common.make.
#
#   make -f acdc.make                   real data: acdc.zip of lineage/acdc.lineage in data/
#   make -f acdc.make DATA=synthetic    the same chain on generated stand-in data

DATASET := acdc
RAW := ACDC
ZIPS := acdc.zip
DROP := '*_4d.nii.gz'
SLICER := preprocess/slice_acdc.py
K := 4
MODALITIES := 1
METRIC_AXIS := 1 2 3
G_RGX := (patient\d+_\d+_\d+)_\d+
NET ?= ENet
TRAIN_OPT := --use_spacing --compute_3d_dice --in_memory --schedule --group

ifeq ($(DATA),synthetic)
# Sized for a 2-core CPU: 12 generated patients, 3 (6 volumes) kept for validation, slices at
# 128 x 128.
RETAIN ?= 3
SLICE_OPT ?= --shape 128 128
EPC ?= 20
BS ?= 4
else
RETAIN ?= 25
EPC ?= 100
endif

ALL_K := {'idc': [0, 1, 2, 3]}
A_DATA := ('in_npy', tensor_transform, False), ('gt_npy', gt_transform, True)

TRN := ce diceloss boundary
ce_LOSSES = [('CrossEntropy', $(ALL_K), 1)]
ce_FOLDERS = [$(A_DATA)]
diceloss_LOSSES = [('DiceLoss', $(ALL_K), 1)]
diceloss_FOLDERS = [$(A_DATA)]
# The boundary loss alone on the four classes; the zero-weight CE reads the labels for the metrics.
boundary_LOSSES = [('CrossEntropy', $(ALL_K), 0), ('BoundaryLoss', $(ALL_K), 1)]
boundary_FOLDERS = [$(A_DATA), ('gt_npy', dist_map_transform, False)]

CURVES := val_dice tra_dice tra_loss val_3d_dsc
BOXPLOTS := val_3d_dsc
REPORT_METRICS := val_dice val_3d_dsc val_3d_hausdorff val_3d_hd95

include common.make
