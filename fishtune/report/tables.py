"""GLUE-style tables: one row per configuration, one column per task, mean ± std over seeds."""

from __future__ import annotations

import pandas as pd

GLUE_ORDER = ("cola", "sst2", "mrpc", "qqp", "stsb", "mnli", "qnli", "rte", "wnli")


def config_label(row: pd.Series) -> str:
    """`model / lora-r16 / fish-k0.5-warmup`: enough to find the configs that made the number."""
    return f"{row['model']} / {row['method_tag']} / {row['mask_tag']}"


def with_labels(runs: pd.DataFrame) -> pd.DataFrame:
    """Add `config`: the tag label, plus `[key=value, ...]` for the keys that differ when runs of
    different configs share tags (they are separate rows, never pooled as seeds)."""
    base = runs.apply(config_label, axis=1)
    labels = base.copy()
    for _, idx in base.groupby(base).groups.items():
        group = runs.loc[idx]
        if group["row_digest"].nunique() == 1:
            continue
        configs = {d: c for d, c in zip(group["row_digest"], group["row_config"])}
        keys = sorted({k for c in configs.values() for k in c})
        differ = [k for k in keys if len({_fmt_value(c.get(k)) for c in configs.values()}) > 1]
        short = _short_names(differ)
        for i in idx:
            config = runs.at[i, "row_config"]
            labels[i] = f"{base[i]} [" + ", ".join(f"{short[k]}={_fmt_value(config.get(k))}" for k in differ) + "]"
    return runs.assign(config=labels)


def _short_names(keys: list[str]) -> dict[str, str]:
    """`train.lr` -> `lr` unless two differing keys share the last component."""
    leaves = [k.rsplit(".", 1)[-1] for k in keys]
    return {k: leaf if leaves.count(leaf) == 1 else k for k, leaf in zip(keys, leaves)}


def _fmt_value(value: object) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def glue_table(runs: pd.DataFrame, *, value: str = "score") -> pd.DataFrame:
    """Rows: configurations; columns: tasks (GLUE order) + Avg; cells: mean, std and seed count."""
    runs = with_labels(runs)
    grouped = runs.groupby(["config", "task"]).agg(mean=(value, "mean"), std=(value, "std"),
                                                   count=("seed", "nunique")).reset_index()
    tasks = [t for t in GLUE_ORDER if t in set(grouped["task"])]
    table = pd.DataFrame(index=sorted(set(grouped["config"])))
    for _, g in grouped.iterrows():
        table.loc[g["config"], f"{g['task']}_mean"] = g["mean"]
        table.loc[g["config"], f"{g['task']}_std"] = g["std"] if g["count"] > 1 else float("nan")
        table.loc[g["config"], f"{g['task']}_n"] = g["count"]
    means = table[[f"{t}_mean" for t in tasks]]
    table["avg"] = means.mean(axis=1, skipna=False)  # only where every task has a number
    table.insert(0, "trainable", runs.groupby("config")["trainable"].agg(_distinct))
    # Entries of the budget that can move (a LoRA A entry under an unselected, zero B column cannot).
    table.insert(1, "live", runs.groupby("config")["live"].agg(_distinct))
    table.index.name = "config"
    return table[["trainable", "live"] + [c for t in tasks for c in (f"{t}_mean", f"{t}_std", f"{t}_n")] + ["avg"]]


def _distinct(values: pd.Series) -> str:
    """One value, or the distinct values joined (e.g. live counts that differ by task or seed)."""
    found = sorted({int(v) for v in values.dropna()})
    return ",".join(map(str, found)) if found else "–"


def format_cell(mean: float, std: float) -> str:
    if pd.isna(mean):
        return "–"
    return f"{mean:.2f}" if pd.isna(std) else f"{mean:.2f} ± {std:.2f}"


def to_display(table: pd.DataFrame) -> pd.DataFrame:
    """The table with `mean ± std` strings (std left out for a single seed)."""
    tasks = [c[: -len("_mean")] for c in table.columns if c.endswith("_mean")]
    shown = pd.DataFrame(index=table.index)
    shown["trainable"] = table["trainable"]
    shown["live"] = table["live"]
    for t in tasks:
        shown[t] = [format_cell(m, s) for m, s in zip(table[f"{t}_mean"], table[f"{t}_std"])]
        shown[f"{t} seeds"] = table[f"{t}_n"].astype("Int64")
    shown["avg"] = [format_cell(m, float("nan")) for m in table["avg"]]
    return shown


def to_latex(table: pd.DataFrame) -> str:
    """A booktabs LaTeX table of `to_display(table)` (seed counts left out)."""
    shown = to_display(table)
    shown = shown[[c for c in shown.columns if not c.endswith(" seeds")]]
    cols = "l" + "r" * len(shown.columns)
    lines = [f"\\begin{{tabular}}{{{cols}}}", "\\toprule",
             " & ".join(["Configuration", *[_tex(c) for c in shown.columns]]) + " \\\\", "\\midrule"]
    for config, row in shown.iterrows():
        lines.append(" & ".join([_tex(str(config)), *[_tex(str(v)) for v in row]]) + " \\\\")
    lines += ["\\bottomrule", "\\end{tabular}"]
    return "\n".join(lines) + "\n"


def to_markdown(frame: pd.DataFrame) -> str:
    """A GitHub-flavoured markdown table of `frame` (index as the first column)."""
    header = [str(frame.index.name or ""), *map(str, frame.columns)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for index, row in frame.iterrows():
        cells = index if isinstance(index, tuple) else (index,)
        lines.append("| " + " | ".join([*map(str, cells), *("–" if pd.isna(v) else str(v) for v in row)]) + " |")
    return "\n".join(lines) + "\n"


def _tex(text: str) -> str:
    return text.replace("\\", "\\textbackslash{}").replace("_", "\\_").replace("%", "\\%").replace("±", "$\\pm$")


def cost_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Per configuration, task and device: trainable entries (integers) and mean seconds per stage,
    peak memory. A total below the sum of its parts (records made before resumed sessions added up
    their wall time) is shown as missing rather than as a wrong number."""
    runs = with_labels(runs)
    parts = runs[["time_fisher_warmup_s", "time_fisher_s", "time_train_s", "time_eval_s"]].fillna(0).sum(axis=1)
    total = runs["time_total_s"].where(runs["time_total_s"] >= parts - 1e-3)
    runs = runs.assign(time_total_s=total, peak_rss_mib=runs["peak_rss_bytes"] / 2**20)
    keys = ["config", "task", "device"]
    counts = runs.groupby(keys)[["trainable", "live"]].first().astype("Int64")
    cols = ["time_fisher_warmup_s", "time_fisher_s", "time_train_s", "time_total_s", "peak_rss_mib"]
    return counts.join(runs.groupby(keys)[cols].mean().round(2))


def mask_share_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Share of the mask per parameter family (columns), per masked configuration and task (means)."""
    masked = with_labels(runs[runs["mask"] != "none"])
    if masked.empty:
        return pd.DataFrame()
    shares = pd.DataFrame(list(masked["share_by_family"]), index=masked.index)
    shares = shares.reindex(sorted(shares.columns), axis=1)
    return shares.assign(config=masked["config"], task=masked["task"]).groupby(["config", "task"]).mean().round(3)
