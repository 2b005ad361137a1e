# twoclass.make: what isles.make and wmh.make share, the two-class experiments of the boundary-loss
# paper (Kervadec et al., MIDL 2019): the training settings, the quick-start sizes, the plots,
# and the trainings, written as the original makefiles write them (`--folders`: the input, the
# ground truth of the metrics, then one folder per loss). The dataset makefile sets DATA_NAME,
# RAW, ZIPS, DROP, SLICER, MODALITIES, G_RGX and RETAIN, then includes this file.

K := 2
METRIC_AXIS := 1
TRAIN_OPT := --use_spacing --compute_3d_dice --in_memory --schedule

ifeq ($(DATA),synthetic)
# Sized for a 2-core CPU: slices at 128 x 128, a UNet of width 8 instead of 64, 20 epochs at a
# learning rate of 5e-3.
SLICE_OPT ?= --shape 128 128
EPC ?= 20
BS ?= 4
LR ?= 5e-3
NET_PARAMS ?= $(if $(filter UNet,$(NET)),{'nG': 8},{})
else
EPC ?= 100
endif

TRN := gdl gdl_surface_steal gdl_3d_surface_steal gdl_hausdorff_w
# The training every other one is compared with, patient by patient, in the report.
BASELINE ?= gdl
EXTRA_TRN := gdl_surface_w surface hausdorff

CURVES := tra_loss val_loss val_dice tra_dice val_3d_hausdorff val_3d_hd95
BOXPLOTS := val_dice
REPORT_METRICS := val_dice val_3d_dsc val_3d_hausdorff val_3d_hd95

# The trainings: <run>_LOSSES, <run>_FOLDERS and <run>_OPT, the original's lines.
B_DATA = [('in_npy', tensor_transform, False), ('gt_npy', gt_transform, True)]
GDL = ('GeneralizedDice', {'idc': [0, 1]}, 1)
STEAL = --scheduler StealWeight --scheduler_params "{'to_steal': 0.01}"

gdl_LOSSES = [$(GDL)]
gdl_FOLDERS = $(B_DATA)+[('gt_npy', gt_transform, True)]
gdl_surface_steal_LOSSES = [$(GDL), ('SurfaceLoss', {'idc': [1]}, 0.01)]
gdl_surface_steal_FOLDERS = $(B_DATA)+[('gt_npy', gt_transform, True), ('gt_npy', dist_map_transform, False)]
gdl_surface_steal_OPT = $(STEAL)
gdl_3d_surface_steal_LOSSES = $(gdl_surface_steal_LOSSES)
gdl_3d_surface_steal_FOLDERS = $(B_DATA)+[('gt_npy', gt_transform, True), ('3d_distmap', raw_npy_transform, False)]
gdl_3d_surface_steal_OPT = $(STEAL)
gdl_hausdorff_w_LOSSES = [$(GDL), ('HausdorffLoss', {'idc': [1]}, 0.1)]
gdl_hausdorff_w_FOLDERS = $(B_DATA)+[('gt_npy', gt_transform, True), ('gt_npy', gt_transform, True)]
gdl_surface_w_LOSSES = [$(GDL), ('SurfaceLoss', {'idc': [1]}, 0.1)]
gdl_surface_w_FOLDERS = $(gdl_surface_steal_FOLDERS)
# A loss alone: the ground-truth folder feeds the metrics, no zero-weight companion needed.
surface_LOSSES = [('SurfaceLoss', {'idc': [1]}, 0.1)]
surface_FOLDERS = $(B_DATA)+[('gt_npy', dist_map_transform, False)]
hausdorff_LOSSES = [('HausdorffLoss', {'idc': [1]}, 0.1)]
hausdorff_FOLDERS = $(B_DATA)+[('gt_npy', gt_transform, True)]

include common.make
