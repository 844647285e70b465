"""`fishtune run` end to end on tiny-bert: records, multirun, skip-if-complete, bad input."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, TINY, records


def test_run_writes_a_complete_record(run_cli, tmp_path: Path) -> None:
    assert run_cli("task=rte", "seed=2") == 0
    (rec,) = records(tmp_path / "runs")
    assert rec["status"] == "complete" and rec["task"] == "rte" and rec["seed"] == 2
    assert rec["test_model"] is True and "TEST MODEL" in rec["note"]
    assert rec["trainable"]["peft_selected"] == rec["trainable"]["peft_total"] > 0
    assert rec["trainable"]["head"] == 32 * 2 + 2
    assert set(rec["time_s"]) >= {"total", "train", "eval"}
    assert rec["best"]["epoch"] == rec["last"]["epoch"] == 1
    assert rec["score"] == rec["epochs"][-1]["dev"]["score"] == rec["last"]["dev"]["score"]
    assert 0 <= rec["score"] <= 100 and "accuracy" in rec["last"]["dev"]
    assert set(rec["majority_baseline"]) == set(rec["last"]["dev"])  # the same metrics, for context
    assert rec["versions"]["torch"] and rec["hardware"]["device"] == "cpu"
    folder = Path(rec["output_dir"])
    assert (folder / "config.yaml").read_text().count("task:") == 1
    assert folder.parts[-5:-1] == ("rte", "tiny-bert", "lora-r8", "none")


def test_rerun_of_a_complete_run_is_skipped(run_cli, tmp_path: Path, capsys) -> None:
    assert run_cli() == 0
    (first,) = records(tmp_path / "runs")
    written = (Path(first["output_dir"]) / "results.json").stat().st_mtime_ns
    capsys.readouterr()
    assert run_cli() == 0
    (again,) = records(tmp_path / "runs")
    assert again["finished_at"] == first["finished_at"]
    assert (Path(first["output_dir"]) / "results.json").stat().st_mtime_ns == written  # not even rewritten
    err = capsys.readouterr().err
    assert f"already complete: {first['output_dir']}" in err and "config.yaml" not in err
    config = Path(first["output_dir"]) / "config.yaml"   # damaged since: still skipped, but said
    config.write_text("model: [unclosed\n")
    assert run_cli() == 0
    assert f"{config}: cannot be read (" in capsys.readouterr().err
    config.write_text("seed: 1\n")   # YAML, but not a config export could rebuild the run from
    assert run_cli() == 0
    assert f"{config}: it has no model, task and method sections" in capsys.readouterr().err
    config.unlink()
    assert run_cli() == 0
    assert f"{config}: missing; the record stands, but `fishtune export` needs that file" in capsys.readouterr().err


def test_multirun_of_two_cells(run_cli, tmp_path: Path, capsys) -> None:
    assert run_cli("-m", "seed=1,2") == 0
    recs = records(tmp_path / "runs")
    assert sorted(r["seed"] for r in recs) == [1, 2] and all(r["status"] == "complete" for r in recs)
    assert "2 cells: 2 completed" in capsys.readouterr().err


def test_full_method_trains_the_backbone(run_cli, tmp_path: Path) -> None:
    assert run_cli("method=full", "train.lr=1e-4") == 0
    (rec,) = records(tmp_path / "runs")
    assert rec["method"] == "full" and rec["trainable"]["peft_total"] > 1_000_000  # embeddings included


@pytest.mark.slow  # six processes, each importing torch
def test_help_commands() -> None:
    for args in (["--help"], ["run", "--help"]):
        out = subprocess.run([sys.executable, "-m", "fishtune.cli", *args], capture_output=True, text=True,
                             cwd=REPO, timeout=120)
        assert out.returncode == 0, out.stderr
        assert "task" in out.stdout


@pytest.mark.slow
def test_minilm_short_run_is_a_real_result(tmp_path: Path, monkeypatch) -> None:
    """The shipped model end to end (a few hundred examples): a real, non-test record."""
    from conftest import GLUE
    from fishtune.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(["run", "task=sst2", "mask=fish", "method.r=16", "mask.num_samples=64", "mask.warmup_steps=5",
                 "train.epochs=1", "train.max_train_samples=256", "train.max_eval_samples=128",
                 "train.progress=false", f"data.dir={GLUE}", f"runs_root={tmp_path / 'runs'}"]) == 0
    (rec,) = records(tmp_path / "runs")
    assert rec["test_model"] is False and rec["model"] == "minilm-l6" and rec["frozen_changed"] == 0
    assert rec["trainable"]["peft_selected"] == 73728  # 50% of r=16 on query+value: 6 layers * 2 * 16 * (384+384)


@pytest.mark.slow  # one real process per bad input
def test_bad_input_exit_status_of_the_real_process(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "fishtune.cli", "run", "model=tiny-bert", "train.lr=0"],
                         capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert out.returncode == 1
    assert out.stderr.strip() == "fishtune: error: train.lr must be a finite number > 0, got 0"


def test_a_config_dir_of_ones_own_works_in_a_sweep_and_a_plan(run_cli, tmp_path: Path, capsys) -> None:
    """`-m ... --config-dir DIR ...`: Hydra's flag among the overrides (fishtune adds an override of its
    own to a sweep, which once split them into "unrecognized arguments"); the folder reaches the check
    of every cell and `fishtune plan` as a `hydra.searchpath` override."""
    from fishtune.cli import main

    own = tmp_path / "own" / "model"
    own.mkdir(parents=True)
    (own / "mytiny.yaml").write_text((REPO / "configs" / "model" / "tiny-bert.yaml").read_text())
    assert run_cli("-m", "model=mytiny", "--config-dir", str(tmp_path / "own"), "train.lr=1e-3,0") == 2
    assert "cell #1 (train.lr=0)" in capsys.readouterr().err and not records(tmp_path / "runs")  # checked first
    assert run_cli("-m", "--config-dir", str(tmp_path / "own"), "model=mytiny", "seed=1,2") == 0
    assert sorted(r["seed"] for r in records(tmp_path / "runs")) == [1, 2]
    assert "2 cells: 2 completed" in capsys.readouterr().err
    assert main(["plan", *TINY, "-cd", str(tmp_path / "own"), "model=mytiny", "seed=1,2",
                 f"runs_root={tmp_path / 'runs'}"]) == 0
    assert "2 cells: 2 complete, 0 to run" in capsys.readouterr().out
    assert run_cli("-cd", str(tmp_path / "nope"), "model=mytiny") == 2
    assert "--config-dir" in capsys.readouterr().err
