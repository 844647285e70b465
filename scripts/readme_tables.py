"""The README's result tables, cut verbatim from committed reports into fenced blocks.

A block names what it shows, the report folder it is cut from and its argument:

    <!-- readme_tables group results/tables/minilm-l6-cpu: minilm-l6 / lora-r16 / fish-match.lora-r8-warmup -->
    ...
    <!-- /readme_tables -->

- `group LABEL`: the FISH row's budget group in table3.md (config, kind, each task's cell, avg).
- `controls LABEL`: the same less the group's other FISH rows (an ablation's variants at the same
  count): the FISH row against its vanilla, random and reverse rows only.
- `paired LABEL`: its paired differences in paired.md, a line per task, a column per comparison.
- `table1 LABEL; LABEL; ...`: Table 1 for these rows: each one's vanilla partner (its `FISH −
  vanilla` partner in paired.md, if any), then the row itself, every column of table1.md but `live`.
- `vanilla LABEL; LABEL; ...`: FISH − vanilla for these rows, a line per row, a column per task
  (and the average).

Every cell is copied as the report wrote it, so the README's numbers are the committed tables'
(tests/test_report.py checks the README against them, and that every block is current). Nothing
here reads a record: run the report first, then refill every block of a file:

    python scripts/readme_tables.py README.md            # --check: fail instead if a block is stale
    python scripts/readme_tables.py --print "group results/tables/minilm-l6-cpu: minilm-l6 / lora-r16 / fish-match.lora-r8-warmup"
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from fishtune.atomic import atomic_write_text

COMPARISONS = ("FISH − vanilla", "FISH − random", "FISH − reverse")
# each block kind and the report tables it is cut from
KINDS = {"group": ["table3"], "controls": ["table3"], "paired": ["paired"], "table1": ["table1", "paired"],
         "vanilla": ["paired"]}
BLOCK = re.compile(r"(<!-- readme_tables (\w+) (\S+): (.+?) -->\n)(.*?)(<!-- /readme_tables -->)", re.S)


_UNESCAPED_PIPE = re.compile(r"(?<!\\)\|")  # the report writes a `|` inside a cell as `\|`


class BlockError(Exception):
    """A block that cannot be filled (unknown kind, missing report, unknown row): one line."""


def _rows(markdown: str) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of the first pipe table in `markdown` whose header starts with `| config` or
    `| comparison`; cells stripped."""
    lines = [line for line in markdown.splitlines() if line.startswith("|")]
    cells = [[c.strip() for c in _UNESCAPED_PIPE.split(line.strip()[1:-1])] for line in lines]
    header = next((c for c in cells if c[0] in ("config", "comparison")), None)
    if header is None:
        raise BlockError("the report has no table here (no runs for it?)")
    return header, [c for c in cells if c != header and not set("".join(c)) <= set("-:")]


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def _row(rows: list[list[str]], label: str, where: str) -> list[str]:
    mine = [r for r in rows if r[0] == label]
    if not mine:
        raise BlockError(f"no row {label!r} in {where}")
    return mine[0]


def _differences(paired: str, fish: str) -> dict[str, dict[str, list[str]]]:
    """{task: {comparison: [partner, cell]}} of one FISH row, in the report's order. A README block
    shows one partner per comparison: a FISH row the report pairs with two (a tie of the linking
    rule) is a `BlockError` naming both, never one of them dropped."""
    header, rows = _rows(paired)
    col = {name: i for i, name in enumerate(header)}
    diff = next(i for i, name in enumerate(header) if name.startswith("FISH − partner"))
    cells: dict[str, dict[str, list[str]]] = {}
    for r in rows:
        if r[col["fish"]] == fish:
            by = cells.setdefault(r[col["task"]], {})
            if r[col["comparison"]] in by:
                raise BlockError(f"{fish!r} has two {r[col['comparison']]} partners in paired.md, "
                                 f"{by[r[col['comparison']]][0]!r} and {r[col['partner']]!r}; a README block "
                                 "shows one per comparison (see paired.md for both)")
            by[r[col["comparison"]]] = [r[col["partner"]], r[diff]]
    if not cells:
        raise BlockError(f"no paired differences of {fish!r} in paired.md")
    return cells


def group_table(table3: str, fish: str, *, controls_only: bool = False) -> str:
    """The FISH row's budget group (`controls_only`: less the group's other FISH rows): config,
    kind, each task's cell and avg."""
    header, rows = _rows(table3)
    col = {name: i for i, name in enumerate(header)}
    mine = _row(rows, fish, "table3.md")
    tasks = header[col["live"] + 1: col["avg"]]
    keep = ["config", "kind", *tasks, "avg"]
    group = [r for r in rows if r[col["budget"]] == mine[col["budget"]]
             and not (controls_only and r[col["kind"]] == "fish" and r is not mine)]
    return _table(keep, [[r[col[k]] for k in keep] for r in group])


