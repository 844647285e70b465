#!/usr/bin/env python3
"""How much UniPELT's padding sensitivity moves its Fisher, and the mask FISH takes from it.

    OMP_NUM_THREADS=1 python scripts/unipelt_padding.py --out results/bench/unipelt-padding-minilm-mrpc.json

AdapterHub's UniPELT gates average sigmoid(Linear(h)) over every position, padding included, so an
example's gradient depends on the padding its batch gives it. `fishtune run` takes the Fisher on
length-sorted batches of `mask.fisher_batch_size`, each padded to its longest example (hooks and func
cut the rest). This script builds the cell `+pair=unipelt mask=fish task=mrpc seed=1` (MiniLM-L6,
the shipped data) as the runner does, runs its 50-step dense warm-up, and estimates the Fisher twice
on the same `mask.num_samples` examples:

    padded:   the run's own batches (`selection._fisher_batches`), estimator "auto";
    exact:    each example alone (batch 1, no padding at all), estimator "loop".

It writes the maximum relative difference per tensor family (max|padded - exact| / max|exact|), the
relative L2 distance over all entries, and the overlap of the two FISH masks at the cell's budget
(`keep_match`: vanilla UniPELT's count): |padded-mask ∩ exact-mask| / k. A measurement, not a test:
the numbers depend on the data, the seed and the warm-up.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import torch


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="the JSON file to write")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("overrides", nargs="*", help="extra overrides for the cell (e.g. mask.num_samples=256)")
    args = parser.parse_args(argv)

    from fishtune.batching import encode
    from fishtune.config import pair_vanilla_method, validate
    from fishtune.fisher import empirical_fisher
    from fishtune.mask_stage import dense_warmup
    from fishtune.masking import select_mask
    from fishtune.methods import apply_method
    from fishtune.models import load_model, uses_token_type_ids
    from fishtune.plan import compose
    from fishtune.record import environment
    from fishtune.runner import _load_data
    from fishtune.selection import _fisher_batches, _warmup_batches, matched_budget
    from fishtune.tasks import get_task
    from fishtune.train import seed_everything

    cell = ["+pair=unipelt", "mask=fish", "task=mrpc", f"seed={args.seed}", *args.overrides]
    cfg = compose(cell)
    validate(cfg)
    task, device = get_task(cfg.task.name), torch.device("cpu")
    seed_everything(cfg.seed)
    loaded = load_model(cfg.model, task, seed=cfg.seed)
    base = copy.deepcopy(loaded.model)
    setup = apply_method(loaded.model, cfg.method)
    keep = matched_budget(base, cfg.mask, own_dense=setup.count(setup.dense), vanilla=pair_vanilla_method(cfg))
    del base
    train_ex, _ = _load_data(cfg, task)
    data = encode(train_ex, loaded.tokenizer, max_length=cfg.train.max_seq_length,
                  token_type_ids=uses_token_type_ids(loaded.model), regression=task.is_regression)
    pad_id, model, names = loaded.tokenizer.pad_token_id, setup.model, list(setup.method_params)

    start = time.perf_counter()
    warmup = _warmup_batches(data, batch_size=cfg.mask.fisher_batch_size, seed=cfg.seed, pad_id=pad_id, device=device)
    dense_warmup(model, warmup, steps=int(cfg.mask.warmup_steps), lr=float(cfg.train.lr))
    warmup_s = time.perf_counter() - start

    n = int(cfg.mask.num_samples)
    start = time.perf_counter()
    padded = empirical_fisher(model, _fisher_batches(data, cfg.mask, seed=cfg.seed, pad_id=pad_id, device=device),
                              num_samples=n, estimator="auto", param_names=names)
    padded_s = time.perf_counter() - start
    # the same examples, each alone: the batches above, split into single examples and trimmed
    singles = []
    for batch in _fisher_batches(data, cfg.mask, seed=cfg.seed, pad_id=pad_id, device=device):
        for i in range(batch["labels"].shape[0]):
            length = int(batch["attention_mask"][i].sum())
            singles.append({k: (v[i: i + 1, :length] if v.dim() == 2 else v[i: i + 1]) for k, v in batch.items()})
    start = time.perf_counter()
    exact = empirical_fisher(model, singles, num_samples=n, estimator="loop", param_names=names)
    exact_s = time.perf_counter() - start

    families = setup.candidates   # name -> family
    by_family: dict[str, float] = {}
    for name in names:
        rel = float((padded[name] - exact[name]).abs().max() / exact[name].abs().max().clamp_min(1e-30))
        family = families.get(name, "all")
        by_family[family] = max(by_family.get(family, 0.0), rel)
    diff = sum(float(((padded[n_] - exact[n_]) ** 2).sum()) for n_ in names) ** 0.5
    norm = sum(float((exact[n_] ** 2).sum()) for n_ in names) ** 0.5
    masks = [select_mask({n_: f[n_].cpu() for n_ in names}, keep=keep, strategy="fish") for f in (padded, exact)]
    both = sum(int((masks[0][n_] & masks[1][n_]).sum()) for n_ in names)
    result = {
        "what": "UniPELT Fisher on padded run batches vs each example alone (scripts/unipelt_padding.py)",
        "cell": cell, "examples": len(singles), "fisher_batch_size": int(cfg.mask.fisher_batch_size),
        "candidates": sum(padded[n_].numel() for n_ in names), "keep": keep,
        "max_rel_diff_by_family": by_family, "max_rel_diff_label": "max over tensors of max|padded-exact| / max|exact|",
        "rel_l2": diff / norm, "mask_overlap": both / keep, "masks_identical": both == keep,
        "time_s": {"warmup": round(warmup_s, 1), "padded_auto": round(padded_s, 1), "exact_loop": round(exact_s, 1)},
        "torch_threads": torch.get_num_threads(), **environment(device),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: result[k] for k in ("examples", "keep", "max_rel_diff_by_family", "rel_l2", "mask_overlap",
                                               "time_s")}, indent=1))
    return 0


if __name__ == "__main__":
    from fishtune.errors import FishtuneError

    try:
        sys.exit(main())
    except FishtuneError as err:   # a bad override, a model or data that cannot load: one line
        sys.exit(f"unipelt_padding: error: {err}")
