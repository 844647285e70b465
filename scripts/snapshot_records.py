#!/usr/bin/env python3
"""Copy the records (results.json + config.yaml) of complete runs into a folder kept in git.

    python scripts/snapshot_records.py results/runs results/study/minilm-l6 --model minilm-l6 --task mrpc --task rte

Weights, masks and checkpoints stay behind (they are large and reproducible from the config);
the README's tables are regenerated from the snapshot with `fishtune report --runs <dest>`.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", type=Path)
    parser.add_argument("dest", type=Path)
    parser.add_argument("--model", action="append", help="only these models")
    parser.add_argument("--task", action="append", help="only these tasks")
    args = parser.parse_args()
    copied = 0
    for record_path in sorted(args.source.rglob("results.json")):
        rec = json.loads(record_path.read_text())
        if rec.get("status") != "complete" or rec.get("test_model"):
            continue
        if (args.model and rec["model"] not in args.model) or (args.task and rec["task"] not in args.task):
            continue
        target = args.dest / record_path.parent.relative_to(args.source)
        target.mkdir(parents=True, exist_ok=True)
        for name in ("results.json", "config.yaml"):
            shutil.copy2(record_path.parent / name, target / name)
        copied += 1
    print(f"copied {copied} complete run records to {args.dest}")


if __name__ == "__main__":
    main()
