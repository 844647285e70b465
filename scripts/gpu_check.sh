#!/usr/bin/env bash
# scripts/gpu_check.sh — the one script to run on a lent GPU machine (no network there). It runs the
# tests marked `gpu` and the CUDA benchmark (RoBERTa-base, random init: Fisher speed-up over the FISH
# batch-1 loop, masked/vanilla step, a LoRA SST-2 epoch, peak memory), writing everything under $OUT.
#
# Prepare here first (registries reachable): `bash scripts/gpu_wheels.sh` fills .whl/ with the
# wheels that machine lacks (README: "GPU check"); then through the device tool:
#   run(command="bash scripts/gpu_check.sh", carry=[".whl"], timeout_s=540)
# and commit $OUT/*.json under results/bench/. ~5 min of device time once the machine is up.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-results/gpu}
mkdir -p "$OUT"
# The machine has no network and lacks hydra-core, omegaconf, adapters and datasets: without the
# carried wheels nothing below can import, so stop with the one step that fixes it.
if ! compgen -G ".whl/*.whl" > /dev/null || [ ! -d .whl/site ]; then
  echo "gpu_check: no .whl/*.whl and .whl/site/: run 'bash scripts/gpu_wheels.sh' where the registries are reachable, then carry .whl" >&2
  exit 2
fi
# the tested versions, ahead of the image's own (transformers 5.x, hub 1.x)
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
cp -r .whl/site/. /tmp/site/
export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
python3 -m pip install -q --no-deps --no-build-isolation -e . >/dev/null
python3 -c "import torch, transformers, peft, adapters, hydra; print('torch', torch.__version__, 'transformers', transformers.__version__, 'cuda', torch.cuda.is_available())" | tee "$OUT/versions.txt"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 PYTHONUNBUFFERED=1
# Each step's failure is reported and the next still runs: the benchmark is what the check is for.
timeout 180 python3 -m pytest -m gpu -q -p no:cacheprovider tests/test_gpu.py 2>&1 | tee "$OUT/pytest_gpu.txt" || true
timeout 300 python3 -m fishtune.cli bench --device cuda --model roberta-base --out "$OUT" 2>&1 | tee "$OUT/bench.txt"
