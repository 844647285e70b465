"""`fishtune report` on hand-made records: cells (mean ± std (n), flags), skips listed, pooling by
digest, Tables 1/3/5/6, paired differences with their t intervals, mask anatomy, ablations, and
byte-identical regeneration (also of the committed results/tables/minilm-l6)."""

from __future__ import annotations

import filecmp
import json
import math
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest

from conftest import REPO
from fishtune.errors import FishtuneError
from fishtune.report.anatomy import anatomy_table, locate, run_shares, site_share_table
from fishtune.report.cli import main as report_main
from fishtune.report.pairs import t_interval

LORA = "base_model.model.bert.encoder.layer.{}.attention.self.{}.lora_{}.default.weight"


def _record(root: Path, *, task: str, mask: str, seed: int, score: float, status: str = "complete",
            test_model: bool = False, lr: float = 2e-3, finished_at: str = "2026-11-28T10:00:00+00:00",
            folder_name: str | None = None, total: float = 10.0, method_tag: str = "lora-r16", r: int = 16,
            config: dict | None = None, baseline: float | None = 50.0, extra: dict | None = None,
            selected: int = 100, metrics: dict | None = None) -> Path:
    folder = root / task / "minilm-l6" / method_tag / mask / (folder_name or f"seed{seed}")
    folder.mkdir(parents=True)
    strategy = {"none": None, "fish": "fish", "random": "random", "reverse": "reverse"}.get(mask, mask)
    comparable = {"task.name": task, "model.name": "minilm-l6", "method.r": r, "mask.name": mask, "train.lr": lr,
                  "train.device": "cpu", "train.precision": "fp32", "method.tag": method_tag, "mask.tag": mask,
                  **({"mask.strategy": strategy} if strategy else {}), **(config or {})}
    digest = json.dumps(sorted((k, str(v)) for k, v in comparable.items()))
    dev = metrics or {"accuracy": score}
    rec = {"status": status, "task": task, "model": "minilm-l6", "method": "lora", "method_tag": method_tag,
           "mask": mask, "mask_tag": mask, "seed": seed, "test_model": test_model,
           "trainable": {"peft_total": 200, "peft_selected": selected, "head": 10, "backbone": 20000},
           "comparison": {"digest": digest, "config": comparable}, "finished_at": finished_at,
           "hardware": {"device": "cpu"}}
    if status == "complete":
        rec.update(score=score, best_score=score, last={"dev": {**dev, "score": score}},
                   mask_stats={"by_family": {"lora_A": {"share_of_mask": 0.4}}},
                   time_s={"total": total, "train": 8.0, "fisher": 1.0}, memory={"cpu_peak_rss_bytes": 2**30},
                   epochs=[{"epoch": 1, "dev": {"score": score - 1}}, {"epoch": 2, "dev": {"score": score}}])
        if baseline is not None:
            rec["majority_baseline"] = {"accuracy": baseline, "score": baseline}
    else:
        rec["error"] = "RuntimeError: boom" if status == "failed" else ""
    rec.update(extra or {})
    (folder / "results.json").write_text(json.dumps(rec))
    return folder


def _report(runs: Path, out: Path, *extra: str) -> int:
    return report_main(["--runs", str(runs), "--out", str(out), "--no-figures", *extra])


def _csv(out: Path, name: str) -> pd.DataFrame:
    return pd.read_csv(out / f"{name}.csv", index_col=0)


def test_report_aggregates_seeds_and_lists_what_it_leaves_out(tmp_path: Path, capsys) -> None:
    runs = tmp_path / "runs"
    for seed, score in ((1, 70.0), (2, 72.0), (3, 74.0)):
        _record(runs, task="rte", mask="fish", seed=seed, score=score)
    _record(runs, task="mrpc", mask="fish", seed=1, score=80.0, metrics={"f1": 84.0, "accuracy": 76.0})
    _record(runs, task="rte", mask="random", seed=1, score=10.0, status="running")
    _record(runs, task="rte", mask="reverse", seed=1, score=99.0, test_model=True)
    out = tmp_path / "tables"
    assert _report(runs, out) == 0

    table = _csv(out, "table1")
    row = table.loc["minilm-l6 / lora-r16 / fish"]
    assert row["rte acc mean"] == 72.0 and row["rte acc std"] == 2.0 and row["rte acc n"] == 3  # sample std
    assert row["mrpc F1 mean"] == 84.0 and row["mrpc acc mean"] == 76.0 and pd.isna(row["mrpc F1 std"])
    assert row["avg"] == 76.0 and str(row["trainable"]) == "100" and row["backbone_pct"] == "0.5%"
    assert len(table) == 1  # the running record and the test-model record are not tabulated ...
    status = _csv(out, "runs_status")
    assert dict(zip(status["mask_tag"], status["status"])) == {"fish": "complete", "random": "running",
                                                               "reverse": "excluded"}  # ... but listed
    md = (out / "table1.md").read_text()
    assert ("| minilm-l6 / lora-r16 / fish | fish | 100 | 0.5% | – | 84.00 (n=1) | 76.00 (n=1) | 72.00 ± 2.00 (n=3) "
            "| 76.00 (n=1–3) |") in md
    tex = (out / "table1.tex").read_text()
    assert "72.00 $\\pm$ 2.00 (n=3)" in tex and "\\toprule" in tex and "\\bottomrule" in tex
    assert "72.00 ± 2.00 (n=3)" in capsys.readouterr().out
    assert "## Runs and their status" in (out / "tables.md").read_text()


def test_a_cap_that_only_differs_between_tasks_is_not_part_of_the_row(tmp_path: Path) -> None:
    """One experiment's `max_train_samples=10000` keeps all of MRPC (recorded as no cap) and draws
    10,000 of SST-2: the same row on both tasks, the subset named in the notes. A second cap on the
    same task is a real difference: there the cap tells the rows apart."""
    runs = tmp_path / "runs"
    for seed in (1, 2):
        _record(runs, task="mrpc", mask="fish", seed=seed, score=80.0, config={"train.max_train_samples": None})
        _record(runs, task="sst2", mask="fish", seed=seed, score=90.0, config={"train.max_train_samples": 10000})
    out = tmp_path / "tables"
    assert _report(runs, out) == 0
    table = _csv(out, "table1")
    assert list(table.index) == ["minilm-l6 / lora-r16 / fish"] and table.loc["minilm-l6 / lora-r16 / fish", "avg"] == 85.0
    assert "Training subsets (train.max_train_samples" in (out / "table1.md").read_text()
    assert "sst2 10,000 examples." in (out / "table1.md").read_text()
    assert not list(out.glob("ablation_*max_train_samples*"))  # not an ablation axis either

    _record(runs, task="sst2", mask="fish", seed=1, score=95.0, config={"train.max_train_samples": None},
            folder_name="whole")
    assert _report(runs, out) == 0
    table = _csv(out, "table1")
    # the whole split of every task is one row (MRPC's runs and the new SST-2 run), the SST-2 subset another
    whole, subset = "minilm-l6 / lora-r16 / fish [max_train_samples=None]", "minilm-l6 / lora-r16 / fish [max_train_samples=10000]"
    assert sorted(table.index) == [subset, whole]
    assert table.loc[whole, "sst2 acc mean"] == 95.0 and table.loc[whole, "mrpc acc n"] == 2
    assert table.loc[subset, "sst2 acc mean"] == 90.0 and table.loc[subset, "mrpc acc n"] == 0


