"""`fishtune report`: run records -> the paper's tables (CSV, LaTeX, Markdown) and figures (PNG, PDF).

Outputs (in --out): table1 (methods × GLUE metrics), table3 (contrastive study by budget), table5
(cost), table6 (one task across models, --table6-task), paired (FISH − vanilla/random/reverse over
matched seeds, 95% t CI), mask_share.csv, mask_anatomy.csv, mask_sites.csv, ablation.csv,
paired_ablation (each ablated value − the shipped default, over matched seeds), runs_status (every
record and its status), tables.md (all tables), and the figures convergence_*, mask_anatomy_*,
mask_sites_*, ablation_*.
The same records always give byte-identical files, and rerunning into the same --out leaves exactly
the files a fresh folder would get: a figure whose config or task is gone from the records is deleted
(only the report's own convergence_/mask_anatomy_/mask_sites_/ablation_ PNG and PDF files; --no-figures touches no
figure). The table files have fixed names and are always rewritten. Everything is written into a
hidden folder inside --out first (`.report-*`, so the moves are renames even where --out is a mount
point) and moved into place only once the whole report is made: a report that fails (a disk error, a
bug, Ctrl-C or SIGTERM) leaves --out as it was, never old tables beside new ones.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path

from ..atomic import atomic_write_text
from ..errors import FishtuneError, Terminated, sigterm_interrupts
from .ablation import ablation_figures, ablation_paired, ablation_table
from .anatomy import anatomy_figures, anatomy_table, run_shares, site_figures, site_share_table
from .cells import CELL_NOTE, with_labels
from .cost import cost_table
from .figures import convergence_figures, remove_stale_figures
from .pairs import __doc__ as PAIRS_DOC
from .pairs import paired_differences
from .records import scan_records, train_subsets
from .render import to_markdown, write_table
from .status import status_tables
from .tables import mask_share_table, table1, table3, table6

log = logging.getLogger("fishtune.report")

BUDGET_NOTE = ("trainable: method entries the optimizer updates (selected + dense group; the task head, the same "
               "in every row of a model, is not counted); backbone_pct: trainable / the pre-trained model's "
               "parameters without its head (records that predate `trainable.backbone`: –); live: trainable "
               "entries that can move (see README, \"Budget that can never move\").")


def subset_note(subsets: dict[str, list[int]]) -> str:
    """` Training subsets: sst2 10,000 examples (...)`, or "" when every run trained on its whole split."""
    if not subsets:
        return ""
    listed = "; ".join(f"{task} {', '.join(f'{n:,}' for n in caps)}" for task, caps in subsets.items())
    return (f" Training subsets (train.max_train_samples, a seeded draw per run; not part of the row, "
            f"which is the same config on every task): {listed} examples.")


def main(argv: list[str]) -> int:
    try:
        return _main(argv)
    except FishtuneError as err:  # e.g. --out is a file, or the disk is full: one line
        print(f"fishtune report: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as err:  # Ctrl-C, or SIGTERM (errors.Terminated) while the report was made
        print(f"fishtune report: {'terminated (SIGTERM)' if isinstance(err, Terminated) else 'interrupted'}; "
              "--out keeps its last report", file=sys.stderr)
        return 143 if isinstance(err, Terminated) else 130


def _main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="fishtune report", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", default="results/runs", help="folder searched for results.json (any depth)")
    parser.add_argument("--out", default="results/tables", help="folder for the tables and figures")
    parser.add_argument("--task", action="append", help="only these tasks (repeatable)")
    parser.add_argument("--model", action="append", help="only these models (repeatable)")
    parser.add_argument("--seed", action="append", type=int, help="only these seeds (repeatable)")
    parser.add_argument("--table6-task", help="the task of Table 6 (default: sst2)")
    parser.add_argument("--no-figures", action="store_true", help="tables only")
    parser.add_argument("--include-test-models", action="store_true",
                        help="also tabulate random-init test models (never results)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[fishtune report] %(message)s", force=True)
    logging.getLogger("fontTools").setLevel(logging.WARNING)  # PDF font subsetting chatter

    for flag, value in (("--out", args.out), ("--runs", args.runs), ("--table6-task", args.table6_task)):
        if value is not None and not value.strip():
            what = "a task" if flag == "--table6-task" else "a folder (or leave the flag out)"
            print(f"fishtune report: error: {flag} is empty; give {what}", file=sys.stderr)
            return 2
    runs_root = Path(args.runs)
    if not runs_root.is_dir():
        print(f"fishtune report: error: no run folder {runs_root}; run `fishtune run` first or pass --runs",
              file=sys.stderr)
        return 2
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        print(f"fishtune report: error: --out {out} is a file, not a folder", file=sys.stderr)
        return 2
    records = scan_records(runs_root, include_test_models=args.include_test_models)
    runs, others, listing = records.runs, records.others, records.listing
    for column, wanted in (("task", args.task), ("model", args.model), ("seed", args.seed)):
        if wanted:
            found = set(listing[column].dropna())
            unknown = [w for w in wanted if w not in found]
            if unknown:  # a typo would otherwise report nothing, over the folder's last report
                print(f"fishtune report: error: --{column} {', '.join(map(str, unknown))}: no record under "
                      f"{runs_root} has it (found: {', '.join(map(str, sorted(found))) or 'none'}); nothing written",
                      file=sys.stderr)
                return 2
            runs = runs[runs[column].isin(wanted)] if not runs.empty else runs
            others = others[others[column].isin(wanted)] if not others.empty else others
            listing = listing[listing[column].isin(wanted) | listing[column].isna()]
    table6_task = args.table6_task or "sst2"
    if args.table6_task and (runs.empty or table6_task not in set(runs["task"])):
        print(f"fishtune report: error: --table6-task {table6_task}: no complete run of that task "
              f"(found: {', '.join(sorted(set(runs['task']))) if not runs.empty else 'none'}); nothing written",
              file=sys.stderr)
        return 2
    if listing.empty:
        print(f"fishtune report: error: no run records under {runs_root}; nothing written", file=sys.stderr)
        return 1
    status_csv, status_md = status_tables(listing)
    if runs.empty:   # --out keeps its last report whole; the listing says why there is no new one
        print(status_md)
        print(f"fishtune report: error: no complete runs under {runs_root} (matching the filters); every record "
              f"and its status above; nothing written to {out}", file=sys.stderr)
        return 1
    created = not out.exists()
    stage = _stage_in(out)
    try:
        with sigterm_interrupts():
            figures = _write_report(args, stage, runs, others, status_csv, status_md, table6_task)
            written = _move_into(stage, out)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        if created:   # leave no empty --out behind
            try:
                out.rmdir()
            except OSError:
                pass
        raise
    shutil.rmtree(stage, ignore_errors=True)
    if not args.no_figures:
        for path in remove_stale_figures(out, [out / p.name for p in figures]):
            log.info("removed %s (no longer made from these records)", path)
    print((out / "table1.md").read_text(encoding="utf-8"))
    print(f"{len(runs)} complete runs ({len(listing)} records) -> {out}/: table1, table3, table5, table6, paired, "
          f"paired_ablation (.csv/.tex/.md), mask_share.csv, mask_anatomy.csv, mask_sites.csv, ablation.csv, "
          f"runs_status.csv/.md, tables.md, {len(figures)} figure files ({len(written)} files in all)")
    return 0


def _stage_in(out: Path) -> Path:
    """A fresh hidden folder inside `out` (created if need be): moving a file from it is a rename, on
    the same file system whatever is mounted where."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=".report-", dir=out))
    except OSError as err:
        raise FishtuneError(f"cannot write {out}: {err.strerror or err}") from None