def paired_table(paired: str, fish: str) -> str:
    """The FISH row's paired differences: a line per task (report order), a column per comparison."""
    cells = _differences(paired, fish)
    return _table(["task", *COMPARISONS],
                  [[task, *(by.get(c, ["", "–"])[1] for c in COMPARISONS)] for task, by in cells.items()])


def table1_rows(table1: str, paired: str, fishes: list[str]) -> str:
    """Each FISH row after its vanilla partner, every table1.md column but `live`."""
    header, rows = _rows(table1)
    keep = [i for i, name in enumerate(header) if name != "live"]
    out: list[list[str]] = []
    for fish in fishes:
        try:
            differences = _differences(paired, fish)
        except BlockError:  # a row without partners (full fine-tuning's vanilla, say): shown alone
            differences = {}
        partners = {by["FISH − vanilla"][0] for by in differences.values() if "FISH − vanilla" in by}
        for label in [*sorted(partners), fish]:
            line = [_row(rows, label, "table1.md")[i] for i in keep]
            if line not in out:
                out.append(line)
    return _table([header[i] for i in keep], out)


def vanilla_table(paired: str, fishes: list[str]) -> str:
    """FISH − vanilla: a line per FISH row, a column per task (and avg line) any of them has."""
    by_fish = {fish: {task: by["FISH − vanilla"][1] for task, by in _differences(paired, fish).items()
                      if "FISH − vanilla" in by} for fish in fishes}
    tasks = list(dict.fromkeys(t for cells in by_fish.values() for t in cells))
    tasks = [t for t in tasks if not t.startswith("avg")] + [t for t in tasks if t.startswith("avg")]
    return _table(["FISH row", *tasks], [[fish, *(cells.get(t, "–") for t in tasks)] for fish, cells in by_fish.items()])


def render(kind: str, folder: Path, argument: str) -> str:
    """The table a block `<!-- readme_tables KIND FOLDER: ARGUMENT -->` shows."""
    if kind not in KINDS:
        raise BlockError(f"unknown block kind {kind!r} (one of {', '.join(KINDS)})")
    try:
        text = {name: (folder / f"{name}.md").read_text(encoding="utf-8") for name in KINDS[kind]}
    except OSError as err:
        raise BlockError(f"{err.strerror}: {err.filename} (run `fishtune report --out {folder}` first)") from err
    labels = [label.strip() for label in argument.split(";") if label.strip()]
    if kind in ("group", "controls"):
        return group_table(text["table3"], argument, controls_only=kind == "controls")
    if kind == "paired":
        return paired_table(text["paired"], argument)
    if kind == "table1":
        return table1_rows(text["table1"], text["paired"], labels)
    return vanilla_table(text["paired"], labels)


def update_blocks(text: str, root: Path) -> tuple[str, int]:
    """`text` with every fenced block refilled (report folders relative to `root`), and their number."""
    def fill(block: re.Match) -> str:
        return f"{block[1]}{render(block[2], root / block[3], block[4])}\n{block[6]}"
    return BLOCK.subn(fill, text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("readme", nargs="?", type=Path, default=Path("README.md"),
                        help="the file whose blocks are refilled (default README.md; folders relative to it)")
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if a block is stale")
    parser.add_argument("--print", dest="show", metavar="'KIND FOLDER: ARGUMENT'",
                        help="print one block's table instead (folder relative to the current directory)")
    args = parser.parse_args(argv)
    try:
        if args.show is not None:
            match = re.fullmatch(r"(\w+) (\S+): (.+)", args.show.strip())
            if not match:
                raise BlockError(f"--print wants 'KIND FOLDER: ARGUMENT', got {args.show!r}")
            print(render(match[1], Path(match[2]), match[3]))
            return 0
        text = args.readme.read_text(encoding="utf-8")
        updated, blocks = update_blocks(text, args.readme.resolve().parent)
    except (BlockError, OSError) as err:
        print(f"readme_tables: {err}", file=sys.stderr)
        return 2
    except (KeyError, StopIteration) as err:   # a table without the column or row a block cuts
        print(f"readme_tables: a table lacks what a block reads ({type(err).__name__}: {err}); "
              "regenerate it with `fishtune report`", file=sys.stderr)
        return 2
    if not blocks:
        print(f"readme_tables: no `<!-- readme_tables KIND FOLDER: ARGUMENT -->` block in {args.readme}", file=sys.stderr)
        return 2
    if updated == text:
        print(f"readme_tables: {blocks} block(s) in {args.readme}, up to date")
        return 0
    if args.check:
        print(f"readme_tables: {args.readme} has stale blocks; run: python scripts/readme_tables.py {args.readme}",
              file=sys.stderr)
        return 1
    atomic_write_text(args.readme, updated)
    print(f"readme_tables: {blocks} block(s) in {args.readme}, rewritten")
    return 0


if __name__ == "__main__":
    sys.exit(main())
