"""Rows and cells shared by every table: row labels, row order, per-cell aggregation and formatting.

A *row* is one comparable config without its task (`row_digest`); its label is
`model / method tag / mask tag`, plus `[key=value, ...]` for the keys that differ when rows of
different configs share those tags. A *cell* is a row on one task: the mean and sample std over
the seeds of its complete runs, their number, and the runs that did not give a result (failed,
diverged) or collapsed to the majority class (`records.py`).
"""

from __future__ import annotations

import math

import pandas as pd

GLUE_ORDER = ("cola", "sst2", "mrpc", "qqp", "stsb", "mnli", "qnli", "rte", "wnli")
METHOD_ORDER = ("lora", "dora", "adapter_pfeiffer", "adapter_houlsby", "adapter_parallel", "prefix", "unipelt", "full")
KIND_ORDER = ("vanilla", "fish", "random", "reverse")
# Each task's metrics in the order the GLUE papers print them, and their short column names.
TASK_METRICS = {
    "cola": ("matthews",), "sst2": ("accuracy",), "mrpc": ("f1", "accuracy"), "qqp": ("f1", "accuracy"),
    "stsb": ("pearson", "spearman"), "mnli": ("accuracy_matched", "accuracy_mismatched"),
    "qnli": ("accuracy",), "rte": ("accuracy",), "wnli": ("accuracy",),
}
METRIC_NAMES = {"matthews": "MCC", "accuracy": "acc", "f1": "F1", "pearson": "Pearson", "spearman": "Spearman",
                "accuracy_matched": "m", "accuracy_mismatched": "mm", "score": "score"}
ID_COLUMNS = ["task", "model", "method", "method_tag", "mask", "mask_tag", "seed", "kind", "digest", "row_digest",
              "row_config", "folder"]
CELL_NOTE = ("Cells: mean ± sample std over seeds (n = seeds with a complete run); [k collapsed] = runs (counted in "
             "the mean) whose last-epoch dev score equals the majority-class baseline (regression: predicting the "
             "training mean, score 0; a run that learned little, e.g. an STS-B correlation of 9, is not flagged: "
             "the std shows it); [k failed] / [k diverged] = runs without a result (not in the mean); missing = no "
             "run. Every run is listed in runs_status.md.")


def tasks_in(frame: pd.DataFrame) -> list[str]:
    """Tasks of `frame`, GLUE order first, then any other alphabetically."""
    found = set(frame["task"]) if not frame.empty else set()
    return [t for t in GLUE_ORDER if t in found] + sorted(found - set(GLUE_ORDER))


def task_metrics(task: str, runs: pd.DataFrame) -> list[str]:
    """The metric keys of `task` (its GLUE metrics, else whatever the records hold)."""
    if task in TASK_METRICS:
        return list(TASK_METRICS[task])
    keys = {k for m in runs.loc[runs["task"] == task, "metrics"] for k in m if k != "score"}
    return sorted(keys)


def metric_column(task: str, metric: str) -> str:
    return f"{task} {METRIC_NAMES.get(metric, metric)}"


# --- rows ----------------------------------------------------------------------------------------


def config_label(row: pd.Series) -> str:
    """`model / lora-r16 / fish-k0.5-warmup`: enough to find the configs that made the number."""
    return f"{row['model']} / {row['method_tag']} / {row['mask_tag']}"


def with_labels(*frames: pd.DataFrame) -> list[pd.DataFrame]:
    """Each frame with `config`, its row label: the tags, plus `[key=value, ...]` naming the keys
    that differ when rows of different configs share the tags (never pooled as seeds). The labels
    are computed over all frames together, so a failed run lands in the row of its config."""
    every = pd.concat([f[["model", "method_tag", "mask_tag", "row_digest", "row_config"]] for f in frames
                       if not f.empty], ignore_index=True) if any(not f.empty for f in frames) else pd.DataFrame()
    labels: dict[str, str] = {}
    if not every.empty:
        every = every.drop_duplicates("row_digest")
        base = every.apply(config_label, axis=1)
        for _, idx in base.groupby(base).groups.items():
            group = every.loc[idx]
            if len(group) == 1:
                labels[group["row_digest"].iloc[0]] = base[idx[0]]
                continue
            configs = dict(zip(group["row_digest"], group["row_config"]))
            keys = sorted({k for c in configs.values() for k in c})
            differ = [k for k in keys if len({repr(c.get(k)) for c in configs.values()}) > 1]
            short = _short_names(differ)
            named = {digest: [f"{short[k]}={_fmt_value(config.get(k))}" for k in differ]
                     for digest, config in configs.items()}
            printed = [", ".join(parts) for parts in named.values()]
            for digest, parts in named.items():
                if printed.count(", ".join(parts)) > 1:  # values that print alike (2 and 2.0): never one row
                    parts = parts + [f"digest={digest[:8]}"]
                labels[digest] = f"{base[idx[0]]} [" + ", ".join(parts) + "]"
    return [f.assign(config=f["row_digest"].map(labels)) if not f.empty else f.assign(config=pd.Series(dtype=str))
            for f in frames]


def _short_names(keys: list[str]) -> dict[str, str]:
    """`train.lr` -> `lr` unless two differing keys share the last component."""
    leaves = [k.rsplit(".", 1)[-1] for k in keys]
    return {k: leaf if leaves.count(leaf) == 1 else k for k, leaf in zip(keys, leaves)}


