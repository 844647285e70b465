"""GLUE-style tables: one row per configuration, one column per task, mean ± std over seeds."""

from __future__ import annotations

import pandas as pd

GLUE_ORDER = ("cola", "sst2", "mrpc", "qqp", "stsb", "mnli", "qnli", "rte", "wnli")


def config_label(row: pd.Series) -> str:
    """`model / lora-r16 / fish-k0.5-warmup`: enough to find the configs that made the number."""
    return f"{row['model']} / {row['method_tag']} / {row['mask_tag']}"


def glue_table(runs: pd.DataFrame, *, value: str = "score") -> pd.DataFrame:
    """Rows: configurations; columns: tasks (GLUE order) + Avg; cells: mean, std and seed count."""
    runs = runs.assign(config=runs.apply(config_label, axis=1))
    grouped = runs.groupby(["config", "task"])[value].agg(["mean", "std", "count"]).reset_index()
    tasks = [t for t in GLUE_ORDER if t in set(grouped["task"])]
    table = pd.DataFrame(index=sorted(set(grouped["config"])))
    for _, g in grouped.iterrows():
        table.loc[g["config"], f"{g['task']}_mean"] = g["mean"]
        table.loc[g["config"], f"{g['task']}_std"] = g["std"] if g["count"] > 1 else float("nan")
        table.loc[g["config"], f"{g['task']}_n"] = g["count"]
    means = table[[f"{t}_mean" for t in tasks]]
    table["avg"] = means.mean(axis=1, skipna=False)  # only where every task has a number
    trainable = runs.groupby("config")["trainable"].agg(lambda s: sorted(set(s)))
    table.insert(0, "trainable", trainable.map(lambda v: v[0] if len(v) == 1 else ",".join(map(str, v))))
    table.index.name = "config"
    return table[["trainable"] + [c for t in tasks for c in (f"{t}_mean", f"{t}_std", f"{t}_n")] + ["avg"]]


def format_cell(mean: float, std: float) -> str:
    if pd.isna(mean):
        return "–"
    return f"{mean:.2f}" if pd.isna(std) else f"{mean:.2f} ± {std:.2f}"


def to_display(table: pd.DataFrame) -> pd.DataFrame:
    """The table with `mean ± std` strings (std left out for a single seed)."""
    tasks = [c[: -len("_mean")] for c in table.columns if c.endswith("_mean")]
    shown = pd.DataFrame(index=table.index)
    shown["trainable"] = table["trainable"]
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
    """Per configuration and task: trainable entries, warm-up/Fisher/train/total seconds, peak memory (means)."""
    runs = runs.assign(config=runs.apply(config_label, axis=1), peak_rss_mib=runs["peak_rss_bytes"] / 2**20)
    cols = ["trainable", "time_fisher_warmup_s", "time_fisher_s", "time_train_s", "time_total_s", "peak_rss_mib"]
    return runs.groupby(["config", "task", "device"])[cols].mean().round(2)


def mask_share_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Share of the mask that fell in LoRA's A matrices, per masked configuration and task."""
    masked = runs[runs["mask"] != "none"]
    masked = masked.assign(config=masked.apply(config_label, axis=1))
    return masked.groupby(["config", "task"])["share_lora_A"].mean().round(3).to_frame()
