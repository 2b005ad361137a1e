# isles.make: ISLES 2018 (CT perfusion stroke lesions, 2 classes), the boundary-loss paper's
# first dataset. Variables and trainings only; the recipes are in common.make.
#
#   make -f isles.make                  real data: the two zips of lineage/isles.lineage in data/
#   make -f isles.make DATA=synthetic   the quick start on generated stand-in data
#   make -f isles.make NET=Dimwit EPC=5 DEBUG=--debug    a fast dry run of the whole chain

DATASET := isles
RAW := ISLES
ZIPS := ISLES2018_Training.zip ISLES2018_Testing.zip
DROP := __MACOSX '*CT_4DPWI*'
SLICER := preprocess/slice_isles.py
K := 2
MODALITIES := 5
METRIC_AXIS := 1
G_RGX := (case_\d+_\d+)_\d+
TRAIN_OPT := --use_spacing --compute_3d_dice --in_memory --schedule

ifeq ($(DATA),synthetic)
# Sized for a 2-core CPU: 16 generated cases, 4 kept for validation, slices at 128 x 128, a
# UNet of width 8 instead of 64, 20 epochs at a learning rate of 5e-3.
RETAIN ?= 4
SLICE_OPT ?= --shape 128 128
EPC ?= 20
BS ?= 4
LR ?= 5e-3
NET_PARAMS ?= $(if $(filter UNet,$(NET)),{'nG': 8},{})
else
RETAIN ?= 20
EPC ?= 100
endif

TRN := gdl gdl_surface_steal gdl_3d_surface_steal gdl_hausdorff_w
EXTRA_TRN := gdl_surface_w surface hausdorff

CURVES := tra_loss val_loss val_dice tra_dice val_3d_hausdorff val_3d_hd95
BOXPLOTS := val_dice
REPORT_METRICS := val_dice val_3d_dsc val_3d_hausdorff val_3d_hd95

include common.make
