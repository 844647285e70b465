"""Table 5, cost: per configuration (method × mask), task and device, means over the complete runs."""

from __future__ import annotations

import pandas as pd

from .cells import budget, row_meta

COLUMNS = {  # csv column -> display title
    "runs": "runs",
    "trainable": "trainable",
    "dense": "of which dense",
    "inference": "at inference",
    "peft_total": "candidates",
    "time_fisher_warmup_s": "warm-up s",
    "time_fisher_s": "Fisher s",
    "time_epoch_s": "train s/epoch",
    "time_total_s": "total s",
    "peak_rss_mib": "peak host MiB",
    "peak_gpu_mib": "peak device MiB",
    "mask_storage_kib": "mask KiB",
}


def cost_table(runs: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(csv, shown). Counts: trainable = what the optimizer updates (selected + dense group), of which
    dense = the declared dense group (e.g. UniPELT's gates with `dense_gates`), at inference = the
    method's entries once training-only parts are folded away (prefix tuning's MLP; –: nothing to
    fold), candidates = the mask's candidates. Times are means over seeds in seconds (warm-up and
    Fisher: the mask stage; train s/epoch: the training loop's time divided by the epochs); peak memory: host RSS and the
    peak CUDA allocation of the run; mask storage: what the mask costs during training
    (`mask_storage_bytes`). A total below the sum of its parts (records made before resumed sessions
    added up their wall time) is left empty rather than shown wrong."""
    if runs.empty:
        return pd.DataFrame(), pd.DataFrame()
    parts = runs[["time_fisher_warmup_s", "time_fisher_s", "time_train_s", "time_eval_s"]].astype(float)
    total = runs["time_total_s"].astype(float)
    total = total.where(total >= parts.fillna(0).sum(axis=1) - 1e-3)
    r = runs.assign(time_total_s=total, trainable=budget(runs),
                    peak_rss_mib=runs["peak_rss_bytes"].astype(float) / 2**20,
                    peak_gpu_mib=runs["peak_gpu_bytes"].astype(float) / 2**20,
                    mask_storage_kib=runs["mask_storage_bytes"].astype(float) / 2**10,
                    runs=1)
    keys = ["config", "task", "device"]
    grouped = r.groupby(keys, sort=True)
    table = grouped[["runs"]].sum()
    counts = ["trainable", "dense", "inference", "peft_total"]
    table[counts] = grouped[counts].first().astype("Int64")
    timed = ["time_fisher_warmup_s", "time_fisher_s", "time_epoch_s", "time_total_s", "peak_rss_mib",
             "peak_gpu_mib", "mask_storage_kib"]
    table = table.join(grouped[timed].mean().astype(float).round(2))
    order = {c: i for i, c in enumerate(row_meta(runs, runs.iloc[0:0]).index)}
    table = table.reset_index()
    table = table.sort_values(["config", "task", "device"], key=lambda s: s.map(order) if s.name == "config" else s,
                              kind="stable").set_index(keys)
    shown = table.rename(columns=COLUMNS).astype(object).where(table.notna().values, "–")
    return table, shown.reset_index(level=["task", "device"])
