"""Ablations: the dev score against one config key, wherever the records vary exactly that key.

Generic, driven by the comparable configs the records carry (`row_config`): for a key k, rows of a
task of one model, method and kind (vanilla / fish / random / reverse) whose configs are equal except
for k (tags left out: they follow the keys) form a series; a series with at least two values of k on
a task is an ablation there (keep ratio, Fisher samples, warm-up steps,
scope, labels, `fisher_at`, learning rate, ... — whatever the experiment files swept). One figure
per key, a panel per task, a line per series: mean ± std over seeds at each value. A key that
changes the method or the kind (vanilla LoRA r=8 and vanilla DoRA r=8 differ only in `method.name`)
is a different row of Table 1, not an ablation, so it never joins a series.

The budget is one axis however it was asked for. A masked row's `mask.keep_ratio`, `mask.keep` and
`mask.keep_match` (a ratio, a count, or a partner method's count) are replaced by `mask.kept`, the
fraction of its candidates the mask selected (trainable / candidates, 4 significant digits), so
Table 3's FISH cell at r=8's count (kept 0.5, set by `keep_match`), its r=1 cell (0.0625) and the
keep-ratio ablation's cells (0.25 .. 0.001, set by `keep_ratio`) are one curve.

Paired against the default (`ablation_paired`): where a series holds the value the shipped configs
give the key (`mask.warmup_steps` 50, `mask.num_samples` 1024, `mask.scope` global, `mask.labels`
empirical, ...: `shipped_defaults`), each other value's runs are paired with the default's on the
same task and seed, value − default, with the mean, a 95% t interval over seeds and n (as
`pairs.paired_differences`). A key without a shipped default (`mask.kept`) gets no paired lines.
"""

from __future__ import annotations

import math
from typing import Any
from pathlib import Path

import pandas as pd

from .cells import tasks_in
from .figures import plotting, save, slug, styles


BUDGET_KEYS = ("mask.keep_ratio", "mask.keep", "mask.keep_match")
KEPT = "mask.kept"


def _ablation_config(row: Any) -> dict:
    """The row's comparable config, its budget keys replaced by the fraction kept (masked rows)."""
    config = dict(row.row_config)
    if row.kind == "vanilla" or not row.peft_total:
        return config
    for key in [k for k in config if k in BUDGET_KEYS or k.startswith(tuple(b + "." for b in BUDGET_KEYS))]:
        config.pop(key)  # `mask.keep_match` flattens to `.config` and `.r` when it names a sized partner
    config[KEPT] = float(f"{row.trainable / row.peft_total:.4g}")
    return config


def _rest(row: Any, key: str) -> tuple:
    """What a series holds fixed: the row's model, method and kind, and every config key but `key`."""
    return (row.model, row.method, row.kind,
            *sorted((k, str(v)) for k, v in row.ablation_config.items() if k != key and not k.endswith(".tag")))


def _series(runs: pd.DataFrame) -> list[tuple[str, str, list]]:
    """(key, series label, member rows) for every key and series of two or more values, in order."""
    rows = runs.drop_duplicates("config")[["config", "model", "method", "kind", "row_config", "trainable", "peft_total"]]
    rows = rows.assign(ablation_config=[_ablation_config(row) for row in rows.itertuples(index=False)])
    keys = sorted({k for c in rows["ablation_config"] for k in c if not k.endswith(".tag")})
    found = []
    for key in keys:
        series: dict[tuple, list] = {}
        for row in rows.itertuples(index=False):
            if key in row.ablation_config:
                series.setdefault(_rest(row, key), []).append(row)
        series = {rest: members for rest, members in series.items()
                  if len({str(m.ablation_config[key]) for m in members}) > 1}
        labels = _series_labels(series)
        found += [(key, labels[rest], members) for rest, members in sorted(series.items(), key=lambda i: labels[i[0]])]
    return found


