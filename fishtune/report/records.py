"""Read run records from disk into flat tables (no torch, no training code).

Pooling rule: seeds are pooled only when their comparable configs (the resolved config minus the
seed and execution-only keys, with the device and precision it ran on: `comparison.config`) are
equal, i.e. when their digests are (12 hex digits of the flat config, computed here for every
record). A record made before `comparison` existed has its comparable config rebuilt from its
folder's `config.yaml` by the same steps (`fishtune.config.saved_comparable_config`). Two complete
records with the same digest and seed are one cell run twice: the newest is used and the other is
named in the log, never both.

`scan_records` also keeps what is *not* a result, so that nothing is dropped silently: runs that
failed, diverged, were interrupted or are still running (with the config and seed they belong to,
so the tables can say "1 failed" in the right cell), malformed records, test-model runs and
duplicates, each with its folder and status in `listing`.

Training subsets: `train.max_train_samples` is read against the task (a cap at or above a task's
train size is no cap, `fishtune.config.effective_max_train_samples`), so one experiment's cap is
10000 on SST-2 and none on MRPC. A row is one config across tasks, so the cap leaves the row's
identity (`row_config`) wherever every run of that config on that task has the same cap: the
subset is a property of the task's data, named in the table notes (`train_subsets`). Where one
config ran one task with two caps, the cap stays in that config's rows on every task and tells them
apart (a task with one cap joins the row of that cap).

Collapsed runs: a complete run whose last-epoch dev `score` equals the record's `majority_baseline`
score (the same metrics computed for always predicting the training majority class; regression:
its mean) to within `COLLAPSE_TOL` is marked `collapsed`. Such a run is still a result (it counts
in the means) and is flagged in every cell and in the listing.
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import yaml

from ..config import digest, flatten, saved_comparable_config
from ..errors import FishtuneError
from .schema import COUNT_RANGE, check_identity, check_result, check_status

log = logging.getLogger(__name__)

# what reading one record can raise: it is then listed (malformed, or not placeable), never a crash
_UNREADABLE = (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError, yaml.YAMLError, FishtuneError)
COLLAPSE_TOL = 1e-6  # scores are stored with 4 decimals: equal predictions give equal numbers
STRATEGY_KINDS = ("fish", "random", "reverse")


@dataclass
class Records:
    runs: pd.DataFrame      # complete runs, one per (digest, seed): the newest
    others: pd.DataFrame    # failed / diverged runs (no result) that no complete run supersedes
    listing: pd.DataFrame   # every results.json found: folder (relative to the root), status, detail, ...


LISTING_COLUMNS = ["folder", "status", "task", "model", "method_tag", "mask_tag", "seed", "detail"]


def load_records(root: str | Path, *, include_test_models: bool = False) -> pd.DataFrame:
    """One row per finished run under `root` (every `results.json`, any depth); see `scan_records`."""
    return scan_records(root, include_test_models=include_test_models).runs


def scan_records(root: str | Path, *, include_test_models: bool = False) -> Records:
    """Every record under `root`: complete runs (deduplicated), the others, and a listing of all.

    Runs of random-init test models are left out (listed as such) unless `include_test_models`;
    a record that cannot be read is named in the log and the listing, never a crash.
    """
    root = Path(root)
    rows, others, listing = [], [], []
    for path in _record_paths(root):
        rel = str(path.parent.relative_to(root))
        try:
            rec = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(rec, dict):
                raise TypeError("not a JSON object")
            check_status(rec)   # a status no run writes is no record of a run (`fishtune plan` agrees)
            status = rec.get("status")
            entry = {"folder": rel, "status": str(status), **{k: _text(rec.get(k)) for k in _NAMES},
                     "seed": _seed(rec.get("seed")), "detail": ""}
            if rec.get("test_model") and not include_test_models:
                listing.append({**entry, "status": "excluded", "detail": "random-init test model"})
                log.info("skipped %s: random-init test model", path.parent)
                continue
            if status == "complete":
                row = _flatten(rec, path.parent, rel)
                rows.append(row)
                entry["status"] = "collapsed" if row["collapsed"] else "complete"
                if row["collapsed"]:
                    entry["detail"] = f"dev score {row['score']:.2f} = majority class"
            else:
                entry["detail"] = _one_line(str(rec.get("error") or ""), root)
                try:
                    identity = _identity(rec, path.parent, rel)  # also checks that the record is readable
                    if status in ("failed", "diverged"):  # running / interrupted: not (yet) a result, listed only
                        others.append({**identity, **_intended_budget(rec), "status": str(status)})
                except _UNREADABLE as err:
                    reason = _one_line(str(err), root)
                    entry["detail"] = (entry["detail"] + f" (no config to place it in a table: {reason})").strip()
                log.info("skipped %s: status %s", path.parent, status)
            listing.append(entry)
        except _UNREADABLE as err:
            log.info("skipped %s: malformed record (%s: %s)", path, type(err).__name__, err)
            listing.append({"folder": rel, "status": "malformed", "task": None, "model": None, "method_tag": None,
                            "mask_tag": None, "seed": None, "detail": _one_line(f"{type(err).__name__}: {err}", root)})
    runs = _borrow_baselines(pd.DataFrame(rows))
    for folder in runs.loc[runs["collapsed"] & runs["baseline_borrowed"], "folder"] if not runs.empty else []:
        listing[[e["folder"] for e in listing].index(folder)].update(
            status="collapsed", detail="dev score = majority class (baseline of a record with the same task and data)")
    listing_frame = pd.DataFrame(listing, columns=LISTING_COLUMNS)
    if not runs.empty:
        runs, superseded = _drop_duplicates(runs)
        for folder, kept in superseded:
            listing_frame.loc[listing_frame["folder"] == folder, ["status", "detail"]] = \
                ["duplicate", f"superseded by {kept} (same config and seed, newer)"]
    others_frame = pd.DataFrame(others)
    runs, others_frame = _task_relative_caps(runs, others_frame)
    if not others_frame.empty and not runs.empty:
        done = set(zip(runs["digest"], runs["seed"]))
        keep = [(d, s) not in done for d, s in zip(others_frame["digest"], others_frame["seed"])]
        for folder in others_frame.loc[[not k for k in keep], "folder"]:
            listing_frame.loc[listing_frame["folder"] == folder, "detail"] += \
                " (a complete run of this config and seed exists)"
        others_frame = others_frame[keep].reset_index(drop=True)
    listing_frame = listing_frame.sort_values("folder", kind="stable").reset_index(drop=True)
    return Records(runs, others_frame, listing_frame)


_NAMES = ("task", "model", "method_tag", "mask_tag")


def _record_paths(root: Path) -> list[Path]:
    """Every `results.json` below `root`, with the links to nothing that `rglob` passes over: each is a
    record that cannot be read, listed as malformed, not silently absent."""
    found = set(root.rglob("results.json"))
    for folder, _, files in os.walk(root):
        path = Path(folder) / "results.json"
        if "results.json" in files and path.is_symlink() and not path.exists():
            found.add(path)
    return sorted(found)


def _text(value: object) -> str | None:
    """A name for the listing: the record's string, or None where it holds something else."""
    return value if isinstance(value, str) else None


