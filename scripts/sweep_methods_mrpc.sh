#!/usr/bin/env bash
# The issue-9 table on two cores: `experiment=methods_mrpc` through the joblib launcher, a work queue
# of single-thread cells (each of JOBS workers takes the next cell when its own is done, so no core
# idles while cells remain). The grid runs every vanilla cell, then every FISH cell, then the random
# and reverse controls (mask varies slowest). Resumable: rerun after an interruption, complete cells
# are skipped and partial ones resume from their last checkpoint.
#   nohup setsid scripts/sweep_methods_mrpc.sh &   # its log: results/sweeps-methods.log; JOBS=1 when the other core is busy
# Stop it with `kill -KILL -- -<its pgid>` (the joblib workers outlive a SIGTERM to the launcher);
# the cells resume from their last checkpoint on the next run.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
FT=${FISHTUNE:-.venv/bin/fishtune}
# A checkpoint every 25 steps (~3-6 min of one cell), not only at epoch ends, so a killed session
# loses minutes, not an epoch (execution-only: the run folders stay the same).
exec "$FT" run -m experiment=methods_mrpc hydra/launcher=parallel "hydra.launcher.n_jobs=${JOBS:-2}" \
  train.checkpoint_every=25 "$@" \
  > results/sweeps-methods.log 2>&1
