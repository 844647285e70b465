"""Figures as PNG + PDF with deterministic bytes, and the convergence figure.

Determinism: matplotlib's default style (no user matplotlibrc), the bundled DejaVu Sans font, a
fixed size and dpi, and no metadata that changes between runs (PNG without `Software`, PDF without
`Creator`/`Producer`/`CreationDate`), so the same records give byte-identical files with the same
matplotlib version (other versions may render pixels differently).
"""

from __future__ import annotations

import re
from contextlib import contextmanager
from pathlib import Path

import pandas as pd

from ..atomic import atomic_write
from .cells import KIND_ORDER, tasks_in
from .pairs import contrastive_groups

DPI = 150
STYLE = {"font.family": "DejaVu Sans", "font.size": 8, "axes.titlesize": 8, "legend.fontsize": 6,
         "figure.dpi": 100, "savefig.dpi": DPI, "pdf.fonttype": 3, "svg.hashsalt": "fishtune",
         "axes.grid": True, "grid.alpha": 0.3}
PNG_METADATA = {"Software": None}
PDF_METADATA = {"Creator": None, "Producer": None, "CreationDate": None}
KIND_COLORS = {"vanilla": "black", "fish": "tab:blue", "random": "tab:orange", "reverse": "tab:red"}
LINESTYLES = ("-", "--", ":", "-.")


@contextmanager
def plotting():
    """pyplot under the fixed style (Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with plt.style.context("default"), matplotlib.rc_context(STYLE):
        yield plt


def save(fig, stem: Path) -> list[Path]:
    """`<stem>.png` and `<stem>.pdf`, atomically, without run-dependent metadata; closes the figure."""
    import matplotlib.pyplot as plt

    png, pdf = stem.with_name(stem.name + ".png"), stem.with_name(stem.name + ".pdf")
    atomic_write(png, lambda tmp: fig.savefig(tmp, format="png", dpi=DPI, metadata=PNG_METADATA))
    atomic_write(pdf, lambda tmp: fig.savefig(tmp, format="pdf", metadata=PDF_METADATA))
    plt.close(fig)
    return [png, pdf]


FIGURE_PREFIXES = ("convergence_", "mask_anatomy_", "mask_sites_", "ablation_")


def remove_stale_figures(out: Path, written: list[Path]) -> list[Path]:
    """Delete the report's figures in `out` that this report did not write (a config or a task no
    longer in the records): only `<prefix>*.png|pdf` with the report's own prefixes. Returns them."""
    keep = {p.resolve() for p in written}
    stale = sorted(p for p in out.iterdir() if p.name.startswith(FIGURE_PREFIXES) and p.suffix in (".png", ".pdf")
                   and p.resolve() not in keep) if out.is_dir() else []
    for path in stale:
        path.unlink()
    return stale


def slug(text: str) -> str:
    """A file-name-safe form of a label."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_")


def styles(kinds: list[str]) -> list[tuple[str, str]]:
    """(color, linestyle) per line: the color says the kind, the style tells rows of one kind apart."""
    seen: dict[str, int] = {}
    out = []
    for kind in kinds:
        i = seen.get(kind, 0)
        seen[kind] = i + 1
        out.append((KIND_COLORS.get(kind, "tab:green"), LINESTYLES[i % len(LINESTYLES)]))
    return out


def convergence_figures(runs: pd.DataFrame, out: Path) -> list[Path]:
    """One figure per budget group (model, method, budget: vanilla / FISH / random / reverse rows) and
    task: the dev score after each epoch, mean over seeds (line) and min–max over seeds (band)."""
    groups = contrastive_groups(runs)
    written: list[Path] = []
    if groups.empty:
        return written
    group_of = dict(zip(groups["config"], groups["group"]))
    runs = runs[runs["config"].isin(group_of)].assign(group=lambda r: r["config"].map(group_of))
    for (group, task), g in runs.groupby(["group", "task"], sort=True):
        points = [{"config": row.config, "kind": row.kind, "epoch": e["epoch"], "score": e["dev"]["score"]}
                  for row in g.itertuples() for e in row.epochs]
        if not points:
            continue
        frame = pd.DataFrame(points)
        curves = frame.groupby(["config", "epoch"], sort=True)["score"].agg(["mean", "min", "max", "count"])
        configs = sorted(frame["config"].unique(), key=lambda c: (_kind_rank(frame, c), c))
        kinds = [frame.loc[frame["config"] == c, "kind"].iloc[0] for c in configs]
        with plotting() as plt:
            fig, ax = plt.subplots(figsize=(6.4, 4.4 + 0.12 * len(configs)))
            for config, (color, style) in zip(configs, styles(kinds)):
                c = curves.loc[config]
                n = int(c["count"].max())
                ax.plot(c.index, c["mean"], color=color, linestyle=style, marker="o", markersize=3,
                        label=f"{config} (n={n})")
                ax.fill_between(c.index, c["min"], c["max"], color=color, alpha=0.12, linewidth=0)
            ax.xaxis.get_major_locator().set_params(integer=True)
            ax.set(xlabel="epoch", ylabel="dev score",
                   title=f"{task}: {group}\ndev score by epoch, mean over seeds, band = min–max over seeds")
            ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=2)
            fig.tight_layout()
            written += save(fig, out / f"convergence_{slug(task)}_{slug(group)}")
    return written


def _kind_rank(frame: pd.DataFrame, config: str) -> int:
    kind = frame.loc[frame["config"] == config, "kind"].iloc[0]
    return KIND_ORDER.index(kind) if kind in KIND_ORDER else len(KIND_ORDER)


__all__ = ["convergence_figures", "plotting", "save", "slug", "styles", "tasks_in"]
