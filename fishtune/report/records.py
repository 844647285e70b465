"""Read run records from disk into one flat table (no torch, no training code)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pandas as pd

log = logging.getLogger(__name__)


def load_records(root: str | Path, *, include_test_models: bool = False) -> pd.DataFrame:
    """One row per finished run under `root` (every `results.json`, any depth).

    Runs still `running`, and `failed`/`diverged` ones, are skipped with a message; so are
    runs of random-init test models unless `include_test_models`.
    """
    rows, skipped = [], []
    for path in sorted(Path(root).rglob("results.json")):
        try:
            rec = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as err:
            skipped.append(f"{path}: unreadable ({err})")
            continue
        status = rec.get("status")
        if status != "complete":
            skipped.append(f"{path.parent}: status {status}")
            continue
        if rec.get("test_model") and not include_test_models:
            skipped.append(f"{path.parent}: random-init test model")
            continue
        rows.append(_flatten(rec, path.parent))
    for line in skipped:
        log.info("skipped %s", line)
    return pd.DataFrame(rows)


def _flatten(rec: dict, folder: Path) -> dict:
    stats = rec.get("mask_stats") or {}
    families = stats.get("by_family", {})
    time_s = rec.get("time_s", {})
    return {
        "task": rec["task"], "model": rec["model"], "method": rec["method"], "method_tag": rec.get("method_tag"),
        "mask": rec["mask"], "mask_tag": rec.get("mask_tag"), "seed": rec["seed"],
        "score": rec["score"], "best_score": rec.get("best_score"),
        "trainable": rec["trainable"]["peft_selected"], "peft_total": rec["trainable"]["peft_total"],
        "head": rec["trainable"]["head"],
        "share_lora_A": families.get("lora_A", {}).get("share_of_mask"),
        "time_total_s": time_s.get("total"), "time_train_s": time_s.get("train"),
        "time_fisher_s": time_s.get("fisher"), "time_fisher_warmup_s": time_s.get("fisher_warmup"), "peak_rss_bytes": (rec.get("memory") or {}).get("cpu_peak_rss_bytes"),
        "peak_gpu_bytes": (rec.get("memory") or {}).get("gpu_peak_allocated_bytes"),
        "device": (rec.get("hardware") or {}).get("device"), "epochs": rec.get("epochs", []),
        "metrics": rec.get("last", {}).get("dev", {}), "folder": str(folder),
    }
