"""Mask anatomy: where in the network a mask's entries lie, as a layer × site heatmap.

From each masked record's `mask_stats.selected_by_param` ({parameter name: selected entries}); a
record made before that field existed falls back to its folder's `mask.safetensors` (masks are not
kept in git, so snapshot records without the field are left out, with a log line). The row is the
layer index parsed from the name (`layer.<i>.` / `layers.<i>.`; parameters outside the layers, e.g.
embeddings, are the row `other`); the column is the tensor's site inside the layer, its name after
the layer index without library boilerplate (`attention.self.query.lora_A`, `output.adapter_down`,
`...bias`). A cell is the share of the mask there (selected entries there / all selected), averaged
over the runs (tasks × seeds) of the config.

Its per-task companion, `mask_sites_<model>_<method>`: per masked config that ran on more than one
task, the share of the mask per site with the layers summed, one bar per task (mean over seeds,
whiskers min–max over seeds): whether a mask puts its budget in the same places on every task.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pandas as pd

from .figures import plotting, save, slug

log = logging.getLogger(__name__)

_LAYER = re.compile(r"(?:^|\.)(?:layer|layers)\.(\d+)\.(.+)$")
_DROP = {"default", "fishtune", "weight", "adapters", "loras", "prefix_tunings", "pool", "base_model", "model"}
_BACKBONES = ("bert", "roberta", "deberta", "electra", "distilbert", "albert", "mpnet", "encoder")


def locate(name: str) -> tuple[str, str]:
    """(layer, site) of a parameter name: `("3", "attention.self.query.lora_A")`, `("other", ...)`."""
    match = _LAYER.search(name)
    layer, rest = (match.group(1), match.group(2)) if match else ("other", name)
    parts = [p for p in rest.split(".") if p not in _DROP and not p.isdigit()]
    if layer == "other":
        while parts and parts[0] in _BACKBONES:
            parts = parts[1:]
    return layer, ".".join(parts) or rest


def selected_counts(row: pd.Series) -> dict[str, int] | None:
    """{name: selected} from the record, else from the run folder's mask.safetensors, else None."""
    counts = row.get("selected_by_param")
    if isinstance(counts, dict) and counts:
        return {str(k): int(v) for k, v in counts.items()}
    path = Path(str(row.get("path", ""))) / "mask.safetensors"
    if path.is_file():
        from safetensors.numpy import load_file

        return {name: int(m.sum()) for name, m in sorted(load_file(str(path)).items())}
    return None


def run_shares(runs: pd.DataFrame) -> pd.DataFrame:
    """One line per masked run × (layer, site): config, model, method, task, run, layer, site, share.
    Both tables below are made from it (the mask files it may read are read once)."""
    masked = runs[runs["mask"] != "none"] if not runs.empty else runs
    lines, missing = [], []
    for row in masked.itertuples(index=False):
        counts = selected_counts(pd.Series(row._asdict()))
        total = sum(counts.values()) if counts else 0
        if not total:
            missing.append(row.folder)
            continue
        cells: dict[tuple[str, str], int] = {}
        for name, selected in counts.items():
            key = locate(name)
            cells[key] = cells.get(key, 0) + selected
        for (layer, site), selected in cells.items():
            lines.append({"config": row.config, "model": row.model, "method": row.method, "task": row.task,
                          "run": row.folder, "layer": layer, "site": site, "share": selected / total})
    if missing:
        log.info("mask anatomy: %d masked run(s) without per-parameter counts or mask file, left out (e.g. %s)",
                 len(missing), missing[0])
    return pd.DataFrame(lines, columns=["config", "model", "method", "task", "run", "layer", "site", "share"])


def anatomy_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Long table from `run_shares`: config, method family, layer, site, share (mean over runs), runs."""
    if frame.empty:
        return pd.DataFrame(columns=["config", "model", "method", "layer", "site", "share", "runs"])
    # A site absent from one run of a config counts as 0 there: average over the config's runs.
    runs_per = frame.groupby("config")["run"].nunique()
    table = frame.groupby(["config", "model", "method", "layer", "site"], sort=True)["share"].sum().reset_index()
    table["runs"] = table["config"].map(runs_per)
    table["share"] = (table["share"] / table["runs"]).round(4)
    table["order"] = table["layer"].map(lambda x: int(x) if x.isdigit() else 10**6)
    return table.sort_values(["config", "order", "site"], kind="stable").drop(columns="order").reset_index(drop=True)


def site_share_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Share of the mask per site, summed over layers, per masked config and task (mean over its
    seeds; a site where one run selected nothing counts 0 there), from `run_shares`: long table
    config, task, site, share, runs. The per-task companion of the pooled heatmap."""
    if frame.empty:
        return pd.DataFrame(columns=["config", "task", "site", "share", "runs"])
    per_run = frame.groupby(["config", "task", "run", "site"], sort=True)["share"].sum().reset_index()
    runs_per = per_run.groupby(["config", "task"])["run"].nunique().rename("runs").reset_index()
    table = per_run.groupby(["config", "task", "site"], sort=True)["share"].sum().reset_index()
    table = table.merge(runs_per, on=["config", "task"])
    table["share"] = (table["share"] / table["runs"]).round(4)
    return table


