"""Shared fixtures: offline Hub, a tiny-bert run helper, the repo's shipped GLUE folder."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest
import torch

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# One torch thread per process: `make test` runs TEST_JOBS pytest-xdist workers (and some tests start
# fishtune processes), so torch's default of one thread per core would oversubscribe the cores; the
# models under test are tiny, and spinning threads cost more than they give (~10x on a busy machine).
os.environ.setdefault("OMP_NUM_THREADS", "1")

torch.set_num_threads(1)

REPO = Path(__file__).resolve().parent.parent
GLUE = REPO / "data" / "glue"

# A fast tiny-bert run: a few dozen examples, one epoch, no progress bar.
TINY = ["model=tiny-bert", "train.epochs=1", "train.max_train_samples=48", "train.max_eval_samples=24",
        "train.batch_size=8", "train.progress=false", f"data.dir={GLUE}"]


@pytest.fixture
def run_cli(tmp_path, monkeypatch):
    """Run `fishtune run <overrides>` in-process with runs under tmp_path; returns (exit code, runs root)."""
    from fishtune.cli import main

    monkeypatch.chdir(tmp_path)

    def run(*overrides: str) -> int:
        return main(["run", *TINY, f"runs_root={tmp_path / 'runs'}", *overrides])

    return run


def compose_run(*overrides: str, hydra: bool = False):
    """The config `fishtune run <overrides>` composes (fishtune.plan.compose; a bad override is a
    ConfigError), with the `hydra` node if asked."""
    from fishtune.plan import compose

    return compose(list(overrides), hydra=hydra)


def complete_record(**fields) -> dict:
    """The least a complete run record holds that every reader takes (`fishtune.record.record_problem`)."""
    return {"status": "complete", "task": "mrpc", "model": "minilm-l6", "method": "lora", "mask": "none", "seed": 1,
            "score": 80.0, "last": {"dev": {"f1": 85.0, "accuracy": 75.0, "score": 80.0}},
            "trainable": {"peft_total": 1, "peft_selected": 1, "head": 1}, **fields}


def records(root: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(Path(root).rglob("results.json"))]


@pytest.fixture(autouse=True)
def _drop_the_cli_log_handler():
    """`fishtune run` and `fishtune report` point the root logger at the `sys.stderr` of their test
    (`logging.basicConfig(force=True)`: capsys's stream, closed after it). A later test whose code
    logs, with no CLI call of its own, would get a "Logging error" traceback per message in its
    stderr: drop that handler after each test. pytest's own capture handlers are a subclass and stay."""
    yield
    root = logging.getLogger()
    for handler in [h for h in root.handlers if type(h) is logging.StreamHandler]:
        root.removeHandler(handler)
