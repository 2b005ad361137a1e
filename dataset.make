# dataset.make: any nnU-Net v2 or Medical Segmentation Decathlon dataset through the same chain,
# with the predictions written back as NIfTI in the source geometry. The dataset's variables and
# trainings only; the recipes are in common.make.
#
#   make -f dataset.make DATASET=path/to/Dataset004_Hippocampus    a dataset folder (dataset.json)
#   make -f dataset.make DATA=synthetic       the generated stand-in, in nnU-Net v2's layout
#   make -f dataset.make DATA=synthetic-msd   the same cohort in the Decathlon's layout
#
# Steps: lineage (pin the files on first use, check them first on every later run; REPIN=1 pins
# them again) -> slices along the coarsest axis -> trainings -> plots -> predictions (NIfTI, in
# results/<name>/predictions/<training>/) -> report -> archive. Results in results/<name>/ (the
# dataset folder's name), sliced data in data/sliced/<name>/. FOLD=N (N > 0) trains on fold N of
# the dataset's splits_final.json or, without one, of five seeded folds (0 .. 4; fold 0 is the
# default seeded split), in results/<name>-foldN/ and data/sliced-foldN/.
#
# FOLDS="0 1 2 3 4": cross-validation (docs/cross-validation.md): every fold trained as FOLD=N
# would train it, then one report over every case, each from its own fold, in
# results/<name>-cv/ (-cv-3d with DIM=3). predict-new INPUT=DIR OUTPUT=DIR TRAINING=<training>:
# its networks (every fold's) on new scans (docs/predict-new.md).
#
# DIM=3: the same chain in 3D (docs/3d.md): whole volumes resampled to the median spacing, with
# their distance maps, in data/prepared-3d/<name>/ (plan.json: normalisation, spacing, patch,
# network) -> patch trainings of a 3D U-Net shaped by the spacing -> sliding-window validation
# and predictions -> results/<name>-3d/. DIM=2 (slices, as the paper) is the default.

ifeq ($(DATA),synthetic)
DATASET ?= data/nnunet-synthetic/Dataset990_StandIn
LINEAGE := lineage/nnunet-synthetic.lineage
GENERATE = $(PY) $(CFLAGS) preprocess/synthetic.py --dataset nnunet --dest $(dir $(DATASET))
else ifeq ($(DATA),synthetic-msd)
DATASET ?= data/msd-synthetic/Task990_StandIn
LINEAGE := lineage/msd-synthetic.lineage
GENERATE = $(PY) $(CFLAGS) preprocess/synthetic.py --dataset msd --dest $(dir $(DATASET))
else ifneq ($(DATA),)
$(error DATA=$(DATA) is not known: leave DATA unset and give DATASET=path/to/dataset, or use DATA=synthetic (the stand-in, nnU-Net v2 layout) or DATA=synthetic-msd (its Decathlon copy))
else ifeq ($(DATASET),)
$(error DATASET=path/to/dataset is needed: a folder holding the dataset.json of an nnU-Net v2 dataset or a Decathlon task (or DATA=synthetic for the stand-in))
endif

# The dataset's path goes into Make's rules and the recipes' shell lines as it is: a space, a ':'
# that Make reads as a rule, a '$' it expands, a '%' of its patterns, or a character the shell
# reads (# ; & | < > ( ) [ ] { } * ? ! ' " ` \ ,) would be misread, so each is refused here.
# $(value ...) sees the path as typed, before Make expands a '$' in it.
UNSAFE_CHARS := : $$ % \# ; & | < > ( ) [ ] { } * ? ! ' " ` \ ,
UNSAFE := $(strip $(foreach c,$(UNSAFE_CHARS),$(if $(findstring $(c),$(value DATASET)),$(c))))
ifneq ($(words $(DATASET)),1)
$(error DATASET="$(value DATASET)": a path with spaces cannot go through Make; move or link the dataset to a path without them)
else ifneq ($(UNSAFE),)
$(error DATASET="$(value DATASET)": a path with the character(s) $(UNSAFE) cannot go through Make; move or link the dataset to a path without them)
endif
override DATASET := $(patsubst %/,%,$(DATASET))
DATA_NAME := $(notdir $(DATASET))
LINEAGE ?= lineage/$(DATA_NAME).lineage
FOLD ?= 0
DIM ?= 2
ifeq ($(filter 2 3,$(DIM)),)
$(error DIM=$(DIM): expected 2 (2D slices, the default) or 3 (3D patches of whole volumes))
endif
# The folders' suffixes: -foldN for fold N (none for fold 0), then -3d in 3D (none in 2D).
fold_suffix = $(if $(filter-out 0,$(1)),-fold$(1))
DIM_SUFFIX := $(if $(filter 3,$(DIM)),-3d)
OTHER_SUFFIX := $(if $(filter 3,$(DIM)),,-3d)
SUFFIX := $(call fold_suffix,$(FOLD))$(DIM_SUFFIX)
ifeq ($(DIM),3)
ROOT := data/prepared$(SUFFIX)
SLICER := preprocess/prepare_3d.py
else
ROOT := data/sliced$(SUFFIX)
SLICER := preprocess/slice_nnunet.py
endif
SOURCE_DIR := $(DATASET)
# RETAIN=0: a fifth of the cases for validation (without splits_final.json).
RETAIN ?= 0
G_RGX := (.+_\d+)_\d+