def test_failed_diverged_collapsed_and_missing_cells_are_shown(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    _record(runs, task="rte", mask="fish", seed=1, score=70.0)
    _record(runs, task="rte", mask="fish", seed=2, score=50.0)              # = majority baseline: collapsed
    _record(runs, task="rte", mask="fish", seed=3, score=0.0, status="failed")
    _record(runs, task="rte", mask="fish", seed=4, score=0.0, status="diverged")
    _record(runs, task="mrpc", mask="none", seed=1, score=80.0, method_tag="lora-r8", r=8)
    out = tmp_path / "tables"
    assert _report(runs, out) == 0
    shown = (out / "table1.md").read_text()
    assert "60.00 ± 14.14 (n=2) [1 collapsed, 1 failed, 1 diverged]" in shown  # failed/diverged: not in the mean
    assert "missing" in shown  # fish has no MRPC run, vanilla no RTE run
    row = _csv(out, "table1").loc["minilm-l6 / lora-r16 / fish"]
    assert (row["rte acc collapsed"], row["rte acc failed"], row["rte acc diverged"]) == (1, 1, 1)
    status = _csv(out, "runs_status")
    assert sorted(status["status"]) == ["collapsed", "complete", "complete", "diverged", "failed"]
    assert "RuntimeError: boom" in (out / "runs_status.md").read_text()


def test_records_without_a_baseline_borrow_one_from_the_same_task_and_data(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    _record(runs, task="rte", mask="fish", seed=1, score=50.0, baseline=None)  # an old record
    _record(runs, task="rte", mask="random", seed=1, score=60.0)
    out = tmp_path / "tables"
    assert _report(runs, out) == 0
    assert "50.00 (n=1) [1 collapsed]" in (out / "table1.md").read_text()


def test_report_without_runs_is_a_clear_error(tmp_path: Path, capsys) -> None:
    assert report_main(["--runs", str(tmp_path / "nothing")]) == 2
    assert "no run folder" in capsys.readouterr().err


def test_a_filter_matching_nothing_or_an_out_that_is_a_file_writes_nothing(tmp_path: Path, capsys) -> None:
    runs = tmp_path / "runs"
    _record(runs, task="rte", mask="fish", seed=1, score=70.0)
    out = tmp_path / "tables"
    assert _report(runs, out) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    capsys.readouterr()
    for flags, words in ((["--task", "RTE"], "--task RTE: no record"), (["--seed", "7"], "--seed 7: no record"),
                         (["--table6-task", "sst-2"], "--table6-task sst-2: no complete run")):
        assert _report(runs, out, *flags) == 2
        err = capsys.readouterr().err
        assert words in err and "nothing written" in err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # the last report, untouched
    empty = tmp_path / "empty"
    empty.mkdir()
    assert _report(empty, out) == 1 and {p.name: p.read_bytes() for p in out.iterdir()} == before
    a_file = tmp_path / "afile"
    a_file.write_text("x")
    assert _report(runs, a_file) == 2 and "is a file" in capsys.readouterr().err


def test_runs_of_different_configs_are_separate_rows_never_seeds(tmp_path: Path) -> None:
    """Same tags, different lr: two rows labelled by the key that differs, one seed each."""
    runs = tmp_path / "runs"
    _record(runs, task="mrpc", mask="fish", seed=1, score=80.0, lr=2e-3, folder_name="a")
    _record(runs, task="mrpc", mask="fish", seed=2, score=70.0, lr=5e-4, folder_name="b")
    _record(runs, task="mrpc", mask="fish", seed=3, score=0.0, lr=5e-4, folder_name="c", status="failed")
    out = tmp_path / "tables"
    assert _report(runs, out) == 0
    table = _csv(out, "table1")
    assert sorted(table.index) == ["minilm-l6 / lora-r16 / fish [lr=0.0005]", "minilm-l6 / lora-r16 / fish [lr=0.002]"]
    assert list(table["mrpc acc n"]) == [1, 1] and set(table["mrpc acc mean"]) == {70.0, 80.0}
    assert table.loc["minilm-l6 / lora-r16 / fish [lr=0.0005]", "mrpc acc failed"] == 1  # in its own row


def test_runs_on_two_snapshots_of_a_model_are_separate_rows_never_seeds(tmp_path: Path) -> None:
    """`model.revision` is not in the comparable config: the recorded snapshot still splits the rows."""
    runs = tmp_path / "runs"
    for name, seed, model in (("a", 1, {"model_revision": "a" * 40}), ("b", 2, {"model_revision": "b" * 40}),
                              ("c", 3, {"model_files_sha256": "0123456789abcdef"}),
                              ("d", 4, {"model_files_sha256": "fedcba9876543210"})):
        _record(runs, task="mrpc", mask="fish", seed=seed, score=70.0 + seed, folder_name=name, extra=model)
    out = tmp_path / "tables"
    assert _report(runs, out) == 0
    table = _csv(out, "table1")
    assert list(table["mrpc acc n"]) == [1, 1, 1, 1]
    assert any(f"snapshot={'a' * 40}" in label for label in table.index)
    assert any("files_sha256=0123456789abcdef" in label for label in table.index)


def test_configs_whose_values_print_alike_are_still_separate_rows(tmp_path: Path) -> None:
    """2 and 2.0 are different digests: two rows (told apart by the digest), never one row of seeds."""
    runs = tmp_path / "runs"
    for name, scale, seeds in (("int", 2, (1, 2)), ("float", 2.0, (1,))):
        for seed in seeds:
            _record(runs, task="mrpc", mask="fish", seed=seed, score=70.0 + 10 * seed, folder_name=f"{name}{seed}",
                    config={"method.scale": scale})
    out = tmp_path / "tables"
    assert _report(runs, out) == 0
    table = _csv(out, "table1")
    assert len(table) == 2 and sorted(table["mrpc acc n"]) == [1, 2]
    assert all(label.startswith("minilm-l6 / lora-r16 / fish [scale=2, digest=") for label in table.index)


def test_the_same_config_and_seed_twice_counts_once_the_newest(tmp_path: Path, capsys) -> None:
    runs = tmp_path / "runs"
    _record(runs, task="mrpc", mask="fish", seed=1, score=60.0, folder_name="old", finished_at="2026-11-01T00:00:00+00:00")
    _record(runs, task="mrpc", mask="fish", seed=1, score=80.0, folder_name="new", finished_at="2026-11-02T00:00:00+00:00")
    _record(runs, task="mrpc", mask="fish", seed=2, score=70.0)
    out = tmp_path / "tables"
    assert _report(runs, out) == 0
    row = _csv(out, "table1").loc["minilm-l6 / lora-r16 / fish"]
    assert row["mrpc acc n"] == 2 and row["mrpc acc mean"] == 75.0  # 80 (newest of seed 1) and 70
    err = capsys.readouterr().err
    assert "duplicate run of one config and seed" in err and "/old and" in err
    status = _csv(out, "runs_status")
    assert status.loc["mrpc/minilm-l6/lora-r16/fish/old", "status"] == "duplicate"


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
    assert _report(runs, out) == 0
    table = _csv(out, "table1")
    assert dict(zip(table.index, table["rte acc n"])) == {"minilm-l6 / lora-r16 / fish [lr=0.0005]": 1,
                                                          "minilm-l6 / lora-r16 / fish [lr=0.002]": 2}


def test_a_legacy_record_of_a_task_this_version_does_not_know_is_still_tabulated(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    folder = _record(runs, task="imdb", mask="fish", seed=1, score=88.0)
    rec = json.loads((folder / "results.json").read_text())
    del rec["comparison"]
    (folder / "results.json").write_text(json.dumps(rec))
    (folder / "config.yaml").write_text("seed: 1\ntask:\n  name: imdb\ntrain:\n  max_train_samples: 5000\n")
    out = tmp_path / "tables"
    assert _report(runs, out) == 0  # no ConfigError from the task registry
    assert _csv(out, "table1").loc["minilm-l6 / lora-r16 / fish", "imdb acc mean"] == 88.0


def test_malformed_records_are_named_and_skipped(tmp_path: Path, capsys) -> None:
    runs = tmp_path / "runs"
    _record(runs, task="rte", mask="fish", seed=1, score=70.0)
    bad = runs / "rte" / "broken"
    bad.mkdir(parents=True)
    (bad / "results.json").write_text('{"status": "complete", "task": "rte"}')
    (runs / "rte" / "truncated").mkdir()
    (runs / "rte" / "truncated" / "results.json").write_text('{"status": "comp')
    (runs / "rte" / "list").mkdir()
    (runs / "rte" / "list" / "results.json").write_text('[1, 2]')
    assert _report(runs, tmp_path / "tables") == 0
    err = capsys.readouterr().err
    assert "broken/results.json: malformed record" in err and "truncated/results.json: malformed record" in err
    status = _csv(tmp_path / "tables", "runs_status")
    assert status.loc["rte/broken", "status"] == status.loc["rte/truncated", "status"] == "malformed"


# a field the reporter reads, set to what a hand edit or another tool could leave there
_WRONG = {
    "score NaN": {"score": math.nan},
    "metric NaN": {"last": {"dev": {"accuracy": math.nan, "score": 70.0}}},
    "metric a string": {"last": {"dev": {"accuracy": "70.0", "score": 70.0}}},
    "no last.dev": {"last": {}},
    "seed a string": {"seed": "1"},
    "seed a bool": {"seed": True},
    "task a list": {"task": ["rte"]},
    "epoch without dev": {"epochs": [{"epoch": 1}]},
    "epochs of ints": {"epochs": [1, 2]},
    "time a string": {"time_s": {"total": "n/a"}},
    "memory a string": {"memory": {"cpu_peak_rss_bytes": "big"}},
    "share a string": {"mask_stats": {"by_family": {"lora_A": {"share_of_mask": "half"}}}},
    "selected null": {"mask_stats": {"selected_by_param": {"w": None}}},
    "baseline inf": {"majority_baseline": {"score": math.inf}},
    "finished_at a number": {"finished_at": 3},
    # in range: a table's integer column, a score of 100 x [-1, 1], a time, a share, a status a run writes
    "seed 10**30": {"seed": 10**30},
    "seed 2**63": {"seed": 2**63},
    "seed negative": {"seed": -1},
    "score 1e308": {"score": 1e308},
    "score negative beyond -100": {"score": -105.0},
    "metric above 100": {"last": {"dev": {"accuracy": 170.0, "score": 70.0}}},
    "no metrics in last.dev": {"last": {"dev": {}}},
    "time negative": {"time_s": {"total": -1.0}},
    "time 1e308": {"time_s": {"total": 1e308}},
    "selected 10**30": {"trainable": {"peft_total": 200, "peft_selected": 10**30, "head": 10}},
    "share above 1": {"mask_stats": {"by_family": {"lora_A": {"share_of_mask": 3.0}}}},
    "finished_at not a time": {"finished_at": "zzz"},
    "status unknown": {"status": "weird"},
    "test_model a string": {"test_model": "false"},
}


@pytest.mark.parametrize("field", sorted(_WRONG))
def test_a_record_with_a_wrong_typed_or_nan_field_is_listed_malformed_not_a_crash(field: str, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    for seed in (1, 2):
        _record(runs, task="rte", mask="fish", seed=seed, score=70.0 + seed)
    _record(runs, task="rte", mask="fish", seed=3, score=72.0, folder_name="edited", extra=_WRONG[field])
    out = tmp_path / "tables"
    assert report_main(["--runs", str(runs), "--out", str(out)]) == 0   # figures too: they read `epochs`
    status = _csv(out, "runs_status")
    assert status.loc["rte/minilm-l6/lora-r16/fish/edited", "status"] == "malformed"
    table1 = (out / "table1.md").read_text()
    assert "71.50 ± 0.71 (n=2)" in table1 and "nan" not in table1.lower()


def test_a_failed_record_with_a_string_seed_is_listed_not_a_crash(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    _record(runs, task="rte", mask="fish", seed=1, score=70.0)
    _record(runs, task="rte", mask="fish", seed=2, score=0.0, status="failed", extra={"seed": "two"})
    assert _report(runs, tmp_path / "tables") == 0
    assert "no config to place it" in _csv(tmp_path / "tables", "runs_status").loc["rte/minilm-l6/lora-r16/fish/seed2", "detail"]


def test_status_details_are_one_line_and_name_no_absolute_path(tmp_path: Path) -> None:
    # a multi-line error would split its markdown row; the runs folder's own path would make two
    # copies of the same records report differently
    texts = []
    for copy in ("a", "b"):
        runs = tmp_path / copy / "runs"
        _record(runs, task="rte", mask="fish", seed=1, score=70.0)
        _record(runs, task="rte", mask="fish", seed=2, score=0.0, status="failed",
                extra={"error": "RuntimeError: CUDA error: device-side assert triggered\nCompile with `X` | to debug"})
        legacy = _record(runs, task="rte", mask="random", seed=1, score=0.0, status="failed", extra={"comparison": None})
        assert not (legacy / "config.yaml").exists()
        assert _report(runs, tmp_path / copy / "tables") == 0
        texts.append((tmp_path / copy / "tables" / "runs_status.md").read_text())
    assert texts[0] == texts[1] and str(tmp_path) not in texts[0]
    row = next(line for line in texts[0].splitlines() if "fish/seed2" in line)
    assert row.endswith("| failed | RuntimeError: CUDA error: device-side assert triggered Compile with `X` / to debug |")
    assert "No such file or directory: 'rte/minilm-l6/lora-r16/random/seed1/config.yaml'" in texts[0]


def test_report_filters_by_task_model_and_seed(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    for seed, score in ((1, 70.0), (2, 72.0), (3, 74.0)):
        _record(runs, task="rte", mask="fish", seed=seed, score=score)
    _record(runs, task="mrpc", mask="fish", seed=1, score=80.0)
    out = tmp_path / "tables"
    assert _report(runs, out, "--seed", "1", "--seed", "3", "--task", "rte") == 0
    row = _csv(out, "table1").loc["minilm-l6 / lora-r16 / fish"]
    assert (row["rte acc mean"], row["rte acc n"]) == (72.0, 2) and "mrpc acc mean" not in row
    assert sorted(pd.read_csv(out / "runs_status.csv")["folder"]) == ["rte/minilm-l6/lora-r16/fish/seed1",
                                                          "rte/minilm-l6/lora-r16/fish/seed3"]


def test_cost_table_counts_are_integers_and_totals_never_below_their_parts(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    _record(runs, task="rte", mask="fish", seed=1, score=70.0, total=5.0,  # train 8 + fisher 1 > 5
            extra={"mask_storage_bytes": 2048, "time_s": {"total": 5.0, "train": 8.0, "fisher": 1.0,
                                                          "fisher_warmup": 3.0}})
    out = tmp_path / "tables"
    assert _report(runs, out) == 0
    cost = pd.read_csv(out / "table5.csv")
    assert cost["trainable"].iloc[0] == 100 and ",100," in (out / "table5.csv").read_text()
    assert pd.isna(cost["time_total_s"].iloc[0])
    assert cost["time_epoch_s"].iloc[0] == 4.0 and cost["time_fisher_warmup_s"].iloc[0] == 3.0  # 8 s / 2 epochs
    assert cost["mask_storage_kib"].iloc[0] == 2.0 and cost["peak_rss_mib"].iloc[0] == 1024.0
    assert "| config | task | device | runs |" in (out / "table5.md").read_text()


def test_cost_table_shows_the_dense_group_and_the_count_at_inference(tmp_path: Path) -> None:
    """trainable = selected + dense; `at inference` only where a method folds something away."""
    runs = tmp_path / "runs"
    _record(runs, task="rte", mask="fish", seed=1, score=70.0, method_tag="prefix-p60",
            extra={"trainable": {"peft_total": 500, "peft_selected": 100, "dense": 24, "inference": 30,
                                 "head": 10, "backbone": 20000}})
    _record(runs, task="rte", mask="none", seed=1, score=70.0)
    out = tmp_path / "tables"
    assert _report(runs, out) == 0
    cost = pd.read_csv(out / "table5.csv", index_col=0)
    prefix, lora = cost.loc["minilm-l6 / prefix-p60 / fish"], cost.loc["minilm-l6 / lora-r16 / none"]
    assert (prefix["trainable"], prefix["dense"], prefix["inference"], prefix["peft_total"]) == (124, 24, 30, 500)
    assert (lora["trainable"], lora["dense"]) == (100, 0) and pd.isna(lora["inference"])
    shown = (out / "table5.md").read_text()
    assert "| trainable | of which dense | at inference | candidates |" in shown
    assert "| 124 | 24 | 30 | 500 |" in shown and "| 100 | 0 | – | 200 |" in shown


def _contrastive(runs: Path, scores: dict[str, list[float]], tasks=("mrpc", "rte"), **kw) -> None:
    """Vanilla r=8 and FISH / random / reverse inside r=16 at the same count (100 entries)."""
    for mask, values in scores.items():
        tag, r = ("lora-r8", 8) if mask == "none" else ("lora-r16", 16)
        for task in tasks:
            for seed, score in enumerate(values, start=1):
                _record(runs, task=task, mask=mask, seed=seed, score=score + (task == "rte"), method_tag=tag, r=r, **kw)


def test_table3_and_paired_differences_over_matched_seeds(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    _contrastive(runs, {"none": [70.0, 72.0, 74.0], "fish": [71.0, 74.0, 74.0], "random": [70.0, 70.0, 70.0],
                        "reverse": [60.0, 61.0]})
    # the same FISH config at another budget: its own group, never compared with this vanilla
    _record(runs, task="mrpc", mask="fish", seed=1, score=99.0, selected=7, config={"mask.keep_ratio": 0.01},
            folder_name="tiny")
    _record(runs, task="rte", mask="reverse", seed=3, score=63.0, method_tag="lora-r16", r=16)  # rte only
    out = tmp_path / "tables"
    assert _report(runs, out) == 0
    t3 = _csv(out, "table3")
    assert list(t3["kind"]) == ["vanilla", "fish", "random", "reverse"]
    assert t3["budget"].nunique() == 1 and "/ 100 /" in t3["budget"].iloc[0]
    assert t3.loc["minilm-l6 / lora-r16 / reverse", "mrpc n"] == 2 and t3.loc["minilm-l6 / lora-r16 / reverse", "rte n"] == 3
    # the average says when it mixes seed counts (reverse: 2 on mrpc, 3 on rte)
    assert list(t3[["avg n_min", "avg n_max"]].loc["minilm-l6 / lora-r16 / reverse"]) == [2, 3]
    shown_t3 = (out / "table3.md").read_text()
    assert "| 72.50 (n=3) |" in shown_t3 and "| 61.25 (n=2–3) |" in shown_t3
    paired = pd.read_csv(out / "paired.csv")
    fish_vanilla = paired[(paired["comparison"] == "FISH − vanilla") & (paired["task"] == "mrpc")].iloc[0]
    assert fish_vanilla["n"] == 3 and fish_vanilla["seeds"] == "1,2,3" and fish_vanilla["per_seed"] == "+1.00, +2.00, +0.00"
    mean, low, high = t_interval([1.0, 2.0, 0.0])  # FISH − vanilla per seed
    assert fish_vanilla["mean_diff"] == pytest.approx(1.0) and fish_vanilla["ci95_low"] == pytest.approx(round(low, 4))
    assert low == pytest.approx(1.0 - 4.302653 * 1.0 / math.sqrt(3), abs=1e-5) and high == pytest.approx(2 - low)
    reverse = paired[(paired["comparison"] == "FISH − reverse") & (paired["task"] == "mrpc")].iloc[0]
    assert reverse["n"] == 2 and reverse["mean_diff"] == pytest.approx(12.0)  # seeds 1, 2 only
    avg = paired[(paired["comparison"] == "FISH − random") & paired["task"].str.startswith("avg")].iloc[0]
    assert avg["n"] == 3 and avg["mean_diff"] == pytest.approx(3.0)
    assert set(paired["fish"]) == {"minilm-l6 / lora-r16 / fish [keep_ratio=None]"}  # the 7-entry row has no partner
    shown = (out / "paired.md").read_text()
    assert "+1.00 [" in shown and "95%" in shown


def test_a_config_whose_every_run_failed_still_has_its_table3_row(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    _contrastive(runs, {"none": [70.0, 72.0], "random": [69.0, 70.0]}, tasks=("mrpc",))
    for seed in (1, 2):  # started with its count (100), then failed: no result
        _record(runs, task="mrpc", mask="fish", seed=seed, score=0.0, status="failed")
    out = tmp_path / "tables"
    assert _report(runs, out) == 0
    t3 = _csv(out, "table3")
    assert list(t3["kind"]) == ["vanilla", "fish", "random"]
    assert t3.loc["minilm-l6 / lora-r16 / fish", "mrpc failed"] == 2 and t3.loc["minilm-l6 / lora-r16 / fish", "mrpc n"] == 0
    assert "| fish | – | – [2 failed] | – |" in (out / "table3.md").read_text()


def test_a_single_pair_has_no_interval(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    _contrastive(runs, {"none": [70.0], "fish": [72.5]}, tasks=("mrpc",))
    out = tmp_path / "tables"
    assert _report(runs, out) == 0
    assert "+2.50 (n=1, no CI)" in (out / "paired.md").read_text()


def test_a_difference_that_rounds_to_zero_prints_without_a_minus(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    _contrastive(runs, {"none": [70.0, 70.0], "fish": [69.996, 70.0]}, tasks=("mrpc",))
    out = tmp_path / "tables"
    assert _report(runs, out) == 0
    shown = (out / "paired.md").read_text()
    assert "| +0.00 [-0.03, +0.02] (n=2) | 1,2 | +0.00, +0.00 |" in shown and "-0.00" not in shown


def test_a_seed_whose_runs_collapsed_is_marked_in_the_paired_differences(tmp_path: Path) -> None:
    """A +0.00 between two majority-class runs is no tie of two models: the seed says so."""
    runs = tmp_path / "runs"
    _contrastive(runs, {"none": [70.0, 50.0, 60.0], "fish": [72.0, 50.0, 50.0], "random": [71.0, 69.0, 68.0]},
                 tasks=("mrpc",))  # the majority baseline is 50.0
    out = tmp_path / "tables"
    assert _report(runs, out) == 0
    paired = pd.read_csv(out / "paired.csv").set_index("comparison")
    assert paired.loc["FISH − vanilla", "per_seed"] == "+2.00, +0.00 (both collapsed), -10.00 (FISH collapsed)"
    assert paired.loc["FISH − random", "per_seed"] == "+1.00, -19.00 (FISH collapsed), -18.00 (FISH collapsed)"
    assert list(paired["collapsed_runs"]) == [3, 2]


def test_fish_is_linked_to_the_partner_whose_config_differs_least(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    for fisher_at, bump in (("warmup", 0.0), ("init", -5.0)):
        for mask in ("fish", "reverse"):
            _record(runs, task="mrpc", mask=mask, seed=1, score=70.0 + bump - 10 * (mask == "reverse"),
                    config={"mask.fisher_at": fisher_at}, folder_name=f"{mask}-{fisher_at}")
    out = tmp_path / "tables"
    assert _report(runs, out) == 0
    paired = pd.read_csv(out / "paired.csv")
    assert len(paired) == 2 and set(paired["mean_diff"]) == {10.0}  # warmup-warmup and init-init only
    assert all(f.split("[")[1] == p.split("[")[1] for f, p in zip(paired["fish"], paired["partner"]))


def test_table6_is_one_task(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    _contrastive(runs, {"none": [90.0], "fish": [91.0]}, tasks=("sst2", "mrpc"))
    out = tmp_path / "tables"
    assert _report(runs, out) == 0
    t6 = _csv(out, "table6")
    assert list(t6.columns).count("sst2 acc mean") == 1 and "mrpc acc mean" not in t6.columns
    # asked for by name, a task without runs is a typo or the wrong folder: one line, nothing written
    assert report_main(["--runs", str(runs), "--out", str(tmp_path / "t"), "--no-figures",
                        "--table6-task", "cola"]) == 2
    assert not (tmp_path / "t").exists()


def test_mask_anatomy_from_records_and_from_mask_files(tmp_path: Path) -> None:
    assert locate(LORA.format(3, "query", "A")) == ("3", "attention.self.query.lora_A")
    adapter = "bert.encoder.layer.0.output.adapters.fishtune.adapter_down.0.bias"
    assert locate(adapter) == ("0", "output.adapter_down.bias")
    assert locate("bert.embeddings.word_embeddings.weight") == ("other", "embeddings.word_embeddings")
    runs = tmp_path / "runs"
    counts = {LORA.format(0, "query", "A"): 30, LORA.format(0, "query", "B"): 10, LORA.format(1, "query", "A"): 60}
    new = _record(runs, task="mrpc", mask="fish", seed=1, score=70.0, folder_name="new")
    rec = json.loads((new / "results.json").read_text())
    rec["mask_stats"]["selected_by_param"] = counts
    (new / "results.json").write_text(json.dumps(rec))
    old = _record(runs, task="mrpc", mask="fish", seed=2, score=70.0, folder_name="old")  # no counts: mask file
    import numpy as np
    from safetensors.numpy import save_file

    save_file({LORA.format(0, "query", "A"): np.ones((4, 25), dtype=bool),
               LORA.format(1, "query", "A"): np.zeros((4, 25), dtype=bool)}, str(old / "mask.safetensors"))
    _record(runs, task="mrpc", mask="fish", seed=3, score=70.0, folder_name="lost")  # neither: left out
    other = _record(runs, task="mrpc", mask="fish", seed=1, score=70.0, method_tag="lora-r4", r=4)  # value only
    rec = json.loads((other / "results.json").read_text())
    rec["mask_stats"]["selected_by_param"] = {LORA.format(0, "value", "B"): 5}
    (other / "results.json").write_text(json.dumps(rec))
    from fishtune.report.records import scan_records
    from fishtune.report.cells import with_labels

    (frame,) = with_labels(scan_records(runs).runs)
    shares = run_shares(frame)
    table = anatomy_table(shares)
    table = table[table["config"] == "minilm-l6 / lora-r16 / fish"].set_index(["layer", "site"])["share"]
    # (0.3 + 1.0) / 2 runs, 0.1 / 2, 0.6 / 2: the mean over the two runs that have counts
    assert table.to_dict() == {("0", "attention.self.query.lora_A"): 0.65, ("0", "attention.self.query.lora_B"): 0.05,
                               ("1", "attention.self.query.lora_A"): 0.3}
    # per task, layers summed: (0.9 + 1.0) / 2 and (0.1 + 0) / 2 (a site one run lacks counts 0 there)
    sites = site_share_table(shares).set_index(["config", "task", "site"])
    assert sites.loc[("minilm-l6 / lora-r16 / fish", "mrpc")].to_dict("index") == {
        "attention.self.query.lora_A": {"share": 0.95, "runs": 2},
        "attention.self.query.lora_B": {"share": 0.05, "runs": 2}}
    assert sites.loc[("minilm-l6 / lora-r4 / fish", "mrpc", "attention.self.value.lora_B"), "share"] == 1.0


def test_site_bars_take_equal_shares_whose_mean_rounds_past_them(tmp_path: Path) -> None:
    """Three runs with a share of 0.1 average to 0.1 + 1e-17: the whiskers must not go negative."""
    from fishtune.report.anatomy import site_figures

    rows = [{"model": "minilm-l6", "method": "lora", "config": "minilm-l6 / lora-r16 / fish", "task": task,
             "run": f"{task}{seed}", "site": site, "share": share}
            for task in ("mrpc", "sst2") for seed in (1, 2, 3) for site, share in (("a", 0.1), ("b", 0.9))]
    assert [p.suffix for p in site_figures(pd.DataFrame(rows), tmp_path)] == [".png", ".pdf"]


def test_ablation_table_follows_the_one_key_that_varies(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    for steps in (0, 10, 50):
        for seed in (1, 2):
            _record(runs, task="mrpc", mask="fish", seed=seed, score=70.0 + steps / 10 + seed,
                    config={"mask.warmup_steps": steps}, folder_name=f"w{steps}-{seed}")
    _record(runs, task="mrpc", mask="random", seed=1, score=60.0, config={"mask.warmup_steps": 50})
    out = tmp_path / "tables"
    assert _report(runs, out) == 0
    abl = pd.read_csv(out / "ablation.csv")
    warm = abl[abl["key"] == "mask.warmup_steps"]
    assert list(warm["value"]) == [0, 10, 50] and list(warm["mean"]) == [71.5, 72.5, 76.5]
    assert set(warm["n"]) == {2} and set(warm["series"]) == {"minilm-l6 / lora / fish"}


def test_ablation_values_are_paired_with_the_shipped_default_over_matched_seeds(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    for steps, scores in ((0, [70.0, 73.0, 71.0]), (50, [75.0, 74.0, 77.0]), (200, [76.0, 74.5])):
        for seed, score in enumerate(scores, start=1):
            _record(runs, task="mrpc", mask="fish", seed=seed, score=score, config={"mask.warmup_steps": steps},
                    folder_name=f"w{steps}-{seed}")
    for ratio in (0.5, 0.25):   # the budget: no shipped default for mask.kept, so no paired line
        _record(runs, task="mrpc", mask="fish", seed=1, score=70.0, config={"mask.keep_ratio": ratio},
                selected=int(200 * ratio), folder_name=f"k{ratio}")
    out = tmp_path / "tables"
    assert _report(runs, out) == 0
    paired = pd.read_csv(out / "paired_ablation.csv")
    assert list(paired["key"]) == ["mask.warmup_steps"] * 2 and list(paired["value"]) == [0, 200]
    assert set(paired["default"]) == {50}
    low = paired.iloc[0]   # 0 − 50 on seeds 1..3: -5, -1, -6
    assert (low["n"], low["mean_diff"], low["seeds"], low["per_seed"]) == (3, -4.0, "1,2,3", "-5.00, -1.00, -6.00")
    assert low["ci95_low"] == pytest.approx(-4.0 - 4.302653 * math.sqrt(7) / math.sqrt(3), abs=1e-3)
    high = paired.iloc[1]  # 200 has seeds 1 and 2 only: +1, +0.5
    assert (high["n"], high["mean_diff"], high["seeds"]) == (2, 0.75, "1,2")
    assert "+0.75 [" in (out / "paired_ablation.md").read_text()


def test_the_budget_is_one_ablation_axis_however_it_was_asked_for(tmp_path: Path) -> None:
    """keep_match (Table 3 at r=8's and r=1's counts) and keep_ratio (the keep ablation) cells join one
    curve over `mask.kept`, the fraction of the candidates selected."""
    runs = tmp_path / "runs"
    cells = {"r8": (80, {"mask.keep_match": "lora-r8", "mask.keep_ratio": 0.5}),
             "r1": (10, {"mask.keep_match.config": "lora", "mask.keep_match.r": 1, "mask.keep_ratio": 0.5}),
             "k25": (40, {"mask.keep_match": None, "mask.keep_ratio": 0.25})}
    for name, (selected, config) in cells.items():
        for seed in (1, 2):
            _record(runs, task="mrpc", mask="fish", seed=seed, score=70.0 + selected / 10 + seed, config=config,
                    folder_name=f"{name}-{seed}", extra={"trainable": {"peft_total": 160, "peft_selected": selected,
                                                                       "head": 10, "backbone": 20000}})
    _record(runs, task="rte", mask="fish", seed=1, score=60.0, config=cells["r8"][1], folder_name="r8-rte",
            extra={"trainable": {"peft_total": 160, "peft_selected": 80, "head": 10, "backbone": 20000}})
    out = tmp_path / "tables"
    assert _report(runs, out) == 0
    abl = pd.read_csv(out / "ablation.csv")
    assert set(abl["key"]) == {"mask.kept"}  # not keep_ratio or keep_match series of their own
    assert set(abl["task"]) == {"mrpc"}  # one budget on RTE: no curve there
    assert list(abl["value"]) == [0.0625, 0.25, 0.5] and list(abl["mean"]) == [72.5, 75.5, 79.5]
    assert set(abl["n"]) == {2} and abl["series"].nunique() == 1


def test_a_key_that_changes_the_method_is_not_an_ablation(tmp_path: Path) -> None:
    # vanilla LoRA r=8 and vanilla DoRA r=8 differ only in method.name: two rows of Table 1, not a
    # "score vs method.name" series (the committed CPU study drew one before this test)
    runs = tmp_path / "runs"
    for name in ("lora", "dora"):
        folder = _record(runs, task="mrpc", mask="none", seed=1, score=80.0, method_tag=f"{name}-r8",
                         config={"method.name": name}, folder_name=name)
        rec = json.loads((folder / "results.json").read_text())
        (folder / "results.json").write_text(json.dumps({**rec, "method": name}))
    out = tmp_path / "tables"
    assert _report(runs, out) == 0
    assert pd.read_csv(out / "ablation.csv").empty


def _fixture(runs: Path) -> None:
    """A small study with every kind of row and status, for the byte-identity test."""
    _contrastive(runs, {"none": [70.0, 72.0], "fish": [71.0, 73.5], "random": [69.0, 70.0], "reverse": [60.0, 50.0]},
                 tasks=("mrpc",))  # one figure of each kind (figures take ~1 s each)
    for steps in (0, 10):
        _record(runs, task="mrpc", mask="fish", seed=1, score=65.0 + steps, config={"mask.warmup_steps": steps},
                folder_name=f"warm{steps}", extra={"mask_stats": {"by_family": {}, "selected_by_param": {
                    LORA.format(0, "value", "A"): 40 + steps, LORA.format(1, "value", "B"): 60 - steps}}})
    _record(runs, task="rte", mask="fish", seed=1, score=55.0, config={"mask.warmup_steps": 0},  # a second task
            folder_name="warm0-rte", extra={"mask_stats": {"by_family": {}, "selected_by_param": {
                LORA.format(0, "query", "A"): 30, LORA.format(1, "value", "B"): 70}}})
    _record(runs, task="rte", mask="fish", seed=3, score=0.0, status="failed")


@pytest.mark.slow  # two reports with figures (~8 s)
def test_a_report_is_byte_identical_when_regenerated(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    _fixture(runs)
    first, second = tmp_path / "a", tmp_path / "b"
    assert report_main(["--runs", str(runs), "--out", str(first)]) == 0
    assert report_main(["--runs", str(runs), "--out", str(second)]) == 0
    files = sorted(p.name for p in first.iterdir())
    assert files == sorted(p.name for p in second.iterdir())
    assert {f.rsplit(".", 1)[1] for f in files} == {"csv", "tex", "md", "png", "pdf"}
    assert any(f.startswith("convergence_") for f in files) and any(f.startswith("mask_anatomy_") for f in files)
    assert any(f.startswith("ablation_") for f in files) and any(f.startswith("mask_sites_") for f in files)
    match, mismatch, errors = filecmp.cmpfiles(first, second, files, shallow=False)
    assert not mismatch and not errors, mismatch


@pytest.mark.slow  # three reports with figures (~16 s)
def test_a_rerun_into_the_same_folder_drops_figures_no_longer_made(tmp_path: Path) -> None:
    runs, out, fresh = tmp_path / "runs", tmp_path / "out", tmp_path / "fresh"
    _fixture(runs)
    assert report_main(["--runs", str(runs), "--out", str(out)]) == 0
    assert any(p.name.startswith("ablation_") for p in out.iterdir())
    (out / "my_notes.md").write_text("mine")        # not the report's: never touched
    (out / "my_plot.png").write_bytes(b"mine")
    for folder in runs.glob("mrpc/minilm-l6/lora-r16/fish/warm*"):   # the only ablation: one key varying
        shutil.rmtree(folder)
    assert report_main(["--runs", str(runs), "--out", str(out)]) == 0
    assert report_main(["--runs", str(runs), "--out", str(fresh)]) == 0
    assert not any(p.name.startswith(("ablation_", "mask_sites_")) for p in out.iterdir())
    assert sorted(p.name for p in out.iterdir()) == sorted([p.name for p in fresh.iterdir()] + ["my_notes.md", "my_plot.png"])
    assert (out / "my_plot.png").read_bytes() == b"mine"


# The committed tables and figures were made with this matplotlib: other versions may render pixels
# differently, so the figures are compared byte for byte only under it (the text files always are).
FIGURES_MATPLOTLIB = "3.11.2"


STUDIES = sorted(p.name for p in (REPO / "results" / "study").iterdir()
                 if p.is_dir() and (REPO / "results" / "tables" / p.name).is_dir())


# Report folders cut from a study with filters (`make report-cpu` writes them, without figures).
VIEWS = {"minilm-l6-cpu-table1": ("minilm-l6-cpu", ["--task", "mrpc", "--task", "sst2"])}


def test_every_committed_study_has_its_tables() -> None:
    assert "minilm-l6" in STUDIES and len(STUDIES) == len(list((REPO / "results" / "study").iterdir()))
    folders = sorted(p.name for p in (REPO / "results" / "tables").iterdir() if p.is_dir())
    assert folders == sorted(STUDIES + list(VIEWS)), "every report folder is a study's or a view's"


@pytest.mark.parametrize("view", sorted(VIEWS))
def test_the_committed_views_regenerate_byte_for_byte(view: str, tmp_path: Path) -> None:
    study, filters = VIEWS[view]
    _regenerate_and_compare(study, tmp_path / view, figures=False, name=view, filters=filters)


def _regenerate_and_compare(study: str, out: Path, *, figures: bool, name: str | None = None,
                            filters: list[str] = ()) -> None:
    """`fishtune report --runs results/study/<study> <filters>` into `out` equals results/tables/<name>
    (default: <study>), file for file (figures only with `figures`, and compared byte for byte only
    under FIGURES_MATPLOTLIB)."""
    import matplotlib

    committed = REPO / "results" / "tables" / (name or study)
    assert report_main(["--runs", str(REPO / "results" / "study" / study), "--out", str(out), *filters]
                       + ([] if figures else ["--no-figures"])) == 0
    is_figure = lambda name: name.endswith((".png", ".pdf"))  # noqa: E731
    files = sorted(p.name for p in out.iterdir())
    assert files == sorted(p.name for p in committed.iterdir() if figures or not is_figure(p.name))
    compared = [f for f in files if not is_figure(f) or matplotlib.__version__ == FIGURES_MATPLOTLIB]
    _, mismatch, errors = filecmp.cmpfiles(committed, out, compared, shallow=False)
    assert not mismatch and not errors, f"regenerate with `fishtune report --runs results/study/{study} " \
                                        f"--out results/tables/{name or study} {' '.join(filters)}`: {mismatch}"


@pytest.mark.parametrize("study", STUDIES)
def test_the_committed_tables_regenerate_byte_for_byte(study: str, tmp_path: Path) -> None:
    """results/tables/<study>'s tables (CSV, Markdown, LaTeX) == the report of results/study/<study>."""
    _regenerate_and_compare(study, tmp_path / study, figures=False)


@pytest.mark.slow
@pytest.mark.parametrize("study", STUDIES)
def test_the_committed_tables_and_figures_regenerate_byte_for_byte(study: str, tmp_path: Path) -> None:
    """The same with the figures (matplotlib drawing them is most of the time: slow suite)."""
    _regenerate_and_compare(study, tmp_path / study, figures=True)


def _script(name: str):
    """scripts/<name>.py as a module (the scripts are not a package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_methods_table_script_joins_scores_counts_shares_and_times(tmp_path: Path) -> None:
    """scripts/methods_table.py (the issue-9 table) from a report folder: one line per config."""
    script = _script("methods_table")
    runs = tmp_path / "runs"
    _record(runs, task="mrpc", mask="none", seed=1, score=80.0, metrics={"f1": 84.0, "accuracy": 76.0},
            method_tag="lora-r8", r=8)
    _record(runs, task="mrpc", mask="fish", seed=1, score=50.0, metrics={"f1": 60.0, "accuracy": 40.0},
            extra={"time_s": {"total": 20.0, "train": 8.0, "fisher": 1.5, "fisher_warmup": 4.0}})
    out = tmp_path / "tables"
    assert _report(runs, out) == 0
    lines = script.methods_table(out, "mrpc").splitlines()
    assert lines[0].endswith("| warm-up s | Fisher s | mrpc F1 | mrpc acc | score |") and len(lines) == 4
    assert lines[2] == "| minilm-l6 / lora-r8 / none | vanilla | 100 | 0 | – | 200 | – | – | 1 | 84.00 | 76.00 | 80.00 |"
    assert lines[3] == ("| minilm-l6 / lora-r16 / fish | fish | 100 | 0 | – | 200 | lora_A 40.0% | 4 | 2 | 60.00 | "
                        "40.00 | 50.00 (majority class) |")
    assert script.main([str(tmp_path / "nothing")]) == 2


# --- the README's result tables ------------------------------------------------------------------

_CONFIG_ROW = re.compile(r"^\| [\w.-]+ / [\w.-]+ / ")          # `| model / method / mask ... |`
_SCORE = re.compile(r"^-?\d+\.\d\d(?: ± \d+\.\d\d)?(?= \(| \[|$)")  # 82.25, 82.25 ± 0.34, 74.80 (majority class)


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def test_every_result_row_in_the_readme_is_a_row_of_a_committed_table(tmp_path: Path) -> None:
    """Each README table row of a config (`| minilm-l6 / lora-r8 / none | ... |`) has every score it
    shows (two decimals, with its ± std) in a row of that config in results/tables/*/*.md, or in the
    issue-9 methods table, which scripts/methods_table.py builds from the seed-1 report of the
    methods study: a README number is never typed by hand or left stale after a regeneration."""
    script = _script("methods_table")
    seed1 = tmp_path / "methods-seed1"
    assert _report(REPO / "results" / "study" / "minilm-l6-methods", seed1, "--seed", "1") == 0
    sources = [p.read_text(encoding="utf-8") for p in sorted((REPO / "results" / "tables").glob("*/*.md"))]
    sources.append(script.methods_table(seed1, "mrpc"))
    rows: dict[str, list[list[str]]] = {}
    for text in sources:
        for line in text.splitlines():
            if _CONFIG_ROW.match(line):
                cells = _cells(line)
                rows.setdefault(cells[0], []).append(cells)
    checked, stale = 0, []
    for number, line in enumerate((REPO / "README.md").read_text(encoding="utf-8").splitlines(), 1):
        if not _CONFIG_ROW.match(line):
            continue
        cells = _cells(line)
        scores = [m.group(0) for c in cells[1:] if (m := _SCORE.match(c)) and not _PAIRED_CELL.fullmatch(c)]
        found = any(all(any(c == s or c.startswith(s + " ") for c in row) for s in scores)
                    for row in rows.get(cells[0], []))
        checked += 1
        if not found:
            stale.append(f"README.md:{number}: {cells[0]} {scores}")
    assert checked >= 40 and not stale, "\n".join(stale)


_PAIRED_CELL = re.compile(r"[-+]\d+\.\d\d (?:\[[-+]\d+\.\d\d, [-+]\d+\.\d\d\] \(n=\d+\)|\(n=1, no CI\))")


def test_every_figure_the_readme_shows_is_committed() -> None:
    shown = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", (REPO / "README.md").read_text(encoding="utf-8"))
    assert shown and all((REPO / path).is_file() for path in shown), shown


def test_every_paired_difference_in_the_readme_is_in_a_committed_paired_table() -> None:
    """A README table cell such as `+4.48 [+0.67, +8.28] (n=3)` appears verbatim in a committed
    paired.md (the README lays them out per task; the report lists one comparison per line)."""
    committed = "\n".join(p.read_text(encoding="utf-8") for p in (REPO / "results" / "tables").glob("*/paired.md"))
    shown = [(n, cell) for n, line in enumerate((REPO / "README.md").read_text(encoding="utf-8").splitlines(), 1)
             if line.startswith("|") for cell in _PAIRED_CELL.findall(line)]
    stale = [f"README.md:{n}: {cell}" for n, cell in shown if cell not in committed]
    assert shown and not stale, "\n".join(stale)


def test_readme_tables_script_cuts_each_kind_of_block_verbatim(tmp_path: Path, capsys) -> None:
    """scripts/readme_tables.py: a FISH row's budget group, its paired differences per task, Table 1
    rows (each FISH row after its vanilla partner) and FISH − vanilla per row, every cell as the
    report wrote it (so the README checks above pass)."""
    script = _script("readme_tables")
    runs = tmp_path / "runs"
    _contrastive(runs, {"none": [70.0, 72.0], "fish": [71.0, 74.0], "random": [70.0, 70.0], "reverse": [60.0, 61.0]})
    _record(runs, task="mrpc", mask="fish", seed=1, score=99.0, selected=7, config={"mask.keep_ratio": 0.01},
            folder_name="other-budget")
    out = tmp_path / "tables"
    assert _report(runs, out) == 0
    fish = "minilm-l6 / lora-r16 / fish [keep_ratio=None]"
    group = script.render("group", out, fish).splitlines()
    assert group[0] == "| config | kind | mrpc | rte | avg |" and len(group) == 6  # not the other budget's row
    assert group[3] == "| minilm-l6 / lora-r16 / fish [keep_ratio=None] | fish | 72.50 ± 2.12 (n=2) | 73.50 ± 2.12 (n=2) | 73.00 (n=2) |"
    # `controls`: the group less its other FISH rows (an ablation's variant at the same count)
    table3 = (out / "table3.md").read_text()
    mine = next(line for line in table3.splitlines() if line.startswith(f"| {fish} |"))
    variant = table3.replace(mine, mine + "\n" + mine.replace(fish, "minilm-l6 / lora-r16 / fish-w0"))
    assert len(script.group_table(variant, fish).splitlines()) == 7
    assert script.group_table(variant, fish, controls_only=True) == "\n".join(group)
    paired = script.render("paired", out, fish).splitlines()
    assert paired[0] == "| task | FISH − vanilla | FISH − random | FISH − reverse |"
    assert paired[2] == "| mrpc | +1.50 [-4.85, +7.85] (n=2) | +2.50 [-16.56, +21.56] (n=2) | +12.00 [-0.71, +24.71] (n=2) |"
    assert [line.split(" | ")[0] for line in paired[2:]] == ["| mrpc", "| rte", "| avg (mrpc,rte)"]
    committed = (out / "paired.md").read_text()
    assert all(cell in committed for line in paired[2:] for cell in _PAIRED_CELL.findall(line))
    table1 = script.render("table1", out, fish).splitlines()
    assert table1[0] == "| config | kind | trainable | backbone_pct | mrpc F1 | mrpc acc | rte acc | avg |"  # no live
    assert [line.split(" | ")[0] for line in table1[2:]] == ["| minilm-l6 / lora-r8 / none", f"| {fish}"]
    assert table1[3] == f"| {fish} | fish | 100 | 0.5% | missing | 72.50 ± 2.12 (n=2) | 73.50 ± 2.12 (n=2) | 73.00 (n=2) |"
    alone = script.render("table1", out, "minilm-l6 / lora-r8 / none").splitlines()  # no FISH pairing: itself only
    assert [line.split(" | ")[0] for line in alone[2:]] == ["| minilm-l6 / lora-r8 / none"]
    vanilla = script.render("vanilla", out, f"{fish}; ").splitlines()
    assert vanilla[0] == "| FISH row | mrpc | rte | avg (mrpc,rte) |"
    assert vanilla[2] == f"| {fish} | {paired[2].split(' | ')[1]} | {paired[3].split(' | ')[1]} | {paired[4].split(' | ')[1]} |"
    for kind, argument, message in (("group", "nosuch", "no row 'nosuch' in table3.md"),
                                    ("vanilla", "nosuch", "no paired differences of 'nosuch'"),
                                    ("table9", fish, "unknown block kind 'table9'")):
        with pytest.raises(script.BlockError, match=re.escape(message)):
            script.render(kind, out, argument)
    assert script.main(["--print", f"group {tmp_path / 'nothing'}: {fish}"]) == 2
    with pytest.raises(script.BlockError, match="no table"):    # a report of no runs
        script.group_table("# Table 3\n\nNo runs for this table.\n", fish)
    # a FISH row the linking rule pairs with two tied partners: an error naming both, never one dropped
    partnered = (out / "paired.md").read_text()
    random_line = next(line for line in partnered.splitlines() if line.startswith("| FISH − random |"))
    cells = random_line.split(" | ")
    alt = " | ".join([*cells[:2], cells[2] + "-alt", *cells[3:]])   # the same line, another partner
    tied = partnered.replace(random_line, random_line + "\n" + alt)
    with pytest.raises(script.BlockError, match="two FISH − random partners.*random-alt"):
        script.paired_table(tied, fish)
    assert "run `fishtune report --out" in capsys.readouterr().err

    # a README: every fenced block refilled from the folder it names, the prose left alone, then a no-op
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n<!-- readme_tables group tables: {fish} -->\nstale\n<!-- /readme_tables -->\nmiddle\n"
                      f"<!-- readme_tables paired tables: {fish} -->\n<!-- /readme_tables -->\nend\n")
    assert script.main([str(readme), "--check"]) == 1 and "stale" in readme.read_text()
    assert script.main([str(readme)]) == 0
    text = readme.read_text()
    assert "stale" not in text and "\n".join(group) in text and "\n".join(paired) in text
    assert text.startswith("intro\n") and "\nmiddle\n" in text and text.endswith("<!-- /readme_tables -->\nend\n")
    assert script.main([str(readme)]) == 0 and script.main([str(readme), "--check"]) == 0 and readme.read_text() == text
    readme.write_text("no blocks here\n")
    assert script.main([str(readme)]) == 2


def test_the_readme_tables_are_up_to_date() -> None:
    """Every fenced block of the README is what scripts/readme_tables.py cuts from the committed
    reports today (a changed digit, a landed seed or a new column fails here)."""
    script = _script("readme_tables")
    text = (REPO / "README.md").read_text(encoding="utf-8")
    assert {kind for _, kind, *_ in script.BLOCK.findall(text)} >= {"group", "paired"}
    updated, _ = script.update_blocks(text, REPO)
    assert updated == text, "run: python scripts/readme_tables.py README.md"


def test_a_failed_report_leaves_the_last_one_whole(tmp_path: Path, monkeypatch, capsys) -> None:
    """Written into a folder beside --out and moved in at the end: a report that fails midway (a disk
    error, a bug) used to leave some tables new and the rest old, in one folder."""
    from fishtune.report import render

    runs, out = tmp_path / "runs", tmp_path / "tables"
    for seed in (1, 2):
        _record(runs, task="rte", mask="fish", seed=seed, score=70.0 + seed)
    assert _report(runs, out) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    _record(runs, task="rte", mask="fish", seed=3, score=90.0)

    write = render.atomic_write_text

    def disk_full_at_table5(path, text):   # after table1, table3 and paired are written
        if path.name.startswith("table5"):
            raise FishtuneError(f"cannot write {path}: No space left on device")
        write(path, text)

    monkeypatch.setattr(render, "atomic_write_text", disk_full_at_table5)
    assert _report(runs, out) == 2
    assert "No space left on device" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    fresh = tmp_path / "fresh"
    assert _report(runs, fresh) == 2 and not fresh.exists()   # no empty --out left behind

    def interrupted_at_table5(path, text):   # Ctrl-C, or SIGTERM (raised as KeyboardInterrupt while reporting)
        if path.name.startswith("table5"):
            raise KeyboardInterrupt
        write(path, text)

    monkeypatch.setattr(render, "atomic_write_text", interrupted_at_table5)
    assert _report(runs, out) == 130
    assert "interrupted; --out keeps its last report" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before   # the staging folder is gone too
    monkeypatch.undo()
    assert _report(runs, out) == 0 and "77.67 ± 10.69 (n=3)" in (out / "table1.md").read_text()

    for seed in (1, 2, 3):   # nothing complete any more: the last report stays, the listing is printed
        (runs / "rte" / "minilm-l6" / "lora-r16" / "fish" / f"seed{seed}" / "results.json").write_text("{")
    kept = {p.name: p.read_bytes() for p in out.iterdir()}
    assert _report(runs, out) == 1
    captured = capsys.readouterr()
    assert "malformed" in captured.out and f"nothing written to {out}" in captured.err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == kept
    for flag in ("--out", "--runs", "--table6-task"):
        args = {"--runs": str(runs), "--out": str(out), flag: " "}
        assert report_main([a for kv in args.items() for a in kv]) == 2
        assert f"{flag} is empty" in capsys.readouterr().err


def test_a_name_with_a_line_break_or_bar_stays_in_its_markdown_cell() -> None:
    from fishtune.report.render import to_markdown

    frame = pd.DataFrame({"a|b": ["x\ny|z"]}, index=pd.Index(["r\n1"], name="row"))
    assert to_markdown(frame) == "| row | a\\|b |\n|---|---|\n| r 1 | x y\\|z |\n"


def test_a_record_that_links_to_nothing_is_listed_malformed_not_left_out(tmp_path: Path) -> None:
    runs, out = tmp_path / "runs", tmp_path / "tables"
    for seed in (1, 2):
        _record(runs, task="rte", mask="fish", seed=seed, score=70.0 + seed)
    link = _record(runs, task="rte", mask="fish", seed=3, score=72.0) / "results.json"
    link.unlink()
    link.symlink_to(link.parent / "gone.json")   # pathlib's rglob passes over it
    assert _report(runs, out) == 0
    status = _csv(out, "runs_status")
    assert status.loc["rte/minilm-l6/lora-r16/fish/seed3", "status"] == "malformed"
