# acdc.make: ACDC 2017 (cardiac cine MRI, 4 classes: background, right ventricle, myocardium, left
# ventricle cavity). Variables and trainings only; the recipes are in common.make.
#
#   make -f acdc.make                   real data: acdc.zip of lineage/acdc.lineage in data/
#   make -f acdc.make DATA=synthetic    the same chain on generated stand-in data

DATA_NAME := acdc
RAW := ACDC
ZIPS := acdc.zip
DROP := '*_4d.nii.gz'
SLICER := preprocess/slice_acdc.py
K := 4
MODALITIES := 1
METRIC_AXIS := 1 2 3
G_RGX := (patient\d+_\d+_\d+)_\d+
NET ?= ENet
# Every training also counts the forbidden adjacencies of its predictions (val_adjacency.npy).
TRAIN_OPT = --use_spacing --compute_3d_dice --in_memory --schedule --group --adjacency_graph $(GRAPH)
TRAIN_DEPS = $(GRAPH)

ifeq ($(DATA),synthetic)
# Sized for a 2-core CPU: 12 generated patients, 3 (6 volumes) kept for validation, slices at
# 128 x 128, 12 epochs at a learning rate of 5e-3.
RETAIN ?= 3
SLICE_OPT ?= --shape 128 128
EPC ?= 12
BS ?= 8
LR ?= 5e-3
else
RETAIN ?= 25
EPC ?= 100
endif

ALL_K := {'idc': [0, 1, 2, 3]}
# The original's lines: `--folders` gives the input, the ground truth of the metrics, then one
# folder per loss.
A_DATA := [('in_npy', tensor_transform, False), ('gt_npy', gt_transform, True)]
GT := ('gt_npy', gt_transform, True)

TRN := ce diceloss boundary ce_adj boundary_adj
# The training every other one is compared with, patient by patient, in the report.
BASELINE ?= ce
ce_LOSSES = [('CrossEntropy', $(ALL_K), 1)]
ce_FOLDERS = $(A_DATA)+[$(GT)]
diceloss_LOSSES = [('DiceLoss', $(ALL_K), 1)]
diceloss_FOLDERS = $(A_DATA)+[$(GT)]
boundary_LOSSES = [('BoundaryLoss', $(ALL_K), 1)]
boundary_FOLDERS = $(A_DATA)+[('gt_npy', dist_map_transform, False)]

# The adjacency constraint (Ganaye et al., MICCAI 2018) added to CE and to the boundary loss. The
# penalty needs no labels; its folder entry is the ground truth, read once with it. Its weight is
# set by the LambdaController from the segmentation term (the reference loss) after epoch 0.
ADJ_LOSS = ('NonAdjacencyLoss', {'idc': [0, 1, 2, 3], 'graph': '$(GRAPH)'}, 1)
LAMBDA = --scheduler LambdaController --scheduler_params
ce_adj_LOSSES = [('CrossEntropy', $(ALL_K), 1), $(ADJ_LOSS)]
ce_adj_FOLDERS = $(A_DATA)+[$(GT), $(GT)]
ce_adj_OPT = $(LAMBDA) "{'reference': 0}"
boundary_adj_LOSSES = [('BoundaryLoss', $(ALL_K), 1), $(ADJ_LOSS)]
boundary_adj_FOLDERS = $(A_DATA)+[('gt_npy', dist_map_transform, False), $(GT)]
boundary_adj_OPT = $(LAMBDA) "{'reference': 0}"

CURVES := val_dice tra_dice tra_loss val_3d_dsc val_adjacency
BOXPLOTS := val_3d_dsc
REPORT_METRICS := val_dice val_3d_dsc val_3d_hausdorff val_3d_hd95 val_adjacency

include common.make
