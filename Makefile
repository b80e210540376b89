# stoker: every target sets up .venv first (idempotent), then runs one package's __main__.
# Variables (all optional): see README.md, "Make targets and variables".
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.stoker-installed
export TF_USE_LEGACY_KERAS := 1
export VERBOSE ?=
export TF_CPP_MIN_LOG_LEVEL ?= $(if $(filter-out 0,$(VERBOSE)),1,3)  # 3 hides the CPU-only CUDA factory errors; VERBOSE=1 shows them
export PYTHONPATH := $(CURDIR)

HOROVOD_ENV := HOROVOD_WITH_TENSORFLOW=1 HOROVOD_WITH_GLOO=1 HOROVOD_WITHOUT_MPI=1 HOROVOD_WITHOUT_PYTORCH=1 \
	HOROVOD_WITHOUT_MXNET=1 HOROVOD_CPU_OPERATIONS=GLOO MAKEFLAGS=-j2 CMAKE=/usr/bin/cmake

# make-line variables passed to python as KEY=value (empty ones are left out)
VARS := DATASET DATA_DIR PIPELINE STRATEGY DEVICES NP HOSTS STAGES MICROBATCHES REMAT TPU EPOCHS BATCH \
	STEPS STEPS_PER_LOOP LR MODEL RUN SEED MIXED_PRECISION DETERMINISTIC DATA_SERVICE CONFIG SHARDS RUNNER \
	ELASTIC MIN_NP MAX_NP DISCOVERY \
	SOURCE NAME LABEL FEATURE
ARGS = $(foreach v,$(VARS),$(if $($(v)),'$(v)=$($(v))'))  # quoted: SOURCE='dir/*.csv' reaches python unglobbed
SET ?=
BEAM_ARGS ?=
# make export / make predict (python -m serving): their own variables, to serve.* keys (serving/options.py)
SERVE_VARS := RUN FORMAT QUANTIZE STEP SOURCE OUTPUT RUNNER
SERVE_ARGS = $(foreach v,$(SERVE_VARS),$(if $($(v)),'$(v)=$($(v))'))

.PHONY: setup train prepare validate datasets export predict test test-kills test-elastic test-fast lint format profile bench tensorboard data-service clean help

help:  ## list targets
	@grep -E '^[a-z-]+:.*##' Makefile | sed 's/:.*##/\t/'

setup: $(STAMP)  ## create .venv and install everything (idempotent)

$(STAMP): setup.py
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip wheel "setuptools>=69,<81"  # TensorBoard 2.16 needs pkg_resources
	$(PIP) install --quiet -e ".[test,dali]"
	$(HOROVOD_ENV) $(PIP) install --quiet --no-build-isolation "horovod==0.28.1"
	$(PIP) install --quiet --no-build-isolation "nvidia-dali-tf-plugin-cuda120==2.4.0"
	$(PIP) install --quiet "torch==2.13.0"
	@# Every package imports (their import-time chatter is shown only when one fails).
	$(PY) -W ignore::FutureWarning -c "import tensorflow, tf_keras, tensorflow_io, apache_beam, \
	  tensorflow_data_validation, horovod.tensorflow, nvidia.dali, torch" 2>$(VENV)/imports.log || \
	  { cat $(VENV)/imports.log; exit 1; }
	@touch $(STAMP)

train: setup  ## train on DATASET (prepared first if missing); writes runs/$(RUN)/
	$(PY) -m training $(ARGS) $(if $(SET),--set "$(SET)")

prepare: setup  ## write DATASET's files with its Beam job (RUNNER=, BEAM_ARGS=, SHARDS=)
	$(PY) -m ingest prepare $(ARGS) $(if $(SET),--set "$(SET)") $(if $(BEAM_ARGS),--beam-args "$(BEAM_ARGS)")

validate: setup  ## check DATASET's files, or new data SOURCE=, against its schema.pbtxt (TFDV); one line per anomaly
	$(PY) -m ingest validate $(ARGS) $(if $(SET),--set "$(SET)") $(if $(BEAM_ARGS),--beam-args "$(BEAM_ARGS)")

datasets: setup  ## list registered datasets (built-ins and plug-ins)
	$(PY) -m ingest datasets $(ARGS)

export: setup  ## SavedModel of RUN (its dataset's parse and preprocess inside) in runs/$(RUN)/export/<step>/; FORMAT=tflite QUANTIZE=
	$(PY) -m serving export $(SERVE_ARGS) $(if $(SET),--set "$(SET)")

predict: setup  ## batch inference over SOURCE= with RUN's export (Beam RunInference; RUNNER=, BEAM_ARGS=)
	$(PY) -m serving predict $(SERVE_ARGS) $(if $(SET),--set "$(SET)") $(if $(BEAM_ARGS),--beam-args "$(BEAM_ARGS)")

profile: setup  ## profile input vs compute for the same variables as train
	$(PY) -m profiles $(ARGS) $(if $(SET),--set "$(SET)")

bench: setup  ## ingestion benchmarks (QUICK=1 for a smoke run, SUITE="auto decode" for some); writes benchmarks/results/
	$(PY) -m benchmarks $(if $(QUICK),--quick) $(if $(DATASET),--dataset $(DATASET)) $(foreach s,$(SUITE),--suite $(s))

data-service: setup  ## run a tf.data service dispatcher and WORKERS workers on 127.0.0.1
	$(PY) -m ingest service $(if $(WORKERS),--workers $(WORKERS))

tensorboard: setup  ## TensorBoard on runs/$(RUN) (or all runs)
	$(VENV)/bin/tensorboard --logdir runs/$(RUN) --host 127.0.0.1

ELASTIC_TESTS := tests/training/test_elastic.py tests/training/test_horovod_elastic.py

test: setup  ## all tests, slow multi-process ones included (the kill matrix is make test-kills, elastic resume make test-elastic)
	$(PY) -m pytest -q --ignore=tests/faults/test_kill_matrix.py $(addprefix --ignore=,$(ELASTIC_TESTS))

test-elastic: setup  ## elastic resume: SIGKILLed runs resumed on other worker counts, Horovod elastic (about 6 minutes)
	$(PY) -m pytest -q $(ELASTIC_TESTS)

test-kills: setup  ## the kill matrix: every kind of run killed KILLS (10) times in each of 4 ways, nothing left behind
	STOKER_KILLS=$(or $(KILLS),10) $(PY) -m pytest -q tests/faults/test_kill_matrix.py

test-fast: setup  ## tests without the slow multi-process ones
	$(PY) -m pytest -q -m "not slow"

lint: setup  ## ruff check and format check
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

format: setup  ## ruff format
	$(VENV)/bin/ruff format . && $(VENV)/bin/ruff check --fix .

clean:  ## remove runs/ and prepared data/ (not .venv)
	rm -rf runs data