# The lineage check runs on every make (FORCE); its stamp changes only when the pinned files do.
CHECKED := data/sliced/$(DATA_NAME).checked
UNPACKED := $(CHECKED)
VARS := data/sliced/$(DATA_NAME).mk

# K, MODALITIES, ALL_IDC, FG_IDC, METRIC_AXIS from dataset.json, once its files are checked
# (made by the rule below, then Make reads this file again). predict-new alone reads the runs
# only: it needs neither the dataset nor its lineage (given with other goals, they do).
ifneq ($(filter-out predict-new,$(MAKECMDGOALS))$(if $(MAKECMDGOALS),,all),)
include $(VARS)
endif

# The slicer's own arguments; SLICE_OPT (the user's) comes after them and wins.
SLICER_ARGS := --fold $(FOLD)
ifeq ($(DIM),3)
# 3D: nnU-Net's 3d_fullres settings (Isensee et al., 2021): its plain U-Net shaped by the plan,
# batches of 2 patches, 250 batches per epoch, SGD-free Adam as the 2D chain. PATCH="X Y Z"
# replaces the plan's patch (the network is planned for it).
NET ?= PlainUNet3D
PATCH ?=
SLICER_ARGS += $(if $(PATCH),--patch $(PATCH))
ifeq ($(DATA),)
EPC ?= 100
BS ?= 2
ITERS ?= 250
else
# Sized for a 2-core CPU: patches of 32 x 8 x 32 voxels, smaller than the volumes (about
# 56 x 12 x 46), so that their maps need the structures outside them; a network of width 8,
# 20 epochs of 25 batches.
PATCH := $(or $(PATCH),32 8 32)
EPC ?= 20
BS ?= 2
ITERS ?= 25
LR ?= 3e-3
NET_PARAMS ?= $(if $(filter PlainUNet3D,$(NET)),{'features': 8},{})
endif
else ifeq ($(DATA),)
EPC ?= 100
else
# Sized for a 2-core CPU: slices at 64 x 64, a UNet of width 8, 10 epochs of batches of 4 at a
# learning rate of 5e-3.
SLICER_ARGS += --shape 64 64
EPC ?= 10
BS ?= 4
LR ?= 5e-3
NET_PARAMS ?= $(if $(filter UNet,$(NET)),{'nG': 8},{})
endif

# The trainings, from the number of labels K.
B_DATA = [('in_npy', tensor_transform, False), ('gt_npy', gt_transform, True)]
GT := ('gt_npy', gt_transform, True)
ALL = {'idc': [$(ALL_IDC)]}
FG = {'idc': [$(FG_IDC)]}
GDL = ('GeneralizedDice', $(ALL), 1)
STEAL = --scheduler StealWeight --scheduler_params "{'to_steal': 0.01}"

