# common.make: every recipe of the pipeline, written once.
#
# Included by the project Makefile (the interpreter and the virtual environment only) and by
# isles.make, wmh.make (through twoclass.make), acdc.make and dataset.make, which set the
# dataset's variables and training list first:
#
#   DATA_NAME     the dataset's name: the sliced data (data/isles) and the results (results/isles)
#   RAW           name of the unpacked folder (data/ISLES)
#   ZIPS          the zips, by their real names; DROP: what unpacking leaves out (fnmatch). A
#                 dataset without zips (dataset.make) sets ROOT, SUFFIX, LINEAGE and UNPACKED (what
#                 the slices are made from) and its rule instead, and SOURCE_DIR (the slicer's input)
#   SLICER        preprocess/slice_<dataset>.py; RETAIN: validation patients; SLICER_ARGS: its
#                 arguments set by the dataset makefile; SLICE_OPT: the user's, after them
#   K MODALITIES METRIC_AXIS G_RGX TRAIN_OPT  passed to main.py
#   TRN           the trainings built by default; EXTRA_TRN: buildable on request
#   <run>_LOSSES <run>_FOLDERS <run>_OPT      each training's --losses, --folders, other flags
#   CURVES BOXPLOTS REPORT_METRICS            the plots (metric names) and the report's metrics
#   PRODUCTS REPORT_OPT   products made from the trainings (their rules in the dataset makefile),
#                         listed in the report with REPORT_OPT and packed in the archive
#
# Every product is built under a temporary name (<target>_tmp, or by the tools themselves) and
# moved into place when complete, and .DELETE_ON_ERROR removes a file whose recipe failed: an
# interrupted `make` never leaves something it would take as finished.

SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DELETE_ON_ERROR:
MAKEFLAGS += --no-builtin-rules

# ---------------------------------------------------------------------------------------------
# Interpreter: the project's .venv, created on first use, or CC=/path/to/python as it is
# ---------------------------------------------------------------------------------------------

PY_BOOT ?= python3
VENV := .venv
# Only a command-line CC counts: a CC=gcc exported by a C toolchain must not be taken for Python.
# PY_DEPS: the runtime requirements; PY_TEST_DEPS: also the test extras (pytest, ruff, medpy).
ifeq ($(origin CC),command line)
PY := $(CC)
PY_DEPS :=
PY_TEST_DEPS :=
else
PY := $(VENV)/bin/python
PY_DEPS := $(VENV)/.installed
PY_TEST_DEPS := $(VENV)/.installed-test
endif

# The pinned requirements, then this repository in editable mode (no dependencies: they are the
# pins), so that the scripts under preprocess/ find the boundary_loss package.
$(VENV)/.installed: requirements.txt pyproject.toml
	$(PY_BOOT) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet -r requirements.txt
	$(VENV)/bin/python -m pip install --quiet --no-deps --editable .
	touch $@

$(VENV)/.installed-test: requirements-test.txt $(VENV)/.installed
	$(VENV)/bin/python -m pip install --quiet -r requirements-test.txt
	touch $@

ifdef DATA_NAME
# ---------------------------------------------------------------------------------------------
# The dataset pipeline
# ---------------------------------------------------------------------------------------------

.DEFAULT_GOAL := all
.PHONY: all data unpack slice graph train plot report pack clean-results

