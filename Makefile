# ctslice: make train | make preprocess | make test | make bench
# The first target run creates .venv and installs ctslice into it (pinned versions: constraints.txt).

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

DATA    ?=
CACHE   ?= cache
WORKERS ?=
ARGS    ?=
RUN     ?=
# train: a new run folder unless RUN is given; evaluate: the latest run unless RUN is given
TRAIN_RUN := $(if $(strip $(RUN)),$(RUN),runs/$(shell date +%Y%m%d-%H%M%S))
EVAL_RUN  := $(if $(strip $(RUN)),$(RUN),$(shell ls -td runs/*/ 2>/dev/null | head -n 1))
DEMO    := data/demo
DEMO_SUBJECTS ?= 12

ifeq ($(strip $(DATA)),)
  PREPROCESS_DATA := $(DEMO)
  PREPROCESS_CONFIG := --config configs/demo.toml
else
  PREPROCESS_DATA := $(DATA)
  PREPROCESS_CONFIG :=
endif
WORKERS_ARG := $(if $(strip $(WORKERS)),--workers $(WORKERS),)

# `make train` without CACHE: the demo cache (built by the preprocess target when ./cache does not exist yet)
# and the demo training settings; with CACHE: that cache and the real job's defaults.
ifeq ($(origin CACHE),file)
  TRAIN_CONFIG := --config configs/demo.toml
  TRAIN_NEEDS_CACHE := $(if $(wildcard $(CACHE)/manifest.json),,yes)
else
  TRAIN_CONFIG :=
  TRAIN_NEEDS_CACHE :=
endif

.PHONY: help venv test preprocess demo-data train evaluate bench bench-gpu clean

help:
	@echo "make preprocess [DATA=/path/to/dataset] [CACHE=cache] [WORKERS=N] [ARGS='--size 256 ...']"
	@echo "                  without DATA: generates the synthetic demo dataset in $(DEMO) first"
	@echo "make train [CACHE=cache] [RUN=runs/<time>] [ARGS='--epochs 5 ...']"
	@echo "                  without CACHE: builds the demo cache first (if ./cache is missing), demo settings"
	@echo "make evaluate [RUN=runs/x] [ARGS='--split test --save-predictions']"
	@echo "                  score RUN's best checkpoint on its cache's val split (default: the latest run)"
	@echo "make test [TEST_WORKERS=2]  run the test suite in 2 processes (and print its ten slowest tests)"
	@echo "make bench        preprocessing, incremental-rebuild, scale, loader, training, metrics and predict benchmarks"
	@echo "make bench-gpu     on a CUDA machine: training speed of the real model at 512x512 (one table, < 5 min)"
	@echo "make clean        remove the demo data, the cache and benchmark outputs (keeps .venv)"

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

# Two pytest processes (pytest-xdist; a file's tests stay together, so its module fixtures are built once): the
# suite is mostly single-threaded, so on 2 cores this halves it. TEST_WORKERS=0 runs it in one process.
TEST_WORKERS ?= 2
test: $(STAMP)
	$(BIN)/python -m pytest -q --durations=10 $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadfile)

$(DEMO)/meta.csv: | $(STAMP)
	$(BIN)/ctslice demo-data $(DEMO) --subjects $(DEMO_SUBJECTS)

demo-data: $(DEMO)/meta.csv

preprocess: $(STAMP) $(if $(strip $(DATA)),,$(DEMO)/meta.csv)
	$(BIN)/ctslice preprocess $(PREPROCESS_DATA) --cache $(CACHE) $(PREPROCESS_CONFIG) $(WORKERS_ARG) $(ARGS)

evaluate: $(STAMP)
	@test -n "$(EVAL_RUN)" || { echo "no run under runs/: train first, or give RUN=path/to/run"; exit 2; }
	$(BIN)/ctslice evaluate --checkpoint $(EVAL_RUN:%/=%)/checkpoint_best.pth $(ARGS)

train: $(STAMP)
	$(if $(TRAIN_NEEDS_CACHE),$(MAKE) preprocess ARGS=)
	$(BIN)/ctslice train --cache $(CACHE) --out $(TRAIN_RUN) $(TRAIN_CONFIG) $(ARGS)

bench: $(STAMP)
	$(BIN)/ctslice bench preprocess
	$(BIN)/ctslice bench incremental
	$(BIN)/ctslice bench scale --subjects 1000,5000
	$(BIN)/ctslice bench loader
	$(BIN)/ctslice bench store
	$(BIN)/ctslice bench train
	$(BIN)/ctslice bench metrics
	$(BIN)/ctslice bench predict

# The GPU speed check: the real model (1 input, 118 outputs) at 512x512, batch 16, bf16, channels_last (the
# trainer's CUDA defaults), fed by 4 (the default), 8 and 16 loader workers and from GPU memory, compiled too.
bench-gpu: $(STAMP)
	$(BIN)/ctslice bench train --device cuda --size 512 --batch-size 16 --workers 4,8,16 --classes 118 --compile \
	  --steps 50 --json bench-out/bench-gpu.json

clean:
	rm -rf $(DEMO) $(CACHE) bench-out
