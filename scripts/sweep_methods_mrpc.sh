#!/usr/bin/env bash
# The issue-9 table on two cores: two single-thread processes, each running its half of the methods,
# vanilla and FISH first (one complete pair after another), then the random and reverse controls.
# Resumable: rerun after an interruption and complete cells are skipped, partial ones resume.
#   nohup scripts/sweep_methods_mrpc.sh > sweep.log 2>&1 &        # both halves, one per core
#   nohup scripts/sweep_methods_mrpc.sh a > sweep.log 2>&1 &      # one half only (a or b), e.g. when
#                                                                 # the other core is busy
set -u
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
FT=${FISHTUNE:-.venv/bin/fishtune}
half() {
  $FT run -m experiment=methods_mrpc "+pair=$1" mask=none,fish
  $FT run -m experiment=methods_mrpc "+pair=$1" mask=random,reverse
}
which=${1:-both}
case $which in a|b|both) ;; *) echo "usage: $0 [a|b|both]" >&2; exit 2;; esac
[ "$which" = b ] || half lora,adapter_pfeiffer,adapter_houlsby,dora > results/sweeps-methods-a.log 2>&1 &
[ "$which" = a ] || half adapter_parallel,prefix,unipelt,full > results/sweeps-methods-b.log 2>&1 &
wait