# User variables (command line): EPC BS NET DEBUG=--debug CFLAGS=-O CC DATA=synthetic RESUME=1
# NPROC TORCHRUN_ARGS TRAIN_FLAGS (below)
# CFLAGS: Python's flags (-O); as for CC, only a command-line value counts, so a C toolchain's
# exported CFLAGS (-O2 -g) never reaches the interpreter.
ifneq ($(origin CFLAGS),command line)
CFLAGS :=
endif
NET ?= UNet
BS ?= 8
LR ?= 1e-3
SEED ?= 0
N_AUGMENT ?= 0
NET_PARAMS ?= {}
WORKERS ?= 0
# CPU threads per training (0: one per core); THREADS=1 with make -j on a CPU.
THREADS ?= 0
# Processes per training: NPROC=4 trains on 4 GPUs of this machine with torchrun and
# DistributedDataParallel (BS is per process); TORCHRUN_ARGS for several machines, e.g.
# TORCHRUN_ARGS="--nnodes=2 --node_rank=0 --rdzv_backend=c10d --rdzv_endpoint=host0:29500".
NPROC ?= 1
TORCHRUN_ARGS ?= --standalone
# Extra main.py options for every training, e.g. TRAIN_FLAGS="--bf16 --channels_last --augment".
TRAIN_FLAGS ?=
TRAIN_PY := $(if $(filter-out 1,$(NPROC)),$(PY) $(CFLAGS) -m torch.distributed.run \
	--nproc_per_node=$(NPROC) $(TORCHRUN_ARGS),$(PY) $(CFLAGS))

ifdef ZIPS
# Real data: the zips in data/. DATA=synthetic: generated stand-in zips, and every product in
# folders of their own, so that stand-in results are never mistaken for real ones.
# DATA=synthetic-full: the stand-in cohort at the real sizes, trained with the real settings.
ifneq ($(filter synthetic synthetic-full,$(DATA)),)
SUFFIX := -$(DATA)
ROOT := data/$(DATA_NAME)-$(DATA)
LINEAGE := lineage/$(DATA_NAME)-$(DATA).lineage
SYNTHETIC_SIZE := $(if $(filter synthetic,$(DATA)),quick,full)
else ifeq ($(DATA),)
SUFFIX :=
ROOT := data
LINEAGE := lineage/$(DATA_NAME).lineage
else
$(error DATA=$(DATA) is not known: leave DATA unset for the real zips in data/, or use DATA=synthetic (quick) or DATA=synthetic-full (real sizes))
endif

ZIP_PATHS := $(addprefix $(ROOT)/,$(ZIPS))
UNPACKED := $(ROOT)/$(RAW)
SOURCE_DIR := $(UNPACKED)
endif
SLICED := $(ROOT)/$(DATA_NAME)
RESULTS := results/$(DATA_NAME)$(SUFFIX)
# SEEDS="0 1 2": each training once per seed, in <training>-seed<N>/ (buildable one by one and
# resumable as the others); the report aggregates over seeds and the curves show their spread.
RUNS := $(if $(SEEDS),$(foreach t,$(TRN),$(addprefix $(t)-seed,$(SEEDS))),$(TRN))
TRN_DIRS := $(addprefix $(RESULTS)/,$(RUNS))
EXTRA_DIRS := $(addprefix $(RESULTS)/,$(EXTRA_TRN) \
	$(if $(SEEDS),$(foreach t,$(EXTRA_TRN),$(addprefix $(t)-seed,$(SEEDS)))))
# A run's training and seed: gdl-seed2 -> gdl and 2; gdl -> gdl and $(SEED).
training = $(firstword $(subst -seed, ,$(1)))
run_seed = $(if $(findstring -seed,$(1)),$(lastword $(subst -seed, ,$(1))),$(SEED))
# The report compares every training with BASELINE (set by the dataset makefile), patient by
# patient; PICTURES: contours and GIFs of the predictions.
PICTURES := $(RESULTS)/pictures
PATIENT_CSV := $(RESULTS)/per_patient.csv
CURVE_FILES := $(addprefix $(RESULTS)/,$(addsuffix .png,$(CURVES)))
BOX_FILES := $(addprefix $(RESULTS)/,$(addsuffix _boxplot.png,$(BOXPLOTS)))
PLOT_FILES := $(CURVE_FILES) $(BOX_FILES)
REPORT := $(RESULTS)/report.md
# The adjacency graph of the training labels (Ganaye et al., MICCAI 2018), for the datasets that
# use it (TRAIN_DEPS = $(GRAPH)); kept beside the sliced data, not in it.
GRAPH := $(ROOT)/$(DATA_NAME)_adjacency/graph.csv
# Where its labels are read (a dataset makefile may set it first, e.g. for 3D volumes).
ifndef GRAPH_OPT
GRAPH_OPT = $(SLICED)/train/gt $(@D) $(K) --pattern '*.png'
endif

