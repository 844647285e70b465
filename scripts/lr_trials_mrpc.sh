#!/usr/bin/env bash
# Learning-rate trials for one method of the issue-9 study: its vanilla cell (mask=none) of
# experiment=methods_mrpc at each given rate, one single-thread process, run folders under
# results/runs-lr-trials (git-ignored; snapshot the records into results/study/minilm-l6-lr-trials).
#   nohup scripts/lr_trials_mrpc.sh prefix 1e-3 3e-4 > /tmp/lr-prefix.log 2>&1 &
# Resumable like every sweep: a complete trial is skipped on a rerun.
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 2 ] || { echo "usage: $0 PAIR LR [LR ...]   (PAIR: a file of configs/pair/)" >&2; exit 2; }
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
FT=${FISHTUNE:-.venv/bin/fishtune}
pair=$1; shift
lrs=$(IFS=,; echo "$*")
exec "$FT" run -m experiment=methods_mrpc "+pair=$pair" mask=none "train.lr=$lrs" runs_root=results/runs-lr-trials
