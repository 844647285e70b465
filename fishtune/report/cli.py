"""`fishtune report`: run records -> CSV + LaTeX tables and convergence figures."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from ..atomic import atomic_write_text
from .figures import convergence_figure
from .records import load_records
from .tables import cost_table, glue_table, mask_share_table, to_display, to_latex, to_markdown


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="fishtune report", description=__doc__)
    parser.add_argument("--runs", default="results/runs", help="folder searched for results.json (any depth)")
    parser.add_argument("--out", default="results/tables", help="folder for the tables and figures")
    parser.add_argument("--task", action="append", help="only these tasks (repeatable)")
    parser.add_argument("--model", action="append", help="only these models (repeatable)")
    parser.add_argument("--include-test-models", action="store_true",
                        help="also tabulate random-init test models (never results)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[fishtune report] %(message)s", force=True)

    runs_root = Path(args.runs)
    if not runs_root.is_dir():
        print(f"fishtune report: error: no run folder {runs_root}; run `fishtune run` first or pass --runs",
              file=sys.stderr)
        return 2
    runs = load_records(runs_root, include_test_models=args.include_test_models)
    if not runs.empty and args.task:
        runs = runs[runs["task"].isin(args.task)]
    if not runs.empty and args.model:
        runs = runs[runs["model"].isin(args.model)]
    if runs.empty:
        print(f"fishtune report: error: no complete runs under {runs_root} (matching the filters)", file=sys.stderr)
        return 1

    out = Path(args.out)
    glue = glue_table(runs)
    atomic_write_text(out / "glue.csv", glue.to_csv())
    atomic_write_text(out / "glue.tex", to_latex(glue))
    cost, share = cost_table(runs), mask_share_table(runs)
    atomic_write_text(out / "cost.csv", cost.to_csv())
    atomic_write_text(out / "mask_share.csv", share.to_csv())
    atomic_write_text(out / "tables.md", "\n\n".join([
        "## Dev score (mean ± std over seeds)\n\n" + to_markdown(to_display(glue)),
        "## Cost (means per run)\n\n" + to_markdown(cost.reset_index(level=[1, 2])),
        "## Share of the mask per parameter family (means over seeds)\n\n"
        + (to_markdown(share.reset_index(level=1)) if not share.empty else "No masked runs.\n"),
    ]))
    figures = convergence_figure(runs, out / "convergence.png")
    print(to_display(glue).to_string())
    print(f"\n{len(runs)} runs -> {out}/glue.csv, glue.tex, cost.csv, mask_share.csv, "
          f"tables.md, {len(figures)} convergence figure(s)")
    return 0
