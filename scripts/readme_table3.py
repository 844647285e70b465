"""The README's Table 3 blocks for one FISH row, cut verbatim from a report's Markdown tables.

Prints two Markdown tables: the rows of the FISH row's budget group from table3.md (config, kind,
one column per task, avg) and its paired differences from paired.md laid out per task (one column
per comparison). Every cell is copied as the report wrote it, so the README's numbers are the
committed tables' (tests/test_report.py checks both kinds of README cell against them). Nothing here
reads a record: run the report first.

    python scripts/readme_table3.py results/tables/minilm-l6-cpu "minilm-l6 / lora-r16 / fish-match.lora-r8-warmup"

With --readme, it rewrites instead every block of that file fenced as

    <!-- readme_table3 group: minilm-l6 / lora-r16 / fish-match.lora-r8-warmup -->
    ...
    <!-- /readme_table3 -->

(`group` or `paired`), each with the table of the FISH row it names, and leaves the rest untouched:

    python scripts/readme_table3.py results/tables/minilm-l6-cpu --readme README.md
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from fishtune.atomic import atomic_write_text

COMPARISONS = ("FISH − vanilla", "FISH − random", "FISH − reverse")
BLOCK = re.compile(r"(<!-- readme_table3 (group|paired): (.+?) -->\n)(.*?)(<!-- /readme_table3 -->)", re.S)


def _rows(markdown: str) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of the first pipe table in `markdown` whose header starts with `| config` or
    `| comparison`; cells stripped."""
    lines = [line for line in markdown.splitlines() if line.startswith("|")]
    cells = [[c.strip() for c in line.strip().strip("|").split("|")] for line in lines]
    header = next(c for c in cells if c[0] in ("config", "comparison"))
    return header, [c for c in cells if c != header and not set("".join(c)) <= set("-:")]


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def group_table(table3: str, fish: str) -> str:
    """The FISH row's budget group: config, kind, each task's cell and avg."""
    header, rows = _rows(table3)
    col = {name: i for i, name in enumerate(header)}
    (mine,) = [r for r in rows if r[0] == fish] or [None]
    if mine is None:
        raise SystemExit(f"readme_table3: no row {fish!r} in table3.md")
    tasks = header[col["live"] + 1: col["avg"]]
    keep = ["config", "kind", *tasks, "avg"]
    group = [r for r in rows if r[col["budget"]] == mine[col["budget"]]]
    return _table(keep, [[r[col[k]] for k in keep] for r in group])


def paired_table(paired: str, fish: str) -> str:
    """The FISH row's paired differences: a line per task (report order), a column per comparison."""
    header, rows = _rows(paired)
    col = {name: i for i, name in enumerate(header)}
    diff = next(i for i, name in enumerate(header) if name.startswith("FISH − partner"))
    cells: dict[str, dict[str, str]] = {}
    for r in rows:
        if r[col["fish"]] == fish:
            cells.setdefault(r[col["task"]], {})[r[col["comparison"]]] = r[diff]
    if not cells:
        raise SystemExit(f"readme_table3: no paired differences of {fish!r} in paired.md")
    return _table(["task", *COMPARISONS], [[task, *(by.get(c, "–") for c in COMPARISONS)] for task, by in cells.items()])


def update_blocks(text: str, table3: str, paired: str) -> tuple[str, int]:
    """`text` with every fenced block refilled from the report's tables, and the number of blocks."""
    def fill(block: re.Match) -> str:
        kind, fish = block[2], block[3]
        body = group_table(table3, fish) if kind == "group" else paired_table(paired, fish)
        return f"{block[1]}{body}\n{block[5]}"
    return BLOCK.subn(fill, text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("tables", type=Path, help="a report folder (fishtune report --out)")
    parser.add_argument("fish", nargs="?",
                        help="the FISH row's config label, e.g. 'minilm-l6 / lora-r16 / fish-match.lora-r8-warmup'")
    parser.add_argument("--readme", type=Path, help="rewrite this file's fenced blocks instead of printing")
    args = parser.parse_args(argv)
    if (args.fish is None) == (args.readme is None):
        parser.error("give either a FISH row label or --readme FILE")
    try:
        table3 = (args.tables / "table3.md").read_text(encoding="utf-8")
        paired = (args.tables / "paired.md").read_text(encoding="utf-8")
    except OSError as err:
        print(f"readme_table3: {err}; run `fishtune report --out {args.tables}` first", file=sys.stderr)
        return 2
    if args.readme is not None:
        try:
            text = args.readme.read_text(encoding="utf-8")
        except OSError as err:
            print(f"readme_table3: {err}", file=sys.stderr)
            return 2
        updated, blocks = update_blocks(text, table3, paired)
        if not blocks:
            print(f"readme_table3: no `<!-- readme_table3 group|paired: LABEL -->` block in {args.readme}",
                  file=sys.stderr)
            return 2
        if updated != text:
            atomic_write_text(args.readme, updated)
        print(f"readme_table3: {blocks} block(s) in {args.readme}, {'rewritten' if updated != text else 'up to date'}")
        return 0
    print(group_table(table3, args.fish), end="\n\n")
    print(paired_table(paired, args.fish))
    return 0


if __name__ == "__main__":
    sys.exit(main())
