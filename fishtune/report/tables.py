"""The result tables: Table 1 (methods × GLUE), Table 3 (contrastive study), Table 6 (one task
across models), and the share of the mask per parameter family. Each returns `(csv, shown)`: the
numbers (mean, std, n and flags per cell) and the same table as display strings."""

from __future__ import annotations

import math
import re

import pandas as pd

from .cells import cell_stats, format_cell, format_row, metric_column, row_meta, task_metrics, tasks_in
from .pairs import contrastive_groups

META = ["model", "method", "method_tag", "mask_tag", "kind", "trainable", "backbone_pct", "live"]
SHOWN = ["kind", "trainable", "backbone_pct", "live"]  # the label already names model, method and mask


def _metric_values(runs: pd.DataFrame, tasks: list[str]) -> dict[str, pd.Series]:
    names = sorted({m for t in tasks for m in task_metrics(t, runs)})
    values = {m: runs["metrics"].map(lambda d, m=m: d.get(m, math.nan)) for m in names} if not runs.empty else {}
    values["score"] = runs["score"] if not runs.empty else pd.Series(dtype=float)
    return values


def _wide(stats: pd.DataFrame, meta: pd.DataFrame, columns: list[tuple[str, str, str]],
          tasks: list[str], shown_meta: list[str] = SHOWN) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Pivot the long cell stats into the CSV table and the display table, rows in `meta` order.

    `columns`: (task, value name, column title) per displayed column; `avg` = the mean over `tasks`
    of the rows' task-score means, only where the row has a score on every one of them, with the
    smallest and largest seed count among those task cells (`avg n_min`, `avg n_max`)."""
    index = {(c, t, v): line for c, t, v, line in zip(stats["config"], stats["task"], stats["value"],
                                                       stats.itertuples(index=False))}
    csv = pd.DataFrame(index=meta.index)
    shown = pd.DataFrame(index=meta.index)
    for col in META:
        if col in meta:
            csv[col] = meta[col]
    for col in shown_meta:
        shown[col] = meta[col]
    for task, value, title in columns:
        lines = [index.get((c, task, value)) for c in meta.index]
        for field in ("mean", "std", "n", "collapsed", "failed", "diverged"):
            default = 0 if field in ("n", "collapsed", "failed", "diverged") else math.nan
            csv[f"{title} {field}"] = [getattr(x, field) if x is not None else default for x in lines]
        shown[title] = [format_row(pd.Series(x._asdict())) if x is not None else "missing" for x in lines]
    avgs, lows, highs = [], [], []
    for config in meta.index:
        scores = [index.get((config, t, "score")) for t in tasks]
        ok = tasks and all(s is not None and s.n > 0 for s in scores)
        avgs.append(round(sum(s.mean for s in scores) / len(scores), 4) if ok else math.nan)
        lows.append(min(int(s.n) for s in scores) if ok else 0)
        highs.append(max(int(s.n) for s in scores) if ok else 0)
    csv["avg"], csv["avg n_min"], csv["avg n_max"] = avgs, lows, highs
    shown["avg"] = [_format_avg(a, lo, hi) for a, lo, hi in zip(avgs, lows, highs)]
    csv.index.name = shown.index.name = "config"
    return csv, shown


def _format_avg(avg: float, low: int, high: int) -> str:
    """`44.11 (n=3)`; `44.11 (n=1–3)` when the row's task cells rest on different seed counts (then the
    average mixes seeds, and the paired `avg` line, over the seeds that have every task, is the fair one)."""
    if pd.isna(avg):
        return "–"
    return f"{avg:.2f} (n={low})" if low == high else f"{avg:.2f} (n={low}–{high})"


def table1(runs: pd.DataFrame, others: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Every row (method × mask config) against every task's GLUE metrics, plus the average score."""
    every = pd.concat([f for f in (runs, others) if not f.empty])
    tasks = tasks_in(every)
    stats = cell_stats(runs, others, _metric_values(runs, tasks))
    columns = [(t, m, metric_column(t, m)) for t in tasks for m in task_metrics(t, runs)]
    return _wide(stats, row_meta(runs, others), columns, tasks)


def table3(runs: pd.DataFrame, others: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The contrastive study: vanilla, FISH, random, reverse at one budget, the task scores and their
    average. Rows are grouped by budget (`pairs.contrastive_groups`: same model, method family,
    optimizer-updated count, device and precision); only groups with a vanilla or a FISH row and one
    other kind are shown. A config whose every run failed or diverged is placed by the count its
    records name, so its row shows `[k failed]` rather than going missing."""
    placeable = others.dropna(subset=["trainable"]) if "trainable" in others else others.iloc[0:0]
    groups = contrastive_groups(pd.concat([f for f in (runs, placeable) if not f.empty]) if not placeable.empty
                                else runs)
    if groups.empty:
        return pd.DataFrame(), pd.DataFrame()
    configs = list(dict.fromkeys(groups["config"]))
    sub_runs = runs[runs["config"].isin(configs)]
    sub_others = others[others["config"].isin(configs)] if not others.empty else others
    tasks = tasks_in(pd.concat([f for f in (sub_runs, sub_others) if not f.empty]))
    stats = cell_stats(sub_runs, sub_others, {"score": sub_runs["score"]})
    meta = row_meta(sub_runs, sub_others)
    group_of = dict(zip(groups["config"], groups["group"]))
    meta.insert(0, "budget", [group_of[c] for c in meta.index])
    position = {c: i for i, c in enumerate(meta.index)}
    meta = meta.loc[sorted(meta.index, key=lambda c: (_natural(meta.at[c, "budget"]), position[c]))]
    csv, shown = _wide(stats, meta, [(t, "score", t) for t in tasks], tasks, ["budget", "kind", "live"])
    csv.insert(0, "budget", meta["budget"])
    return csv, shown


def _natural(text: str) -> list:
    """Sort key that orders the numbers inside a label by value (a 9216 budget before a 73728 one)."""
    return [int(part) if i % 2 else part for i, part in enumerate(re.split(r"(\d+)", text))]  # text, digits, ...


def table6(runs: pd.DataFrame, others: pd.DataFrame, task: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One task across models × methods × masks: every metric of the task and its score."""
    runs = runs[runs["task"] == task] if not runs.empty else runs
    others = others[others["task"] == task] if not others.empty else others
    if runs.empty and others.empty:
        return pd.DataFrame(), pd.DataFrame()
    metrics = task_metrics(task, runs) if not runs.empty else []
    stats = cell_stats(runs, others, _metric_values(runs, [task]))
    columns = [(task, m, metric_column(task, m)) for m in metrics]
    if len(metrics) != 1:
        columns.append((task, "score", f"{task} score"))
    csv, shown = _wide(stats, row_meta(runs, others), columns, [task])
    return csv.drop(columns=["avg", "avg n_min", "avg n_max"]), shown.drop(columns="avg")


def mask_share_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Share of the mask per parameter family (columns), per masked configuration and task (means)."""
    masked = runs[runs["mask"] != "none"] if not runs.empty else runs
    if masked.empty:
        return pd.DataFrame()
    shares = pd.DataFrame(list(masked["share_by_family"]), index=masked.index)
    shares = shares.reindex(sorted(shares.columns), axis=1)
    return shares.assign(config=masked["config"], task=masked["task"]).groupby(["config", "task"]).mean().round(3)


__all__ = ["table1", "table3", "table6", "mask_share_table", "format_cell"]
