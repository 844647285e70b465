"""`fishtune report` on hand-made records: mean ± std over seeds, skips, CSV/LaTeX/figures."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from fishtune.report.cli import main as report_main


def _record(root: Path, *, task: str, mask: str, seed: int, score: float, status: str = "complete",
            test_model: bool = False) -> None:
    folder = root / task / "minilm-l6" / "lora-r16" / mask / f"seed{seed}"
    folder.mkdir(parents=True)
    rec = {"status": status, "task": task, "model": "minilm-l6", "method": "lora", "method_tag": "lora-r16",
           "mask": mask, "mask_tag": mask, "seed": seed, "score": score, "best_score": score, "test_model": test_model,
           "trainable": {"peft_total": 200, "peft_selected": 100, "head": 10},
           "mask_stats": {"by_family": {"lora_A": {"share_of_mask": 0.4}}},
           "time_s": {"total": 10.0, "train": 8.0, "fisher": 1.0}, "memory": {"cpu_peak_rss_bytes": 2**30},
           "hardware": {"device": "cpu"}, "last": {"dev": {"accuracy": score, "score": score}},
           "epochs": [{"epoch": 1, "dev": {"score": score - 1}}, {"epoch": 2, "dev": {"score": score}}]}
    (folder / "results.json").write_text(json.dumps(rec))


def test_report_aggregates_seeds_and_skips_unfinished(tmp_path: Path, capsys) -> None:
    runs = tmp_path / "runs"
    for seed, score in ((1, 70.0), (2, 72.0), (3, 74.0)):
        _record(runs, task="rte", mask="fish", seed=seed, score=score)
    _record(runs, task="mrpc", mask="fish", seed=1, score=80.0)
    _record(runs, task="rte", mask="random", seed=1, score=10.0, status="running")
    _record(runs, task="rte", mask="reverse", seed=1, score=99.0, test_model=True)
    out = tmp_path / "tables"
    assert report_main(["--runs", str(runs), "--out", str(out)]) == 0

    table = pd.read_csv(out / "glue.csv", index_col=0)
    row = table.loc["minilm-l6 / lora-r16 / fish"]
    assert row["rte_mean"] == 72.0 and row["rte_std"] == 2.0 and row["rte_n"] == 3  # sample std of 70, 72, 74
    assert row["mrpc_mean"] == 80.0 and pd.isna(row["mrpc_std"])
    assert row["avg"] == 76.0 and row["trainable"] == 100
    assert len(table) == 1  # the running record and the test-model record are not tabulated
    tex = (out / "glue.tex").read_text()
    assert "72.00 $\\pm$ 2.00" in tex and "\\toprule" in tex
    assert (out / "convergence_rte.png").stat().st_size > 1000
    assert "| minilm-l6 / lora-r16 / fish | 100 | 80.00 | 1 | 72.00 ± 2.00 | 3 | 76.00 |" in (out / "tables.md").read_text()
    assert "72.00 ± 2.00" in capsys.readouterr().out


def test_report_without_runs_is_a_clear_error(tmp_path: Path, capsys) -> None:
    assert report_main(["--runs", str(tmp_path / "nothing")]) == 2
    assert "no run folder" in capsys.readouterr().err