def _fmt_value(value: object) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def budget(runs: pd.DataFrame) -> pd.Series:
    """Optimizer-updated method entries of each run: the selected ones plus the dense group (the head,
    the same model's on both sides of a comparison, is left out)."""
    return runs["trainable"] + runs["dense"]


def row_meta(runs: pd.DataFrame, others: pd.DataFrame) -> pd.DataFrame:
    """Per row label: model, method, tags, kind, budget, % of the backbone, live budget, in table order."""
    columns = ["config", "model", "method", "method_tag", "mask_tag", "kind"]
    every = pd.concat([f[columns] for f in (runs, others) if not f.empty], ignore_index=True)
    meta = every.drop_duplicates("config").set_index("config")
    if not runs.empty:
        r = runs.assign(budget=budget(runs))
        meta["trainable"] = r.groupby("config")["budget"].agg(_distinct)
        meta["live"] = r.assign(live=r["live"] + r["dense"]).groupby("config")["live"].agg(_distinct)
        meta["backbone_pct"] = r.groupby("config").apply(_backbone_pct, include_groups=False)
    for col in ("trainable", "live", "backbone_pct"):
        if col not in meta:
            meta[col] = "–"
        meta[col] = meta[col].fillna("–")
    order = sorted(meta.index, key=lambda c: _row_key(meta.loc[c], c))
    return meta.loc[order]


def _row_key(meta: pd.Series, label: str) -> tuple:
    method = meta["method"]
    m = METHOD_ORDER.index(method) if method in METHOD_ORDER else len(METHOD_ORDER)
    k = KIND_ORDER.index(meta["kind"]) if meta["kind"] in KIND_ORDER else len(KIND_ORDER)
    return (str(meta["model"]), m, str(method), k, label)


def _distinct(values: pd.Series) -> str:
    """One value, or the distinct values joined (e.g. live counts that differ by task or seed)."""
    found = sorted({int(v) for v in values.dropna()})
    return ",".join(map(str, found)) if found else "–"


def _backbone_pct(group: pd.DataFrame) -> str:
    """Trainable share of the backbone in percent (3 significant digits), where records have it."""
    known = group.dropna(subset=["backbone"])
    if known.empty:
        return "–"
    pcts = sorted({f"{100 * (t + d) / b:.3g}%" for t, d, b in zip(known["trainable"], known["dense"], known["backbone"])
                   if b})
    return ",".join(pcts) if pcts else "–"


# --- cells ---------------------------------------------------------------------------------------


def cell_stats(runs: pd.DataFrame, others: pd.DataFrame, values: dict[str, pd.Series]) -> pd.DataFrame:
    """Long table: one line per (config, task, value name) with mean, std, n and the flagged runs.

    `values` maps a value name (e.g. "score", "f1") to a Series aligned with `runs` (NaN where a
    run has no such value)."""
    lines = []
    status = _status_counts(others)
    keys = set()
    if not runs.empty:
        keys |= set(zip(runs["config"], runs["task"]))
    keys |= set(status)
    grouped = {k: g for k, g in runs.groupby(["config", "task"])} if not runs.empty else {}
    for config, task in sorted(keys):
        group = grouped.get((config, task))
        flags = dict(status.get((config, task), {}))
        if group is not None and group["collapsed"].any():
            flags["collapsed"] = int(group["collapsed"].sum())
        for name, series in values.items():
            vals = series.loc[group.index].dropna() if group is not None else pd.Series(dtype=float)
            n = int(len(vals))
            lines.append({"config": config, "task": task, "value": name,
                          "mean": round(float(vals.mean()), 4) if n else math.nan,
                          "std": round(float(vals.std(ddof=1)), 4) if n > 1 else math.nan, "n": n,
                          "collapsed": flags.get("collapsed", 0), "failed": flags.get("failed", 0),
                          "diverged": flags.get("diverged", 0)})
    return pd.DataFrame(lines, columns=["config", "task", "value", "mean", "std", "n", "collapsed", "failed",
                                        "diverged"])


def _status_counts(others: pd.DataFrame) -> dict[tuple[str, str], dict[str, int]]:
    """Runs without a result per (config, task): failed and diverged (running/interrupted are listed only)."""
    counts: dict[tuple[str, str], dict[str, int]] = {}
    if others.empty:
        return counts
    for (config, task, status), g in others.groupby(["config", "task", "status"]):
        if status in ("failed", "diverged"):
            counts.setdefault((config, task), {})[status] = int(g["seed"].nunique())
    return counts


def format_cell(mean: float, std: float, n: int, *, collapsed: int = 0, failed: int = 0, diverged: int = 0) -> str:
    """`81.74 ± 0.10 (n=2)`, `82.00 (n=1)`, `missing`, with `[1 collapsed, 1 failed]` when any."""
    flags = ", ".join(f"{k} {name}" for k, name in ((collapsed, "collapsed"), (failed, "failed"),
                                                   (diverged, "diverged")) if k)
    if not n:
        text = "–" if flags else "missing"
    elif n == 1 or pd.isna(std):
        text = f"{mean:.2f} (n={n})"
    else:
        text = f"{mean:.2f} ± {std:.2f} (n={n})"
    return f"{text} [{flags}]" if flags else text


def format_row(line: pd.Series) -> str:
    return format_cell(line["mean"], line["std"], int(line["n"]), collapsed=int(line["collapsed"]),
                       failed=int(line["failed"]), diverged=int(line["diverged"]))
