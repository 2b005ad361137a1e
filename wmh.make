# wmh.make: WMH 2017 (white matter hyperintensities, FLAIR and T1, 2 classes), the boundary-loss
# paper's second dataset. Its own variables only: the trainings and settings shared
# with the other two-class dataset are in twoclass.make, the recipes in common.make.
#
#   make -f wmh.make                    real data: the three zips of lineage/wmh.lineage in data/
#   make -f wmh.make DATA=synthetic     the same chain on generated stand-in data

DATA_NAME := wmh
RAW := WMH
ZIPS := Amsterdam_GE3T.zip Singapore.zip Utrecht.zip
DROP := orig 3DT1.nii.gz
SLICER := preprocess/slice_wmh.py
MODALITIES := 2
G_RGX := (\d+_\d+)_\d+
RETAIN ?= $(if $(filter synthetic,$(DATA)),2,10)

include twoclass.make
