# wmh.make: WMH 2017 (white matter hyperintensities, FLAIR and T1, 2 classes), the boundary-loss
# paper's second dataset. Variables and trainings only; the recipes are in common.make.
#
#   make -f wmh.make                    real data: the three zips of lineage/wmh.lineage in data/
#   make -f wmh.make DATA=synthetic     the same chain on generated stand-in data

DATASET := wmh
RAW := WMH
ZIPS := Amsterdam_GE3T.zip Singapore.zip Utrecht.zip
DROP := orig 3DT1.nii.gz
SLICER := preprocess/slice_wmh.py
K := 2
MODALITIES := 2
METRIC_AXIS := 1
G_RGX := (\d+_\d+)_\d+
TRAIN_OPT := --use_spacing --compute_3d_dice --in_memory --schedule

ifeq ($(DATA),synthetic)
# Sized for a 2-core CPU: 12 generated patients, 2 kept for validation, slices at 128 x 128, a
# UNet of width 8 instead of 64, 20 epochs at a learning rate of 5e-3.
RETAIN ?= 2
SLICE_OPT ?= --shape 128 128
EPC ?= 20
BS ?= 4
LR ?= 5e-3
NET_PARAMS ?= $(if $(filter UNet,$(NET)),{'nG': 8},{})
else
RETAIN ?= 10
EPC ?= 100
endif

TRN := gdl gdl_surface_steal gdl_3d_surface_steal gdl_hausdorff_w
EXTRA_TRN := gdl_surface_w surface hausdorff

CURVES := tra_loss val_loss val_dice tra_dice val_3d_hausdorff val_3d_hd95
BOXPLOTS := val_dice
REPORT_METRICS := val_dice val_3d_dsc val_3d_hausdorff val_3d_hd95

include common.make
