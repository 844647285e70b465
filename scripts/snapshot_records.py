#!/usr/bin/env python3
"""Copy the records (results.json + config.yaml) of complete runs into a folder kept in git.

    python scripts/snapshot_records.py results/runs-cpu results/study/minilm-l6-cpu
    python scripts/snapshot_records.py results/runs results/study/minilm-l6 --model minilm-l6 --task mrpc --task rte

Only complete runs of real models are copied: runs that are running, interrupted, failed or diverged
stay behind (rerun them; the report lists them from the runs folder), and so do random-init
test-model runs and records that cannot be read (named on stderr). Weights, masks and checkpoints
stay behind too (large, and reproducible from the config): the record carries what the report
needs (`mask_stats.selected_by_param` for the mask anatomy). Idempotent: rerunning it copies the
same files again and changes nothing else. The README's tables are regenerated from the snapshot
with `fishtune report --runs <dest>`.

The other way, `--keep-existing` restores committed records into a runs folder without touching any
readable record already there (a live or newer run keeps its own; a damaged one is replaced), so that a sweep rerun on a fresh clone
skips every committed cell (`make reproduce-cpu` does this first):

    python scripts/snapshot_records.py --keep-existing results/study/minilm-l6-cpu results/runs-cpu
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from collections import Counter
from pathlib import Path

from fishtune.atomic import atomic_write
from fishtune.record import record_problem


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", type=Path)
    parser.add_argument("dest", type=Path)
    parser.add_argument("--model", action="append", help="only these models")
    parser.add_argument("--task", action="append", help="only these tasks")
    parser.add_argument("--keep-existing", action="store_true",
                        help="leave a run folder that already has a results.json as it is")
    args = parser.parse_args(argv)
    if not args.source.is_dir():
        print(f"snapshot_records: no folder {args.source}", file=sys.stderr)
        return 2
    if args.dest.resolve() == args.source.resolve():
        print(f"snapshot_records: {args.source} is both the source and the destination; nothing to copy",
              file=sys.stderr)
        return 0
    left: Counter[str] = Counter()
    copied = 0
    for record_path in sorted(args.source.rglob("results.json")):
        try:
            rec = json.loads(record_path.read_text(encoding="utf-8"))
            status, test_model, model, task = rec.get("status"), rec.get("test_model"), rec["model"], rec["task"]
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
            print(f"snapshot_records: skipped {record_path}: malformed record ({type(err).__name__}: {err})",
                  file=sys.stderr)
            left["malformed"] += 1
            continue
        if status != "complete" or test_model:
            left["test model" if test_model else str(status)] += 1
            continue
        if (problem := record_problem(rec)) is not None:   # complete without a finite score: a run refuses it
            print(f"snapshot_records: skipped {record_path}: malformed record ({problem})", file=sys.stderr)
            left["malformed"] += 1
            continue
        if (args.model and model not in args.model) or (args.task and task not in args.task):
            continue
        target = args.dest / record_path.parent.relative_to(args.source)
        if args.keep_existing and _readable(target / "results.json"):
            left["already there"] += 1
            continue
        # config.yaml first, the record last, each through a temporary file and a rename: a copy cut
        # short leaves no half-written record (which would block its cell for good).
        for name in ("config.yaml", "results.json"):
            if (record_path.parent / name).exists():
                atomic_write(target / name, lambda tmp, src=record_path.parent / name: shutil.copy2(src, tmp))
        copied += 1
    rest = ", ".join(f"{n} {s}" for s, n in sorted(left.items()))
    print(f"copied {copied} complete run records to {args.dest}" + (f"; left behind: {rest}" if rest else ""))
    return 0


def _readable(path: Path) -> bool:
    """Whether `path` holds a record that can be read (an unreadable one is replaced, not kept)."""
    try:
        return isinstance(json.loads(path.read_text(encoding="utf-8")), dict)
    except (OSError, ValueError):
        return False


if __name__ == "__main__":
    sys.exit(main())
