"""The convergence figure: dev score after each epoch, mean over seeds, one line per configuration."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..atomic import atomic_write
from .tables import with_labels


def convergence_figure(runs: pd.DataFrame, path: Path) -> list[Path]:
    """One PNG per task (`<path stem>_<task>.png`); returns the files written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    written = []
    for task, group in with_labels(runs).groupby("task"):
        points = []
        for _, row in group.iterrows():
            for e in row["epochs"]:
                points.append({"config": row["config"], "epoch": e["epoch"], "score": e["dev"]["score"]})
        curves = pd.DataFrame(points).groupby(["config", "epoch"])["score"].mean().reset_index()
        fig, ax = plt.subplots(figsize=(6, 4))
        for config, c in curves.groupby("config"):
            ax.plot(c["epoch"], c["score"], marker="o", label=config)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set(xlabel="epoch", ylabel="dev score", title=f"{task}: dev score by epoch (mean over seeds)")
        ax.legend(fontsize=7)
        fig.tight_layout()
        out = path.with_name(f"{path.stem}_{task}.png")
        atomic_write(out, lambda tmp: fig.savefig(tmp, format="png", dpi=120))
        plt.close(fig)
        written.append(out)
    return written
