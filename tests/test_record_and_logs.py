"""Provenance read at import, per-run peak memory, a fixed dev subset, length-grouped warm-up
batches and plain progress lines when the output is not a terminal."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from conftest import GLUE, compose_run, records


def test_provenance_is_what_the_process_imported(monkeypatch) -> None:
    from fishtune import provenance
    from fishtune.record import environment

    assert provenance.AT_IMPORT["source_sha256"] == provenance.source_digest()
    monkeypatch.setattr(provenance, "git_revision", lambda *a, **k: {"commit": "later", "dirty": False})
    git = environment(torch.device("cpu"))["git"]
    assert git["commit"] != "later" and git["read_at"] == "import" and len(git["source_sha256"]) == 64


def test_source_digest_changes_with_any_source_file(tmp_path: Path) -> None:
    from fishtune.provenance import source_digest

    (tmp_path / "a.py").write_text("x = 1\n")
    before = source_digest(tmp_path)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.py").write_text("")
    assert source_digest(tmp_path) != before


def test_the_fisher_cache_key_ignores_the_reporter_planner_and_benchmark(tmp_path: Path) -> None:
    """An edit to code that never runs in a training process keeps the cached Fishers; any other
    edit (here: a new estimator module) makes them a miss."""
    from fishtune import provenance

    for rel in ("fisher.py", "report/tables.py", "plan.py", "bench/step.py"):
        (tmp_path / rel).parent.mkdir(exist_ok=True)
        (tmp_path / rel).write_text("x = 1\n")
    training = provenance.source_digest(tmp_path, exclude=provenance.NOT_TRAINING)
    for rel in ("report/tables.py", "plan.py", "bench/step.py"):
        (tmp_path / rel).write_text("x = 2\n")
    (tmp_path / "report" / "new.py").write_text("")
    assert provenance.source_digest(tmp_path, exclude=provenance.NOT_TRAINING) == training
    (tmp_path / "fisher.py").write_text("x = 2\n")
    assert provenance.source_digest(tmp_path, exclude=provenance.NOT_TRAINING) != training
    assert provenance.TRAINING_SOURCE_SHA256 == provenance.source_digest(exclude=provenance.NOT_TRAINING)
    assert all((provenance.PACKAGE_DIR / part).exists() for part in provenance.NOT_TRAINING)  # names still real


def test_peak_memory_is_per_run() -> None:
    from fishtune.record import peak_memory, reset_peak_memory

    big = np.ones(400_000_000 // 8)  # an earlier cell's peak
    big[::512] = 2.0
    del big
    reset_peak_memory()
    after = peak_memory(torch.device("cpu"))
    assert after["cpu_peak_scope"] == "run"
    assert after["cpu_peak_rss_bytes"] < _rss_bytes() + 200 * 2**20  # the 400 MB peak is not inherited


def _rss_bytes() -> int:
    line = next(l for l in Path("/proc/self/status").read_text().splitlines() if l.startswith("VmRSS:"))
    return int(line.split()[1]) * 1024


def test_every_seed_is_scored_on_the_same_dev_subset() -> None:
    from fishtune.runner import _load_data
    from fishtune.tasks import get_task

    subsets = []
    for seed in (1, 2):
        cfg = compose_run(f"seed={seed}", "train.max_eval_samples=50", "train.max_train_samples=50", f"data.dir={GLUE}")
        train, evals = _load_data(cfg, get_task("mrpc"))
        subsets.append(([e.text_a for e in train], [e.text_a for e in evals["dev"]]))
    assert subsets[0][1] == subsets[1][1]  # dev: a fixed subset
    assert subsets[0][0] != subsets[1][0]  # train: drawn with the run seed


def test_warmup_batch_orders(monkeypatch) -> None:
    import fishtune.selection as selection
    from fishtune.batching import encode
    from fishtune.mask_stage import dense_warmup
    from fishtune.data import load_split
    from fishtune.models import MINILM_PACKAGE, package_model_dir
    from fishtune.tasks import get_task
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(package_model_dir(MINILM_PACKAGE)))
    examples = load_split(get_task("sst2"), "train", source="local", data_dir=GLUE, max_samples=2000, seed=0)
    data = encode(examples, tokenizer, max_length=128, token_type_ids=True, regression=False)
    widths, tokens = [], []
    real_iterate = selection.iterate

    def spy(data, batches, **kw):
        for batch in real_iterate(data, batches, **kw):
            widths.append(batch["input_ids"].numel())
            tokens.append(int(batch["attention_mask"].sum()))
            yield batch

    monkeypatch.setattr(selection, "iterate", spy)
    model = torch.nn.Module()
    model.dummy = torch.nn.Parameter(torch.zeros(1))
    model.forward = lambda **kw: type("Out", (), {"logits": model.dummy.expand(kw["input_ids"].shape[0], 2) * 1.0})()
    density = {}
    for order in ("length_grouped", "shuffled"):
        widths.clear(), tokens.clear()
        batches = selection._warmup_batches(data, batch_size=32, seed=1, pad_id=0, device=torch.device("cpu"),
                                            order=order)
        dense_warmup(model, batches, steps=40, lr=1e-3)
        assert len(widths) == 40
        density[order] = sum(tokens) / sum(widths)
    # Real tokens / padded positions over 40 batches of SST-2: 0.77 length-grouped (rounded up to 8),
    # 0.32 for the plain shuffle (the default, mask.warmup_order=shuffled: README).
    assert density["length_grouped"] > 0.7 and density["shuffled"] < 0.45


def test_plain_progress_lines_when_output_is_not_a_terminal(run_cli, tmp_path: Path, capsys) -> None:
    assert run_cli("train.progress=true", "train.max_train_samples=96") == 0
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "ETA" in line]
    assert len(lines) >= 10 and "\r" not in err
    assert "epoch 1/1  step 12/12 (100%)  loss" in lines[-1]
    (rec,) = records(tmp_path / "runs")
    assert rec["status"] == "complete"


def test_a_run_process_has_imported_all_its_training_code_before_it_runs() -> None:
    # the source hash of a record is read at import: code imported later (at the first mask of a
    # long sweep) could be an edit made since, run under the old hash
    import subprocess
    import sys

    from fishtune.provenance import NOT_TRAINING, PACKAGE_DIR

    not_run_by_fishtune_run = {"callback", "trainer_batches", "export"}  # the public API and `fishtune export`
    code = "import sys, fishtune.cli, fishtune.runner; print(' '.join(m for m in sys.modules if m.startswith('fishtune')))"
    loaded = set(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split())
    expected = {".".join(("fishtune", *p.relative_to(PACKAGE_DIR).with_suffix("").parts)).removesuffix(".__init__")
                for p in PACKAGE_DIR.rglob("*.py") if p.relative_to(PACKAGE_DIR).parts[0] not in NOT_TRAINING
                and p.stem not in not_run_by_fishtune_run}
    assert expected - loaded == set()


def test_a_resumed_run_lists_its_sessions_and_drops_the_earlier_failure(tmp_path: Path, monkeypatch, capsys) -> None:
    import json

    from fishtune import train
    from fishtune.cli import main
    from conftest import TINY

    args = ["run", *[a for a in TINY if not a.startswith("train.epochs")], "train.epochs=2", f"output_dir={tmp_path}"]
    save = train.Trainer._checkpoint

    def crash_after_epoch_1(self, progress, *rest) -> None:
        save(self, progress, *rest)
        if progress.epoch == 1 and progress.step_in_epoch == 0:
            raise RuntimeError("simulated crash")

    monkeypatch.setattr(train.Trainer, "_checkpoint", crash_after_epoch_1)
    assert main(args) == 1
    failed = json.loads((tmp_path / "results.json").read_text())
    assert failed["status"] == "failed" and (tmp_path / "traceback.txt").exists()

    monkeypatch.setattr(train.Trainer, "_checkpoint", save)
    threads = torch.get_num_threads()
    torch.set_num_threads(threads + 1)   # a resume on another thread count is not bit-identical: said
    try:
        assert main(args) == 0
    finally:
        torch.set_num_threads(threads)
    assert f"another torch thread count than its last session ({threads}, now {threads + 1})" in capsys.readouterr().err
    rec = json.loads((tmp_path / "results.json").read_text())
    assert rec["status"] == "complete" and rec["resumed"] and [e["epoch"] for e in rec["epochs"]] == [1, 2]
    assert "error" not in rec and "traceback" not in rec and not (tmp_path / "traceback.txt").exists()
    first, second = rec["sessions"]
    assert first["ended"] == "failed" and "simulated crash" in first["error"] and "ended" not in second
    assert first["started_at"] == failed["started_at"] and second["started_at"] == rec["started_at"]
    for session in rec["sessions"]:
        assert set(session) >= {"git", "versions", "hardware", "torch_threads", "training_sha256"}


def test_a_signal_while_the_complete_record_is_saved_leaves_it_interrupted(run_cli, tmp_path: Path,
                                                                           monkeypatch) -> None:
    """The record is `complete` in memory before its save returns: a signal mid-save must not leave
    `running` on disk (listed as running until a rerun) with the session counted as killed."""
    from fishtune import record as record_module
    from fishtune.errors import Terminated

    write = record_module.atomic_write_json

    def sigterm_saving_complete(path, data):
        if data.get("status") == "complete":
            raise Terminated("signal 15")
        return write(path, data)

    monkeypatch.setattr(record_module, "atomic_write_json", sigterm_saving_complete)
    assert run_cli() == 143
    (rec,) = records(tmp_path / "runs")
    assert rec["status"] == "interrupted"
    monkeypatch.setattr(record_module, "atomic_write_json", write)
    assert run_cli() == 0
    (rec,) = records(tmp_path / "runs")
    assert rec["status"] == "complete" and rec["sessions"][0]["ended"] == "interrupted"


def test_a_run_saved_complete_stays_complete_when_signalled_in_its_last_lines(run_cli, tmp_path: Path,
                                                                              monkeypatch) -> None:
    from fishtune import runner
    from fishtune.errors import Terminated

    info = runner.log.info

    def sigterm_at_the_final_log(msg, *args, **kwargs):
        if str(msg).startswith("done:"):
            raise Terminated("signal 15")
        return info(msg, *args, **kwargs)

    monkeypatch.setattr(runner.log, "info", sigterm_at_the_final_log)
    assert run_cli() == 143
    (rec,) = records(tmp_path / "runs")
    assert rec["status"] == "complete"