# The distance maps: of each 2D slice, computed by the loader; in 3D, always the whole
# volume's (precomputed at its spacing), cut out with each patch.
ifeq ($(DIM),3)
DIST := ('3d_distmap', raw_npy_transform, False)
DEFINED := ce gdl gdl_surface_steal boundary
else
DIST := ('gt_npy', dist_map_transform, False)
DEFINED := ce gdl gdl_surface_steal gdl_3d_surface_steal boundary
endif
ce_LOSSES = [('CrossEntropy', $(ALL), 1)]
ce_FOLDERS = $(B_DATA)+[$(GT)]
gdl_LOSSES = [$(GDL)]
gdl_FOLDERS = $(B_DATA)+[$(GT)]
# The boundary loss on the foreground classes, its weight raised by the steal schedule.
gdl_surface_steal_LOSSES = [$(GDL), ('SurfaceLoss', $(FG), 0.01)]
gdl_surface_steal_FOLDERS = $(B_DATA)+[$(GT), $(DIST)]
gdl_surface_steal_OPT = $(STEAL)
# 2D: the slices of the 3D maps computed on the whole volume.
gdl_3d_surface_steal_LOSSES = $(gdl_surface_steal_LOSSES)
gdl_3d_surface_steal_FOLDERS = $(B_DATA)+[$(GT), ('3d_distmap', raw_npy_transform, False)]
gdl_3d_surface_steal_OPT = $(STEAL)
# The boundary loss alone on every class, as the original's ACDC training.
boundary_LOSSES = [('BoundaryLoss', $(ALL), 1)]
boundary_FOLDERS = $(B_DATA)+[$(DIST)]

ifeq ($(DIM),3)
TRAIN_OPT = --dimensions 3 --compute_3d_dice --schedule --iterations $(ITERS) \
	$(if $(PATCH),--patch_size $(PATCH))
# The 3D graph: adjacencies of the training volumes in 3D neighbourhoods.
GRAPH_OPT = $(SLICED)/train/gt_npy $(@D) $(K) --pattern '*.npy' --dims 3
# Predictions by sliding windows over whole volumes (2D: slice by slice); MIRROR=1 adds
# test-time mirroring along the three axes.
PREDICT_MODULE := boundary_loss.inference.predict3d
MIRROR ?=
PREDICT_OPT := $(if $(MIRROR),--mirror)
else
TRAIN_OPT = --use_spacing --compute_3d_dice --in_memory --schedule
PREDICT_MODULE := boundary_loss.inference.predict
endif
CURVES := tra_loss val_loss val_dice val_3d_dsc val_3d_hd95
BOXPLOTS := val_3d_dsc
REPORT_METRICS := val_dice val_3d_dsc val_3d_hausdorff val_3d_hd95

ifneq ($(filter-out 1 2,$(K)),)
# Three classes or more: the adjacency constraint (Ganaye et al., MICCAI 2018), its graph
# extracted from the training labels; every training counts its forbidden adjacencies.
DEFINED += ce_adj boundary_adj
ADJ_LOSS = ('NonAdjacencyLoss', {'idc': [$(ALL_IDC)], 'graph': '$(GRAPH)'}, 1)
LAMBDA = --scheduler LambdaController --scheduler_params "{'reference': 0}"
ce_adj_LOSSES = [('CrossEntropy', $(ALL), 1), $(ADJ_LOSS)]
ce_adj_FOLDERS = $(B_DATA)+[$(GT), $(GT)]
ce_adj_OPT = $(LAMBDA)
boundary_adj_LOSSES = [('BoundaryLoss', $(ALL), 1), $(ADJ_LOSS)]
boundary_adj_FOLDERS = $(B_DATA)+[$(DIST), $(GT)]
boundary_adj_OPT = $(LAMBDA)
TRAIN_OPT += --adjacency_graph $(GRAPH)
TRAIN_DEPS = $(GRAPH)
CURVES += val_adjacency
REPORT_METRICS += val_adjacency
endif

# TRAININGS chooses among the defined trainings (default: all of them).
TRAININGS ?= $(DEFINED)
UNKNOWN := $(filter-out $(DEFINED),$(TRAININGS))
ifneq ($(and $(K),$(UNKNOWN)),)
$(error TRAININGS: $(UNKNOWN) not defined for $(DATA_NAME) (K=$(K)); defined: $(DEFINED))
endif
TRN := $(TRAININGS)
# The training every other one is compared with, patient by patient, in the report.
BASELINE ?= gdl

PREDICTIONS = $(addprefix $(RESULTS)/predictions/,$(RUNS))
PRODUCTS = $(PREDICTIONS)
REPORT_OPT = --predictions $(PREDICTIONS)