def _seed(value: object) -> int | None:
    ok = isinstance(value, int) and not isinstance(value, bool) and COUNT_RANGE[0] <= value <= COUNT_RANGE[1]
    return value if ok else None


def _one_line(message: str, root: Path) -> str:
    """An error message as one table line: whitespace runs (newlines) collapsed, the runs folder's own
    path left out, so the listing reads the same wherever the runs folder is."""
    for prefix in {str(root.resolve()), str(root)}:
        message = message.replace(prefix + "/", "")
    return " ".join(message.split())


CAP = "train.max_train_samples"


def _task_relative_caps(*frames: pd.DataFrame) -> list[pd.DataFrame]:
    """The frames with `train_cap` (each run's cap on its task) and the cap dropped from `row_config`
    (and `row_digest`) unless some task of the config ran with two caps (module docstring)."""
    # per frame: (the row config's digest without the cap, task) of each run
    keys = [[(_digest({k: v for k, v in c.items() if k != CAP}), t) for c, t in zip(f["row_config"], f["task"])]
            if not f.empty else [] for f in frames]
    caps: dict[tuple[str, str], set[str]] = {}
    for frame, frame_keys in zip(frames, keys):
        for config, key in zip(frame.get("row_config", []), frame_keys):
            caps.setdefault(key, set()).add(str(config.get(CAP)))
    # configs with two caps on some task keep the cap on every task, so that equal digests are equal
    # configs (the rows are grouped by digest: one that dropped the cap would never meet one that kept it)
    split = {base for (base, _), found in caps.items() if len(found) > 1}
    out = []
    for frame, frame_keys in zip(frames, keys):
        if frame.empty:
            out.append(frame)
            continue
        configs = [c if key[0] in split else {k: v for k, v in c.items() if k != CAP}
                   for c, key in zip(frame["row_config"], frame_keys)]
        out.append(frame.assign(train_cap=[c.get(CAP) for c in frame["row_config"]], row_config=configs,
                                row_digest=[_digest(c) for c in configs]))
    return out