REPO := $(shell basename "$$(git rev-parse --show-toplevel 2>/dev/null || pwd)")
DATE := $(shell date +%y%m%d)
HASH := $(shell git rev-parse --short HEAD 2>/dev/null || echo nogit)
HOST := $(shell hostname 2>/dev/null || uname -n)
PACK := archives/$(REPO)-$(DATE)-$(HASH)-$(HOST)-$(DATA_NAME)$(SUFFIX).tar.gz
GZIP := $(shell command -v pigz >/dev/null 2>&1 && echo pigz || echo gzip)

all: pack
data: slice
unpack: $(UNPACKED)
slice: $(SLICED)
graph: $(GRAPH)
train: $(TRN_DIRS)
plot: $(PLOT_FILES)
report: $(REPORT)
pack: $(PACK)

ifdef ZIPS
# Zips: generated (DATA=synthetic), or the user's; a missing real zip stops here with where to
# get it and the synthetic alternative.
ifdef SYNTHETIC_SIZE
GENERATE = $(PY) $(CFLAGS) preprocess/synthetic.py --dataset $(DATA_NAME) --dest $(ROOT) --seed 0 \
	--size $(SYNTHETIC_SIZE)
$(ZIP_PATHS) &: | $(PY_DEPS)
	$(GENERATE)
else
$(ZIP_PATHS): | $(PY_DEPS)
	@$(PY) $(CFLAGS) preprocess/verify_lineage.py $(LINEAGE) $(ROOT)
endif

# Unpack only what matches the lineage's md5 sums; the unpacker works in $@_tmp. A real zip that
# fails the check stops here (download it again); generated zips that fail it (cut short,
# edited) are generated again first: the generator is deterministic, so the new ones match.
$(UNPACKED): $(ZIP_PATHS) $(LINEAGE) | $(PY_DEPS)
ifdef SYNTHETIC_SIZE
	@$(PY) $(CFLAGS) preprocess/verify_lineage.py --status $(LINEAGE) $(ROOT) || { \
		echo "$(ROOT): a zip is missing or fails its md5 check against $(LINEAGE):" \
			"generating them again (preprocess/synthetic.py)"; \
		$(GENERATE); }
endif
	$(PY) $(CFLAGS) preprocess/verify_lineage.py $(LINEAGE) $(ROOT)
	$(PY) $(CFLAGS) preprocess/unpack.py $(ZIP_PATHS) --dest $@ --drop $(DROP)
	touch $@
endif

# Slice 3D volumes into 2D png/npy with 3D distance maps; the slicer works in $@_tmp.
$(SLICED): $(UNPACKED) | $(PY_DEPS)
	$(PY) $(CFLAGS) $(SLICER) --source_dir $(SOURCE_DIR) --dest_dir $@ --retain $(RETAIN) --seed $(SEED) \
		--n_augment $(N_AUGMENT) $(SLICER_ARGS) $(SLICE_OPT)
	touch $@

# Class adjacencies of the training split's ground-truth slices (2D neighbourhoods, as the 2D
# networks see them); graph.csv is written last, when graph.png is there.
$(GRAPH): $(SLICED) | $(PY_DEPS)
	$(PY) $(CFLAGS) preprocess/extract_adjacency.py $(GRAPH_OPT)

