"""Read run records from disk into one flat table (no torch, no training code).

Pooling rule: seeds are pooled only when their comparable configs (the resolved config minus the
seed and execution-only keys, with the device and precision it ran on) are equal, i.e. when their
`comparison.digest` is. A record made before the digest existed gets one computed the same way from
its folder's `config.yaml`. Two complete records with the same digest and seed are one cell run
twice: the newest is used and the other is named in the log, never both.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import pandas as pd
import yaml

from ..config import _DIGEST_EXCLUDE, flatten

log = logging.getLogger(__name__)


def load_records(root: str | Path, *, include_test_models: bool = False) -> pd.DataFrame:
    """One row per finished run under `root` (every `results.json`, any depth).

    Runs still `running`, and `failed`/`diverged` ones, are skipped with a message; so are
    runs of random-init test models unless `include_test_models`, and duplicate runs of one cell.
    """
    rows, skipped = [], []
    for path in sorted(Path(root).rglob("results.json")):
        try:
            rec = json.loads(path.read_text(encoding="utf-8"))
            status = rec.get("status")
            if status != "complete":
                skipped.append(f"{path.parent}: status {status}")
                continue
            if rec.get("test_model") and not include_test_models:
                skipped.append(f"{path.parent}: random-init test model")
                continue
            rows.append(_flatten(rec, path.parent))
        except (OSError, ValueError, KeyError, TypeError, AttributeError, yaml.YAMLError) as err:
            skipped.append(f"{path}: malformed record ({type(err).__name__}: {err})")
    for line in skipped:
        log.info("skipped %s", line)
    runs = pd.DataFrame(rows)
    return _drop_duplicates(runs) if not runs.empty else runs


def _drop_duplicates(runs: pd.DataFrame) -> pd.DataFrame:
    """Keep the newest of several complete records with the same digest and seed."""
    runs = runs.sort_values(["finished_at", "folder"], na_position="first")
    dup = runs.duplicated(["digest", "seed"], keep="last")
    for _, row in runs[dup].iterrows():
        kept = runs[~dup & (runs["digest"] == row["digest"]) & (runs["seed"] == row["seed"])].iloc[0]
        log.warning("duplicate run of one config and seed: %s and %s; using the newest, %s",
                    row["folder"], kept["folder"], kept["folder"])
    return runs[~dup].sort_values(["task", "folder"]).reset_index(drop=True)


def comparable(rec: dict, folder: Path) -> dict:
    """The flat comparable config of a record: recorded, else rebuilt from `config.yaml`."""
    if rec.get("comparison", {}).get("config") is not None:
        return dict(rec["comparison"]["config"])
    config = yaml.safe_load((folder / "config.yaml").read_text(encoding="utf-8"))
    flat = flatten(config)
    seed = flat.pop("seed", None)
    if flat.get("mask.seed") == seed:
        flat["mask.seed"] = "<seed>"
    for key in _DIGEST_EXCLUDE:
        flat.pop(key, None)
    flat["train.device"] = str((rec.get("hardware") or {}).get("device", "cpu")).split(":")[0]
    flat["train.precision"] = rec.get("precision", "fp32")
    return flat


def _digest(flat: dict) -> str:
    return hashlib.sha256(json.dumps(flat, sort_keys=True, default=str).encode()).hexdigest()[:12]


def _flatten(rec: dict, folder: Path) -> dict:
    stats = rec.get("mask_stats") or {}
    families = stats.get("by_family", {})
    time_s = rec.get("time_s", {})
    memory = rec.get("memory") or {}
    trainable = rec["trainable"]
    config = comparable(rec, folder)
    row_config = {k: v for k, v in config.items() if not k.startswith("task.")}
    return {
        "task": rec["task"], "model": rec["model"], "method": rec["method"], "method_tag": rec.get("method_tag"),
        "mask": rec["mask"], "mask_tag": rec.get("mask_tag"), "seed": int(rec["seed"]),
        "score": float(rec["score"]), "best_score": rec.get("best_score"),
        "digest": (rec.get("comparison") or {}).get("digest") or _digest(config),
        "row_digest": _digest(row_config), "row_config": row_config,
        "trainable": int(trainable["peft_selected"]), "peft_total": int(trainable["peft_total"]),
        "live": _int_or_none(trainable.get("peft_live")), "head": int(trainable["head"]),
        "dense": int(trainable.get("dense", 0)), "inference": _int_or_none(trainable.get("inference")),
        "share_by_family": {f: v.get("share_of_mask") for f, v in families.items()},
        "time_total_s": time_s.get("total"), "time_train_s": time_s.get("train"), "time_eval_s": time_s.get("eval"),
        "time_fisher_s": time_s.get("fisher"), "time_fisher_warmup_s": time_s.get("fisher_warmup"),
        "peak_rss_bytes": memory.get("cpu_peak_rss_bytes"), "peak_gpu_bytes": memory.get("gpu_peak_allocated_bytes"),
        "device": str((rec.get("hardware") or {}).get("device")), "epochs": rec.get("epochs", []),
        "metrics": rec.get("last", {}).get("dev", {}), "finished_at": rec.get("finished_at"), "folder": str(folder),
    }


def _int_or_none(value: object) -> int | None:
    return None if value is None else int(value)  # type: ignore[arg-type]