def train_subsets(runs: pd.DataFrame) -> dict[str, list[int]]:
    """{task: its caps} for the tasks some run trained on a subset of (cap not in the row label)."""
    found: dict[str, set[int]] = {}
    if runs.empty or "train_cap" not in runs:
        return {}
    for task, cap, config in zip(runs["task"], runs["train_cap"], runs["row_config"]):
        if cap is not None and not pd.isna(cap) and CAP not in config:
            found.setdefault(task, set()).add(int(cap))
    return {task: sorted(caps) for task, caps in sorted(found.items())}


def _drop_duplicates(runs: pd.DataFrame) -> tuple[pd.DataFrame, list[tuple[str, str]]]:
    """Keep the newest of several complete records with the same digest and seed."""
    runs = runs.sort_values(["finished_at", "folder"], na_position="first", kind="stable")
    dup = runs.duplicated(["digest", "seed"], keep="last")
    superseded = []
    for _, row in runs[dup].iterrows():
        kept = runs[~dup & (runs["digest"] == row["digest"]) & (runs["seed"] == row["seed"])].iloc[0]
        log.warning("duplicate run of one config and seed: %s and %s; using the newest, %s",
                    row["path"], kept["path"], kept["path"])
        superseded.append((row["folder"], kept["folder"]))
    return runs[~dup].sort_values(["task", "folder"], kind="stable").reset_index(drop=True), superseded


def _data_key(row: pd.Series) -> tuple:
    """What the majority baseline depends on: the task, the train subset (and its seed), the dev subset."""
    config = row["row_config"]
    subset = config.get("train.max_train_samples")
    return (row["task"], subset, row["seed"] if subset is not None else None, config.get("train.max_eval_samples"),
            config.get("train.eval_subset_seed", 0))


def _borrow_baselines(runs: pd.DataFrame) -> pd.DataFrame:
    """Records made before `majority_baseline` existed take it from a record of the same task and data."""
    if runs.empty:
        return runs
    runs = runs.assign(baseline_borrowed=False)
    known = {}
    for _, row in runs.dropna(subset=["baseline_score"]).iterrows():
        known.setdefault(_data_key(row), row["baseline_score"])
    for i, row in runs[runs["baseline_score"].isna()].iterrows():
        baseline = known.get(_data_key(row))
        if baseline is not None:
            runs.at[i, "baseline_score"] = baseline
            runs.at[i, "baseline_borrowed"] = True
            runs.at[i, "collapsed"] = abs(row["score"] - baseline) < COLLAPSE_TOL
    return runs


def comparable(rec: dict, folder: Path) -> dict:
    """The flat comparable config of a record: recorded, else rebuilt from `config.yaml`."""
    if (rec.get("comparison") or {}).get("config") is not None:
        return dict(rec["comparison"]["config"])
    config = yaml.safe_load((folder / "config.yaml").read_text(encoding="utf-8"))
    runtime = {"device": str((rec.get("hardware") or {}).get("device", "cpu")).split(":")[0],
               "precision": rec.get("precision", "fp32")}
    return flatten(saved_comparable_config(config, runtime))


