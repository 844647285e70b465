"""Writing a table three ways: CSV (the numbers), LaTeX booktabs and Markdown (the display strings).

Everything is a pure function of the tables (no dates, no absolute paths), written atomically, so
a report regenerated from the same records is byte-identical.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..atomic import atomic_write_text


def to_markdown(frame: pd.DataFrame) -> str:
    """A GitHub-flavoured markdown table of `frame` (index as the first column)."""
    header = [str(frame.index.name or ""), *map(str, frame.columns)]
    lines = ["| " + " | ".join(map(_md, header)) + " |", "|" + "---|" * len(header)]
    for index, row in frame.iterrows():
        cells = index if isinstance(index, tuple) else (index,)
        lines.append("| " + " | ".join([*map(_md, cells), *("–" if _missing(v) else _md(v) for v in row)]) + " |")
    return "\n".join(lines) + "\n"


def to_latex(frame: pd.DataFrame, *, caption: str = "") -> str:
    """A booktabs LaTeX tabular of `frame` (index as the first column; needs \\usepackage{booktabs})."""
    names = list(frame.index.names) if isinstance(frame.index, pd.MultiIndex) else [frame.index.name or ""]
    cols = "l" * len(names) + "r" * len(frame.columns)
    lines = [f"% {_tex(caption)}"] if caption else []
    lines += [f"\\begin{{tabular}}{{{cols}}}", "\\toprule",
              " & ".join([*(_tex(str(n or "")) for n in names), *(_tex(str(c)) for c in frame.columns)]) + " \\\\",
              "\\midrule"]
    for index, row in frame.iterrows():
        cells = index if isinstance(index, tuple) else (index,)
        lines.append(" & ".join([*(_tex(str(c)) for c in cells),
                                 *("--" if _missing(v) else _tex(str(v)) for v in row)]) + " \\\\")
    lines += ["\\bottomrule", "\\end{tabular}"]
    return "\n".join(lines) + "\n"


def _missing(value: object) -> bool:
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def _md(value: object) -> str:
    """A cell's text: `|` escaped, line breaks as spaces (a name from a record may hold either)."""
    return " ".join(str(value).replace("|", "\\|").splitlines())


def _tex(text: str) -> str:
    out = text.replace("\\", "\x00")
    for char in "&%$#_{}":
        out = out.replace(char, "\\" + char)
    out = out.replace("\x00", "\\textbackslash{}").replace("~", "\\textasciitilde{}").replace("^", "\\textasciicircum{}")
    return out.replace("±", "$\\pm$").replace("−", "$-$").replace("–", "--").replace("×", "$\\times$")


def write_table(out: Path, name: str, csv: pd.DataFrame, shown: pd.DataFrame, *, title: str,
                note: str = "") -> str:
    """`<name>.csv`, `<name>.tex`, `<name>.md`; returns the markdown section (for tables.md)."""
    if csv.empty:
        body = "No runs for this table.\n"
        atomic_write_text(out / f"{name}.csv", "")
    else:
        body = to_markdown(shown)
        atomic_write_text(out / f"{name}.csv", csv.to_csv(lineterminator="\n"))
    atomic_write_text(out / f"{name}.tex", to_latex(shown, caption=f"{title}. {note}".strip()) if not csv.empty
                      else f"% {_tex(title)}: no runs\n")
    section = f"## {title}\n\n" + (f"{note}\n\n" if note else "") + body
    atomic_write_text(out / f"{name}.md", section)
    return section