# One training per loss combination, in $@_tmp; RESUME=1 continues an interrupted one from its
# last.pt instead of starting over.
$(TRN_DIRS) $(EXTRA_DIRS): $(RESULTS)/%: $(SLICED) $(TRAIN_DEPS) | $(PY_DEPS)
	$(if $(RESUME),,rm -rf $@_tmp)
	$(TRAIN_PY) main.py --dataset $(SLICED) --workdir $@_tmp --network $(NET) \
		--net_params "$(NET_PARAMS)" --n_class $(K) --modalities $(MODALITIES) \
		--metric_axis $(METRIC_AXIS) --grp_regex '$(G_RGX)' --n_epoch $(EPC) --batch_size $(BS) \
		--l_rate $(LR) --seed $(call run_seed,$*) --workers $(WORKERS) --threads $(THREADS) \
		$(TRAIN_OPT) $(TRAIN_FLAGS) \
		--losses "$($(call training,$*)_LOSSES)" --folders "$($(call training,$*)_FOLDERS)" \
		$($(call training,$*)_OPT) \
		$(if $(and $(RESUME),$(wildcard $@_tmp/last.pt)),--resume) $(DEBUG)
	rm -rf $@
	mv $@_tmp $@

# Plots of every training: curves of a metric over epochs, box plots at each best epoch.
# --classes applies to Dice and distances (boundary_loss.runfolder.schema says which arrays hold
# classes); losses plot every term, val_adjacency its forbidden pair count.
$(CURVE_FILES): $(RESULTS)/%.png: $(TRN_DIRS) | $(PY_DEPS)
	$(PY) $(CFLAGS) plot.py curves --folders $(TRN_DIRS) --filename $*.npy --dest $@ \
		--classes $(METRIC_AXIS) --title "$(DATA_NAME)$(SUFFIX): $*"

$(BOX_FILES): $(RESULTS)/%_boxplot.png: $(TRN_DIRS) | $(PY_DEPS)
	$(PY) $(CFLAGS) plot.py box --folders $(TRN_DIRS) --filename $*.npy --dest $@ \
		--classes $(METRIC_AXIS) --title "$(DATA_NAME)$(SUFFIX): $* at the best epoch"

# The report: printed, and written as Markdown and HTML with the plots and provenance.
# Pictures of the predictions: best, median and worst patients, and GIFs over the epochs.
$(PICTURES): $(TRN_DIRS) | $(PY_DEPS)
	$(PY) $(CFLAGS) -m boundary_loss.report.pictures --folders $(TRN_DIRS) --dest $@ --classes $(METRIC_AXIS)
	touch $@

$(REPORT): $(TRN_DIRS) $(PLOT_FILES) $(PICTURES) $(PRODUCTS) | $(PY_DEPS)
	$(PY) $(CFLAGS) report.py --folders $(TRN_DIRS) --metrics $(REPORT_METRICS) \
		--columns $(METRIC_AXIS) --dest $@ --html --plots $(PLOT_FILES) $(REPORT_OPT) \
		--patients --pictures $(PICTURES) $(if $(filter $(BASELINE),$(TRN)),--baseline $(BASELINE)) \
		--title "$(DATA_NAME)$(SUFFIX): $(words $(TRN)) trainings, $(NET), $(EPC) epochs"

# The archive: repo-date-hash-host-dataset, read-only. A _tmp left by a failed pack (a full disk)
# is removed first, read-only or not.
# last.pt (the optimizer state for --resume) is left out: best.pt holds the trained weights.
# $(call pack_recipe,FILES): the recipe of every archive (dataset.make's cross-validation one too).
define pack_recipe
mkdir -p $(@D)
rm -f $@_tmp
tar cf - --exclude=last.pt $(1) | $(GZIP) > $@_tmp
chmod a-w $@_tmp
mv $@_tmp $@
endef
$(PACK): $(TRN_DIRS) $(PLOT_FILES) $(PICTURES) $(PRODUCTS) $(REPORT) $(REPORT:.md=.html) \
		$(PATIENT_CSV)
	$(call pack_recipe,$^)

$(REPORT:.md=.html) $(PATIENT_CSV): $(REPORT)

clean-results:
	rm -rf $(RESULTS)

endif