# The results folder of fold $(1) in this dimension ($(2): -3d or empty), as FOLD=N names it.
fold_results = results/$(DATA_NAME)$(call fold_suffix,$(1))$(2)
# 2D against 3D: when the other dimension's results of this fold hold finished runs, the report
# pairs the trainings of both case by case (and is made again when they change).
PAIR := $(call fold_results,$(FOLD),$(OTHER_SUFFIX))
# (best_epoch.txt of finished runs: a training's <run>_tmp holds one too)
finished = $(filter-out %_tmp/best_epoch.txt,$(wildcard $(addsuffix /*/best_epoch.txt,$(1))))
PAIR_RUNS := $(call finished,$(PAIR))
REPORT_OPT += $(if $(PAIR_RUNS),--pair $(PAIR))

include common.make

# The rules of this dataset, after common.make (their targets use its paths).
.PHONY: FORCE predict lineage crossval folds predict-new
FORCE:
lineage: $(CHECKED)
$(REPORT): $(PAIR_RUNS)

# Cross-validation: FOLDS="0 1 2 3 4" trains every fold with the settings of this command line
# (each `make FOLD=N train`, so each fold is buildable and resumable on its own), then writes the
# report over every case, each at its own fold's best.pt, and packs it with the folds' runs.
FOLDS ?=
THIS_MAKEFILE := $(firstword $(MAKEFILE_LIST))
CV := results/$(DATA_NAME)-cv$(DIM_SUFFIX)
CV_REPORT := $(CV)/report.md
CV_FOLDERS := $(foreach f,$(FOLDS),$(call fold_results,$(f),$(DIM_SUFFIX)))
CV_RUN_DIRS := $(foreach d,$(CV_FOLDERS),$(addprefix $(d)/,$(RUNS)))
CV_PAIR := $(foreach f,$(FOLDS),$(call fold_results,$(f),$(OTHER_SUFFIX)))
CV_PAIR_MISSING := $(if $(FOLDS),$(strip $(foreach d,$(CV_PAIR),$(if $(call finished,$(d)),,$(d)))),none)
CV_PACK := archives/$(REPO)-$(DATE)-$(HASH)-$(HOST)-$(DATA_NAME)-cv$(DIM_SUFFIX).tar.gz
ifneq ($(FOLDS),)
.DEFAULT_GOAL := crossval
ifneq ($(words $(FOLDS)),$(words $(sort $(FOLDS))))
$(error FOLDS="$(FOLDS)": a fold is named twice)
endif
endif

# The sub-makes skip the lineage check: this make has just run it (once, not once per fold).
crossval: folds
	$(MAKE) -f $(THIS_MAKEFILE) LINEAGE_CHECKED=1 $(CV_PACK)
folds:
	$(if $(FOLDS),,$(error crossval: FOLDS="0 1 2 3 4" is needed (the folds to train)))
	$(foreach f,$(FOLDS),$(MAKE) -f $(THIS_MAKEFILE) LINEAGE_CHECKED=1 FOLD=$(f) FOLDS= train && ) true

# A fold's runs are made by its own make (crossval, or FOLD=N); the report only reads them,
# through the best_epoch.txt a finished run holds: no rule here trains one, fold 0's included.
CV_RUN_ENDS := $(addsuffix /best_epoch.txt,$(CV_RUN_DIRS))
$(CV_RUN_ENDS):
	@echo "$(@D): missing; train the folds first: make -f $(THIS_MAKEFILE) FOLDS=\"$(FOLDS)\"" >&2
	@exit 1

$(CV_REPORT): $(CV_RUN_ENDS) $(if $(CV_PAIR_MISSING),,$(call finished,$(CV_PAIR))) | $(PY_DEPS)
	$(PY) $(CFLAGS) -m boundary_loss.report.crossval --folds $(CV_FOLDERS) --dest $@ --html \
		--columns $(METRIC_AXIS) --trainings $(TRN) $(if $(filter $(BASELINE),$(TRN)),--baseline $(BASELINE)) \
		$(if $(CV_PAIR_MISSING),,--pair $(CV_PAIR)) \
		--title "$(DATA_NAME)$(DIM_SUFFIX): cross-validation over folds $(FOLDS), $(NET), $(EPC) epochs"

$(CV)/report.html $(CV)/per_case.csv: $(CV_REPORT)

$(CV_PACK): $(CV_RUN_ENDS) $(CV_REPORT) $(CV)/report.html $(CV)/per_case.csv
	$(call pack_recipe,$(CV_RUN_DIRS) $(filter-out $(CV_RUN_ENDS),$^))

# New scans: the networks of TRAINING, of every fold trained in this dimension (FOLDS: those
# folds), ensembled by averaging their probabilities; INPUT holds <case>_<XXXX>.nii.gz images,
# OUTPUT is a new folder (or an earlier output of predict-new).
TRAINING ?=
INPUT ?=
OUTPUT ?=
# The folds' results folders: those of FOLDS, else every one of this dimension.
NEW_FOLDERS := $(if $(FOLDS),$(CV_FOLDERS),results/$(DATA_NAME)$(DIM_SUFFIX) $(if $(DIM_SUFFIX),\
	$(wildcard results/$(DATA_NAME)-fold*-3d),$(filter-out %-3d,$(wildcard results/$(DATA_NAME)-fold*))))
# The runs of TRAINING in a folder that hold a best.pt: <training>/ and every
# <training>-seed<N>/, or with SEEDS those seeds' runs only (a training still running, in
# <run>_tmp/, never joins).
NEW_NAMES := $(if $(SEEDS),$(addprefix $(TRAINING)-seed,$(SEEDS)),$(TRAINING) $(TRAINING)-seed*)
trained = $(patsubst %/best.pt,%,$(filter-out %_tmp/best.pt,\
	$(wildcard $(addprefix $(1)/,$(addsuffix /best.pt,$(NEW_NAMES))))))
NEW_RUNS := $(foreach d,$(NEW_FOLDERS),$(call trained,$(d)))
TRAINED_HERE = $(sort $(filter-out %_tmp,$(foreach d,$(NEW_FOLDERS),$(notdir $(patsubst %/best.pt,%,$(wildcard $(d)/*/best.pt))))))
NEW_MISSING := $(if $(FOLDS),$(foreach d,$(NEW_FOLDERS),$(if $(call trained,$(d)),,$(d))))