def anatomy_figures(table: pd.DataFrame, out: Path) -> list[Path]:
    """One heatmap figure per (model, method family), one panel per masked config."""
    written: list[Path] = []
    if table.empty:
        return written
    for (model, method), g in table.groupby(["model", "method"], sort=True):
        configs = sorted(g["config"].unique())
        with plotting() as plt:
            fig, axes = _panels(plt, len(configs), (4.2, 3.6))
            top = float(g.groupby(["config", "layer", "site"])["share"].sum().max()) * 100  # one scale for all panels
            for ax, config in zip(axes, configs):
                c = g[g["config"] == config]
                grid = c.pivot_table(index="layer", columns="site", values="share", aggfunc="sum", fill_value=0.0)
                grid = grid.loc[sorted(grid.index, key=lambda x: int(x) if x.isdigit() else 10**6)]
                image = ax.imshow(grid.values * 100, aspect="auto", cmap="viridis", vmin=0, vmax=top)
                ax.set_xticks(range(len(grid.columns)), list(grid.columns), rotation=60, ha="right", fontsize=6)
                ax.set_yticks(range(len(grid.index)), list(grid.index), fontsize=6)
                ax.set(ylabel="layer", title=f"{config}\n(n={int(c['runs'].iloc[0])} runs)")
                ax.grid(False)
                fig.colorbar(image, ax=ax, label="% of the mask")
            written += _finish(fig, f"{model} / {method}: share of the mask per layer and site (mean over runs)",
                               out / f"mask_anatomy_{slug(model)}_{slug(method)}")
    return written


def site_figures(shares: pd.DataFrame, out: Path) -> list[Path]:
    """One bar chart per (model, method family) from `run_shares`: a panel per masked config with
    runs on two or more tasks; x = site (layers summed), one bar per task = mean share over its
    runs, whiskers = min–max over them (a site one run left empty counts 0 there)."""
    written: list[Path] = []
    if shares.empty:
        return written
    per_run = shares.groupby(["model", "method", "config", "task", "run", "site"])["share"].sum()
    per_run = per_run.unstack("site", fill_value=0.0).stack().rename("share").reset_index()  # 0 where empty
    for (model, method), g in per_run.groupby(["model", "method"], sort=True):
        configs = sorted(c for c, rows in g.groupby("config") if rows["task"].nunique() > 1)
        if not configs:
            continue
        with plotting() as plt:
            fig, axes = _panels(plt, len(configs), (4.2, 3.2))
            for ax, config in zip(axes, configs):
                c = g[g["config"] == config]
                c = c[c["site"].isin(c.groupby("site")["share"].sum().loc[lambda total: total > 0].index)]
                sites, tasks = sorted(c["site"].unique()), sorted(c["task"].unique())
                width = 0.8 / len(tasks)
                for i, task in enumerate(tasks):
                    t = c[c["task"] == task].groupby("site")["share"].agg(["mean", "min", "max"]).reindex(sites) * 100
                    x = [j + (i - (len(tasks) - 1) / 2) * width for j in range(len(sites))]
                    # equal shares can average a rounding step past their min or max: clip, or matplotlib refuses
                    whiskers = [(t["mean"] - t["min"]).clip(lower=0), (t["max"] - t["mean"]).clip(lower=0)]
                    ax.bar(x, t["mean"], width, label=f"{task} (n={c.loc[c['task'] == task, 'run'].nunique()})",
                           yerr=whiskers, capsize=1.5, error_kw={"lw": 0.6})
                ax.set_xticks(range(len(sites)), sites, rotation=60, ha="right", fontsize=6)
                top = float(c.groupby(["site", "task"])["share"].max().max()) * 100
                ax.set(ylabel="% of the mask (layers summed)", title=config, ylim=(0, top * 1.25))  # room for the key
                ax.legend(loc="upper center", ncol=len(tasks))
            written += _finish(fig, f"{model} / {method}: share of the mask per site and task (mean, min–max over "
                                    "seeds)", out / f"mask_sites_{slug(model)}_{slug(method)}")
    return written


def _panels(plt, count: int, size: tuple[float, float]):
    """(figure, its first `count` axes): up to 3 panels a row of `size` inches each, the spare ones blank."""
    cols = min(3, count)
    rows = -(-count // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(size[0] * cols, size[1] * rows), squeeze=False)
    for ax in list(axes.flat)[count:]:
        ax.axis("off")
    return fig, list(axes.flat)[:count]


def _finish(fig, title: str, stem: Path) -> list[Path]:
    fig.suptitle(title)
    fig.tight_layout()
    return save(fig, stem)