def ablation_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Long table: key, series, task, value, mean, std, n (one line per point of every series)."""
    columns = ["key", "series", "task", "value", "mean", "std", "n"]
    if runs.empty:
        return pd.DataFrame(columns=columns)
    lines = []
    for key, label, members in _series(runs):
        for member in members:
            for task, g in runs[runs["config"] == member.config].groupby("task", sort=True):
                scores = g["score"].astype(float)
                lines.append({"key": key, "series": label, "task": task,
                              "value": member.ablation_config[key], "mean": round(float(scores.mean()), 4),
                              "std": round(float(scores.std(ddof=1)), 4) if len(scores) > 1 else math.nan,
                              "n": int(g["seed"].nunique())})
    table = pd.DataFrame(lines, columns=columns)
    # a series that has one value on a task is no curve there (Table 3's other tasks at r=8's count only)
    curves = table.groupby(["key", "series", "task"])["value"].transform(lambda v: v.astype(str).nunique() > 1)
    table = table[curves.astype(bool)] if not table.empty else table
    if table.empty:
        return table.reset_index(drop=True)
    table["sort"] = table["value"].map(_sort_key)
    table = table.sort_values(["key", "task", "series", "sort"], kind="stable")
    return table.drop(columns="sort").reset_index(drop=True)


def shipped_defaults() -> dict[str, str]:
    """{key: value as text} of the literal values of the shipped `mask/fish.yaml` and
    `train/default.yaml` (interpolations, such as `train.lr: ${method.lr}`, left out)."""
    from importlib.resources import files

    from omegaconf import OmegaConf

    defaults = {}
    for section, name in (("mask", "mask/fish.yaml"), ("train", "train/default.yaml")):
        values = OmegaConf.to_container(OmegaConf.create(files("fishtune.configs").joinpath(name).read_text()))
        defaults.update({f"{section}.{k}": str(v) for k, v in values.items()
                         if not isinstance(v, (dict, list)) and not str(v).startswith("${")})
    return defaults


def ablation_paired(runs: pd.DataFrame, defaults: dict[str, str] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(csv, shown): every value of a series − the series' default value, per task over matched seeds."""
    from .pairs import format_difference, paired_stats

    columns = ["key", "series", "task", "value", "default", "n", "mean_diff", "ci95_low", "ci95_high", "seeds",
               "per_seed"]
    defaults = shipped_defaults() if defaults is None else defaults
    lines = []
    scores = dict(zip(zip(runs["config"], runs["task"], runs["seed"]), runs["score"])) if not runs.empty else {}
    for key, label, members in (_series(runs) if not runs.empty else []):
        if key not in defaults:
            continue
        reference = [m for m in members if str(m.ablation_config[key]) == defaults[key]]
        if len(reference) != 1:
            continue
        (ref,) = reference
        for member in sorted((m for m in members if m is not ref), key=lambda m: _sort_key(m.ablation_config[key])):
            for task in sorted({t for (c, t, _) in scores if c == member.config}):
                seeds = sorted(s for (c, t, s) in scores if c == member.config and t == task
                               and (ref.config, task, s) in scores)
                if not seeds:
                    continue
                diffs = {s: scores[(member.config, task, s)] - scores[(ref.config, task, s)] for s in seeds}
                lines.append({"key": key, "series": label, "task": task, "value": member.ablation_config[key],
                              "default": ref.ablation_config[key], **paired_stats(diffs)})
    csv = pd.DataFrame(lines, columns=columns)
    shown = csv[["key", "series", "task", "value", "default"]].copy()
    shown["value − default (95% t CI over seeds)"] = [format_difference(line) for _, line in csv.iterrows()]
    shown["per seed"] = csv["per_seed"]
    return csv, shown.set_index("key")


def _series_labels(series: dict[tuple, list]) -> dict[tuple, str]:
    """`model / method / kind`, plus `[key=value]` for the keys that tell series of one figure apart."""
    base = {rest: f"{m[0].model} / {m[0].method} / {m[0].kind}" for rest, m in series.items()}
    labels = {}
    for rest, text in base.items():
        same = [r for r, t in base.items() if t == text]
        if len(same) == 1:
            labels[rest] = text
            continue
        configs = [dict(r[3:]) for r in same]
        differ = sorted(k for k in {k for c in configs for k in c} if len({c.get(k) for c in configs}) > 1)
        mine = dict(rest[3:])
        labels[rest] = text + " [" + ", ".join(f"{k.rsplit('.', 1)[-1]}={mine.get(k)}" for k in differ) + "]"
    return labels


def _sort_key(value: object) -> tuple:
    if isinstance(value, bool) or value is None:
        return (1, str(value))
    if isinstance(value, (int, float)):
        return (0, float(value))
    return (1, str(value))


def _numeric(values: list) -> bool:
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)


def ablation_figures(table: pd.DataFrame, out: Path) -> list[Path]:
    """One figure per ablated key, one panel per task."""
    written: list[Path] = []
    for key, g in table.groupby("key", sort=True):
        tasks = tasks_in(g)
        with plotting() as plt:
            fig, axes = plt.subplots(1, len(tasks), figsize=(4.2 * len(tasks), 3.6), squeeze=False)
            for ax, task in zip(axes.flat, tasks):
                t = g[g["task"] == task]
                values = list(t["value"])
                numeric = _numeric(values)
                categories = sorted({str(v) for v in values}, key=lambda s: _sort_key(s))
                series = sorted(t["series"].unique())
                kinds = [s.split(" / ")[2].split(" ")[0] if s.count(" / ") >= 2 else "" for s in series]
                for label, (color, style) in zip(series, styles(kinds)):
                    s = t[t["series"] == label]
                    x = list(s["value"]) if numeric else [categories.index(str(v)) for v in s["value"]]
                    ax.errorbar(x, s["mean"], yerr=s["std"].fillna(0), color=color, linestyle=style, marker="o",
                                markersize=3, capsize=2, label=f"{label} (n={int(s['n'].min())}-{int(s['n'].max())})"
                                if s["n"].min() != s["n"].max() else f"{label} (n={int(s['n'].min())})")
                if numeric:
                    positive = [float(v) for v in values if float(v) > 0]
                    if positive and len(positive) == len(values) and max(positive) / min(positive) >= 20:
                        ax.set_xscale("log")
                else:
                    ax.set_xticks(range(len(categories)), categories)
                    ax.set_xlim(-0.5, len(categories) - 0.5)
                xlabel = "fraction of the candidates kept (mask.kept)" if key == KEPT else key
                ax.set(xlabel=xlabel, ylabel="dev score", title=f"{task}: score vs {key}\n(mean ± std over seeds)")
                ax.legend(loc="best")
            fig.tight_layout()
            written += save(fig, out / f"ablation_{slug(key)}")
    return written