def _move_into(stage: Path, out: Path) -> list[Path]:
    """Every file of the finished report from `stage` into `out`, each by one rename."""
    try:
        moved = []
        for path in sorted(stage.iterdir()):
            os.replace(path, out / path.name)
            moved.append(out / path.name)
    except OSError as err:
        raise FishtuneError(f"cannot write {out}: {err.strerror or err}") from None
    return moved


def _write_report(args, out: Path, runs, others, status_csv, status_md: str, table6_task: str) -> list[Path]:
    """Every table and figure of the report into `out` (the staging folder); returns the figures."""
    atomic_write_text(out / "runs_status.csv", status_csv.to_csv(lineterminator="\n"))
    atomic_write_text(out / "runs_status.md", status_md)
    runs, others = with_labels(runs, others)
    subsets = subset_note(train_subsets(runs))

    sections = [
        write_table(out, "table1", *table1(runs, others), title="Table 1: methods × GLUE (dev, last epoch)",
                    note=f"{CELL_NOTE} avg: mean of the task scores (a task's score is the mean of its metrics), "
                         f"only for rows with every task; (n=1–3): its task cells have 1 to 3 seeds, so it mixes "
                         f"seeds (the paired avg does not). {BUDGET_NOTE}{subsets}"),
        write_table(out, "table3", *table3(runs, others), title="Table 3: contrastive study (dev score per task)",
                    note=f"Rows grouped by budget: same model, method family, trainable count, device and precision. "
                         f"{CELL_NOTE} avg: mean of the task scores, only for rows with every task; (n=1–3): its task "
                         f"cells have 1 to 3 seeds, so it mixes seeds (the paired avg does not).{subsets}"),
        write_table(out, "paired", *paired_differences(runs),
                    title="Paired differences: FISH − vanilla / random / reverse over matched seeds",
                    note=" ".join(PAIRS_DOC.split())),
        write_table(out, "table5", *cost_table(runs), title="Table 5: cost (means over seeds)",
                    note="Times in seconds: warm-up and Fisher (the mask stage), training per epoch, whole run; "
                         "peak memory: host RSS and peak CUDA allocation (–: none); mask KiB: the mask's memory "
                         "during training. runs: complete runs averaged."),
        write_table(out, "table6", *table6(runs, others, table6_task),
                    title=f"Table 6: {table6_task} across models × methods × masks", note=CELL_NOTE),
    ]
    share = mask_share_table(runs)
    atomic_write_text(out / "mask_share.csv", share.to_csv(lineterminator="\n") if not share.empty else "")
    sections.append("## Share of the mask per parameter family (means over seeds)\n\n"
                    + (to_markdown(share.reset_index(level=1)) if not share.empty else "No masked runs.\n"))
    shares = run_shares(runs)
    anatomy = anatomy_table(shares)
    atomic_write_text(out / "mask_anatomy.csv", anatomy.to_csv(index=False, lineterminator="\n"))
    sites = site_share_table(shares)
    atomic_write_text(out / "mask_sites.csv", sites.to_csv(index=False, lineterminator="\n"))
    ablations = ablation_table(runs)
    atomic_write_text(out / "ablation.csv", ablations.to_csv(index=False, lineterminator="\n"))
    sections.append(write_table(
        out, "paired_ablation", *ablation_paired(runs), title="Ablations: each value − the default, over matched seeds",
        note="Where an ablation's series holds the value the shipped configs give its key (mask/fish.yaml, "
             "train/default.yaml: e.g. mask.warmup_steps 50, mask.num_samples 1024, mask.scope global), each other "
             "value's runs are paired with the default's on the same task and seed: value − default, the mean, a 95% "
             "t interval over seeds (mean ± t(0.975, n−1)·s/√n) and n, and each seed's difference. Keys without a "
             "shipped default (mask.kept, the budget) have no lines here; ablation.csv has every point."))
    sections.append(status_md)
    atomic_write_text(out / "tables.md", "\n\n".join(s.rstrip("\n") for s in sections) + "\n")

    if args.no_figures:
        return []
    return (convergence_figures(runs, out) + anatomy_figures(anatomy, out) + site_figures(shares, out)
            + ablation_figures(ablations, out))
