"""Every record found, with its status: nothing the tables leave out goes unnamed."""

from __future__ import annotations

import pandas as pd

ORDER = ("complete", "collapsed", "failed", "diverged", "interrupted", "running", "duplicate", "excluded", "malformed")


def status_tables(listing: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """(csv, markdown): one line per record (folder relative to the runs folder), and a markdown
    section with the counts per status and every record that is not a plain complete run."""
    csv = listing.copy()
    csv["seed"] = csv["seed"].astype("Int64")
    counts = csv["status"].value_counts()
    names = [s for s in ORDER if s in counts.index] + sorted(set(counts.index) - set(ORDER))
    lines = ["## Runs and their status", "",
             "complete: a result; collapsed: complete, but the last-epoch dev score equals the majority-class "
             "baseline (all one class; counted in the tables and flagged); failed / diverged: no result (flagged "
             "in the tables' cells); running / interrupted: not finished (a rerun resumes it); duplicate: the same "
             "config and seed as a newer complete record; excluded: random-init test model; malformed: the "
             "record could not be read.", "",
             "| status | records |", "|---|---|", *(f"| {s} | {int(counts[s])} |" for s in names), ""]
    notable = csv[csv["status"] != "complete"]
    if notable.empty:
        lines.append("Every record is a complete run.")
    else:
        lines += ["| folder | status | detail |", "|---|---|---|"]
        lines += [f"| {r.folder} | {r.status} | {' '.join(str(r.detail).split()).replace('|', '/')} |" for r in notable.itertuples()]
    return csv.set_index("folder"), "\n".join(lines) + "\n"
