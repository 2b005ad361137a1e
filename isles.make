# isles.make: ISLES 2018 (CT perfusion stroke lesions, 2 classes), the boundary-loss paper's
# first dataset. Its own variables only: the trainings and settings shared
# with the other two-class dataset are in twoclass.make, the recipes in common.make.
#
#   make -f isles.make                  real data: the two zips of lineage/isles.lineage in data/
#   make -f isles.make DATA=synthetic   the quick start on generated stand-in data
#   make -f isles.make NET=Dimwit EPC=5 DEBUG=--debug    a fast dry run of the whole chain

DATA_NAME := isles
RAW := ISLES
ZIPS := ISLES2018_Training.zip ISLES2018_Testing.zip
DROP := __MACOSX '*CT_4DPWI*'
SLICER := preprocess/slice_isles.py
MODALITIES := 5
G_RGX := (case_\d+_\d+)_\d+
RETAIN ?= $(if $(filter synthetic,$(DATA)),4,20)

include twoclass.make