predict-new: | $(PY_DEPS)
	$(if $(TRAINING),,$(error predict-new: TRAINING=<training> is needed, the one whose networks predict (trained here: $(or $(TRAINED_HERE),none))))
	$(if $(and $(INPUT),$(OUTPUT)),,$(error predict-new: INPUT=<folder of <case>_<XXXX>.nii.gz images> and OUTPUT=<new folder> are needed))
	$(if $(NEW_MISSING),$(error predict-new: no trained $(TRAINING) in $(NEW_MISSING) (train that fold first, or leave it out of FOLDS)))
	$(if $(NEW_RUNS),,$(error predict-new: no trained $(TRAINING) in results/$(DATA_NAME)*$(DIM_SUFFIX)/ (train it first)))
	$(PY) $(CFLAGS) -m boundary_loss.inference.predict --run $(NEW_RUNS) --input $(INPUT) \
		--output $(OUTPUT) $(PREDICT_OPT)

# Checked on every make (FORCE), but not again in the sub-makes of a cross-validation
# (LINEAGE_CHECKED=1, set by its rules above).
CHECK_EVERY_TIME := $(if $(LINEAGE_CHECKED),,FORCE)
ifeq ($(DATA),)
$(CHECKED): $(CHECK_EVERY_TIME) | $(PY_DEPS)
	$(PY) $(CFLAGS) preprocess/dataset_lineage.py $(DATASET) $(LINEAGE) --stamp $@ $(if $(REPIN),--repin)
else
# The stand-in: generated when missing or when it fails its pinned md5 sums (it is deterministic).
$(CHECKED): $(CHECK_EVERY_TIME) | $(PY_DEPS)
	@$(PY) $(CFLAGS) preprocess/dataset_lineage.py --status $(DATASET) $(LINEAGE) || { \
		echo "$(DATASET): missing or not as pinned in $(LINEAGE): generating it (preprocess/synthetic.py)"; \
		$(GENERATE); }
	$(PY) $(CFLAGS) preprocess/dataset_lineage.py $(DATASET) $(LINEAGE) --stamp $@
endif

$(VARS): $(CHECKED) | $(PY_DEPS)
	$(PY) $(CFLAGS) preprocess/nnunet_format.py $(DATASET) > $@_tmp
	mv $@_tmp $@

# Predictions: each training's best.pt -> one NIfTI per validation and test case.
predict: $(PREDICTIONS)

$(RESULTS)/predictions/%: $(RESULTS)/% $(SLICED) | $(PY_DEPS)
	$(PY) $(CFLAGS) -m $(PREDICT_MODULE) --run $< --sliced $(SLICED) --source $(DATASET) \
		--lineage $(LINEAGE) --dest $@ $(PREDICT_OPT)
