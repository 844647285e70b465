"""`fishtune report` on hand-made records: mean ± std over seeds, skips, CSV/LaTeX/figures."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from fishtune.report.cli import main as report_main


def _record(root: Path, *, task: str, mask: str, seed: int, score: float, status: str = "complete",
            test_model: bool = False, lr: float = 2e-3, finished_at: str = "2026-11-28T10:00:00+00:00",
            folder_name: str | None = None, total: float = 10.0) -> Path:
    folder = root / task / "minilm-l6" / "lora-r16" / mask / (folder_name or f"seed{seed}")
    folder.mkdir(parents=True)
    config = {"task.name": task, "model.name": "minilm-l6", "method.r": 16, "mask.name": mask, "train.lr": lr,
              "train.device": "cpu", "train.precision": "fp32"}
    rec = {"status": status, "task": task, "model": "minilm-l6", "method": "lora", "method_tag": "lora-r16",
           "mask": mask, "mask_tag": mask, "seed": seed, "score": score, "best_score": score, "test_model": test_model,
           "trainable": {"peft_total": 200, "peft_selected": 100, "head": 10},
           "mask_stats": {"by_family": {"lora_A": {"share_of_mask": 0.4}}},
           "comparison": {"digest": f"{task}-{mask}-{lr}", "config": config}, "finished_at": finished_at,
           "time_s": {"total": total, "train": 8.0, "fisher": 1.0}, "memory": {"cpu_peak_rss_bytes": 2**30},
           "hardware": {"device": "cpu"}, "last": {"dev": {"accuracy": score, "score": score}},
           "epochs": [{"epoch": 1, "dev": {"score": score - 1}}, {"epoch": 2, "dev": {"score": score}}]}
    (folder / "results.json").write_text(json.dumps(rec))
    return folder


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
    assert row["live"] == "–"  # these hand-made records predate the live count
    assert row["rte_mean"] == 72.0 and row["rte_std"] == 2.0 and row["rte_n"] == 3  # sample std of 70, 72, 74
    assert row["mrpc_mean"] == 80.0 and pd.isna(row["mrpc_std"])
    assert row["avg"] == 76.0 and row["trainable"] == 100
    assert len(table) == 1  # the running record and the test-model record are not tabulated
    tex = (out / "glue.tex").read_text()
    assert "72.00 $\\pm$ 2.00" in tex and "\\toprule" in tex
    assert (out / "convergence_rte.png").stat().st_size > 1000
    assert "| minilm-l6 / lora-r16 / fish | 100 | – | 80.00 | 1 | 72.00 ± 2.00 | 3 | 76.00 |" in (out / "tables.md").read_text()
    assert "72.00 ± 2.00" in capsys.readouterr().out


def test_report_without_runs_is_a_clear_error(tmp_path: Path, capsys) -> None:
    assert report_main(["--runs", str(tmp_path / "nothing")]) == 2
    assert "no run folder" in capsys.readouterr().err


def test_runs_of_different_configs_are_separate_rows_never_seeds(tmp_path: Path) -> None:
    """Same tags, different lr: two rows labelled by the key that differs, one seed each."""
    runs = tmp_path / "runs"
    _record(runs, task="mrpc", mask="fish", seed=1, score=80.0, lr=2e-3, folder_name="a")
    _record(runs, task="mrpc", mask="fish", seed=2, score=70.0, lr=5e-4, folder_name="b")
    out = tmp_path / "tables"
    assert report_main(["--runs", str(runs), "--out", str(out)]) == 0
    table = pd.read_csv(out / "glue.csv", index_col=0)
    assert sorted(table.index) == ["minilm-l6 / lora-r16 / fish [lr=0.0005]", "minilm-l6 / lora-r16 / fish [lr=0.002]"]
    assert list(table["mrpc_n"]) == [1, 1] and set(table["mrpc_mean"]) == {70.0, 80.0}


def test_the_same_config_and_seed_twice_counts_once_the_newest(tmp_path: Path, capsys) -> None:
    runs = tmp_path / "runs"
    _record(runs, task="mrpc", mask="fish", seed=1, score=60.0, folder_name="old", finished_at="2026-11-01T00:00:00+00:00")
    _record(runs, task="mrpc", mask="fish", seed=1, score=80.0, folder_name="new", finished_at="2026-11-02T00:00:00+00:00")
    _record(runs, task="mrpc", mask="fish", seed=2, score=70.0)
    out = tmp_path / "tables"
    assert report_main(["--runs", str(runs), "--out", str(out)]) == 0
    row = pd.read_csv(out / "glue.csv", index_col=0).loc["minilm-l6 / lora-r16 / fish"]
    assert row["mrpc_n"] == 2 and row["mrpc_mean"] == 75.0  # 80 (newest of seed 1) and 70
    err = capsys.readouterr().err
    assert "duplicate run of one config and seed" in err and "/old and" in err


def test_legacy_records_get_their_digest_from_config_yaml(tmp_path: Path) -> None:
    """Records without `comparison`: pooled by their config.yaml minus seed, never by tags alone."""
    runs = tmp_path / "runs"
    for name, seed, lr in (("a", 1, 0.002), ("b", 2, 0.002), ("c", 3, 0.0005)):
        folder = _record(runs, task="rte", mask="fish", seed=seed, score=70.0 + seed, lr=lr, folder_name=name)
        rec = json.loads((folder / "results.json").read_text())
        del rec["comparison"]
        (folder / "results.json").write_text(json.dumps(rec))
        (folder / "config.yaml").write_text(f"seed: {seed}\ntask:\n  name: rte\ntrain:\n  lr: {lr}\n"
                                            f"  resume: true\nmask:\n  seed: {seed}\n")
    out = tmp_path / "tables"
    assert report_main(["--runs", str(runs), "--out", str(out)]) == 0
    table = pd.read_csv(out / "glue.csv", index_col=0)
    assert dict(zip(table.index, table["rte_n"])) == {"minilm-l6 / lora-r16 / fish [lr=0.0005]": 1,
                                                      "minilm-l6 / lora-r16 / fish [lr=0.002]": 2}


def test_malformed_records_are_named_and_skipped(tmp_path: Path, capsys) -> None:
    runs = tmp_path / "runs"
    _record(runs, task="rte", mask="fish", seed=1, score=70.0)
    bad = runs / "rte" / "broken"
    bad.mkdir(parents=True)
    (bad / "results.json").write_text('{"status": "complete", "task": "rte"}')
    (runs / "rte" / "truncated").mkdir()
    (runs / "rte" / "truncated" / "results.json").write_text('{"status": "comp')
    assert report_main(["--runs", str(runs), "--out", str(tmp_path / "tables")]) == 0
    err = capsys.readouterr().err
    assert "broken/results.json: malformed record" in err and "truncated/results.json: malformed record" in err


def test_cost_table_counts_are_integers_and_totals_never_below_their_parts(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    _record(runs, task="rte", mask="fish", seed=1, score=70.0, total=5.0)  # train 8 + fisher 1 > 5
    out = tmp_path / "tables"
    assert report_main(["--runs", str(runs), "--out", str(out)]) == 0
    cost = (out / "cost.csv").read_text()
    assert ",100," in cost and "100.0" not in cost
    assert pd.isna(pd.read_csv(out / "cost.csv")["time_total_s"].iloc[0])