def _digest(flat: dict) -> str:
    return digest(flat, 12)  # the same 12 digits as `comparison.digest`


def kind_of(mask: str, config: dict) -> str:
    """vanilla (no mask) or the mask's strategy (fish, random, reverse; `fish_live` is fish)."""
    if mask == "none":
        return "vanilla"
    strategy = config.get("mask.strategy") or mask
    return strategy if strategy in STRATEGY_KINDS else str(mask)


def _identity(rec: dict, folder: Path, rel: str) -> dict:
    """What places a record in a table row and cell: task, tags, seed, digests, comparable config."""
    check_identity(rec)
    config = comparable(rec, folder)
    # The model a run read is not in its comparable config (`model.revision` names no folder): two
    # snapshots of a Hub id, or two states of a `model.path` folder, are two models, never one row.
    for key, field in (("model.snapshot", "model_revision"), ("model.files_sha256", "model_files_sha256")):
        if rec.get(field):
            config[key] = rec[field]
    row_config = {k: v for k, v in config.items() if not k.startswith("task.")}
    return {
        "task": rec["task"], "model": rec["model"], "method": rec["method"], "method_tag": rec.get("method_tag"),
        "mask": rec["mask"], "mask_tag": rec.get("mask_tag"), "seed": int(rec["seed"]),
        "kind": kind_of(rec["mask"], config),
        "digest": _digest(config),  # of the flat config, for old and new records alike (not `comparison.digest`)
        "row_digest": _digest(row_config), "row_config": row_config, "folder": rel, "path": str(folder),
    }


def _flatten(rec: dict, folder: Path, rel: str) -> dict:
    check_result(rec)
    stats = rec.get("mask_stats") or {}
    families = stats.get("by_family", {})
    time_s = rec.get("time_s", {})
    memory = rec.get("memory") or {}
    trainable = rec["trainable"]
    epochs = rec.get("epochs", [])
    score = float(rec["score"])
    baseline = (rec.get("majority_baseline") or {}).get("score")
    train_s = time_s.get("train")
    return {
        **_identity(rec, folder, rel),
        "score": score, "best_score": rec.get("best_score"),
        "baseline_score": None if baseline is None else float(baseline),
        "collapsed": baseline is not None and abs(score - float(baseline)) < COLLAPSE_TOL,
        "trainable": int(trainable["peft_selected"]), "peft_total": int(trainable["peft_total"]),
        "live": _int_or_none(trainable.get("peft_live")), "head": int(trainable["head"]),
        "dense": int(trainable.get("dense", 0)), "inference": _int_or_none(trainable.get("inference")),
        "backbone": _int_or_none(trainable.get("backbone")),
        "share_by_family": {f: v.get("share_of_mask") for f, v in families.items()},
        "selected_by_param": stats.get("selected_by_param"),
        "mask_storage_bytes": _int_or_none(rec.get("mask_storage_bytes")),
        "time_total_s": time_s.get("total"), "time_train_s": train_s, "time_eval_s": time_s.get("eval"),
        "time_fisher_s": time_s.get("fisher"), "time_fisher_warmup_s": time_s.get("fisher_warmup"),
        "time_epoch_s": train_s / len(epochs) if train_s is not None and epochs else None,
        "peak_rss_bytes": memory.get("cpu_peak_rss_bytes"), "peak_gpu_bytes": memory.get("gpu_peak_allocated_bytes"),
        "device": str((rec.get("hardware") or {}).get("device")), "epochs": epochs,
        "metrics": (rec.get("last") or {}).get("dev", {}), "finished_at": rec.get("finished_at"),
    }


def _intended_budget(rec: dict) -> dict:
    """A run without a result still names the count it was to train (the record is started with it),
    so Table 3 can place a config whose every run failed in its budget group; NaN where it does not."""
    trainable = rec.get("trainable") or {}
    selected = trainable.get("peft_selected")
    return {"trainable": math.nan if selected is None else int(selected), "dense": int(trainable.get("dense") or 0),
            "device": str((rec.get("hardware") or {}).get("device"))}


def _int_or_none(value: object) -> int | None:
    return None if value is None else int(value)  # type: ignore[arg-type]
