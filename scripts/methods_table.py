"""The issue-9 table (every method, vanilla against FISH / random / reverse at equal count) as Markdown,
joined from the report's own CSVs: scores from table1, counts and mask-stage times from table5, the
share of the mask per family from mask_share. Nothing here reads a record: run the report first.

    fishtune report --runs results/study/minilm-l6-methods --seed 1 --out /tmp/methods-seed1 --no-figures
    python scripts/methods_table.py /tmp/methods-seed1 --task mrpc
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd


def _count(value: object) -> str:
    return "–" if pd.isna(value) else f"{int(value):,}"


def _seconds(value: object) -> str:
    return "–" if pd.isna(value) else f"{float(value):.0f}"


def _shares(row: pd.Series | None) -> str:
    if row is None:
        return "–"
    return ", ".join(f"{family} {100 * share:.1f}%" for family, share in row.dropna().items())


def methods_table(tables: Path, task: str) -> str:
    scores = pd.read_csv(tables / "table1.csv", index_col="config")
    cost = pd.read_csv(tables / "table5.csv", index_col="config")
    cost = cost[cost["task"] == task]
    share_file = tables / "mask_share.csv"
    shares = pd.read_csv(share_file, index_col="config") if share_file.stat().st_size else pd.DataFrame()
    if not shares.empty:
        shares = shares[shares["task"] == task].drop(columns="task")
    metrics = sorted({c.removesuffix(" mean") for c in scores.columns
                      if c.startswith(f"{task} ") and c.endswith(" mean")})
    if not metrics or cost.empty:
        raise LookupError(f"no complete run of task {task!r} in {tables / 'table1.csv'}")
    lines = ["| config | kind | trainable | of which dense | at inference | candidates | share of the mask | "
             "warm-up s | Fisher s | " + " | ".join(metrics) + " | score |",
             "|" + "---|" * (10 + len(metrics))]
    for config, row in scores.iterrows():
        if config not in cost.index:
            continue  # no complete run of this config on `task`
        c = cost.loc[config]
        values = [f"{row[f'{m} mean']:.2f}" for m in metrics]
        collapsed = any(row.get(f"{m} collapsed", 0) for m in metrics)
        score = sum(row[f"{m} mean"] for m in metrics) / len(metrics)
        lines.append(" | ".join([
            f"| {config}", row["kind"], _count(c["trainable"]), _count(c["dense"]), _count(c["inference"]),
            _count(c["peft_total"]), _shares(shares.loc[config] if config in shares.index else None),
            _seconds(c["time_fisher_warmup_s"]), _seconds(c["time_fisher_s"]), *values,
            f"{score:.2f}" + (" (majority class)" if collapsed else "")]) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("tables", type=Path, help="a `fishtune report --out` folder")
    parser.add_argument("--task", default="mrpc")
    args = parser.parse_args(argv)
    if not (args.tables / "table1.csv").is_file():
        print(f"methods_table: error: no table1.csv in {args.tables}; run `fishtune report --out {args.tables}` first",
              file=sys.stderr)
        return 2
    try:
        sys.stdout.write(methods_table(args.tables, args.task))
    except (LookupError, OSError, ValueError) as err:   # a row or task missing; a CSV missing or unreadable
        print(f"methods_table: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
