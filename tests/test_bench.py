"""`fishtune bench` end to end on the tiny model: it runs, and its JSON says what it measured.

Never asserts on speed: timings on a shared machine are not a test.
"""

from __future__ import annotations

import json
import math

import pytest

from fishtune.bench import COMPARISONS, main

TIMED = ("step", "fisher", "epoch", "inference")


@pytest.mark.slow  # every comparison of the benchmark (~6 s)
def test_bench_tiny_writes_all_comparisons(tmp_path, capsys, monkeypatch):
    workdir, out = tmp_path / "cwd", tmp_path / "out"
    workdir.mkdir()
    monkeypatch.chdir(workdir)  # nothing may be written beside the JSON (the Trainer arm uses a temp folder)
    code = main(["--model", "tiny-bert", "--repeats", "2", "--fisher-samples", "8", "--epoch-batches", "3",
                 "--out", str(out)])
    assert code == 0
    assert list(workdir.iterdir()) == []
    files = list(out.glob("tiny-bert-cpu-*.json"))
    assert len(files) == 1
    result = json.loads(files[0].read_text())

    assert set(result["comparisons"]) == set(COMPARISONS)
    for name in TIMED:
        c = result["comparisons"][name]
        for side in ("a", "b"):
            assert c[side]["median_s"] > 0
            assert len(c[side]["times_s"]) >= 2 and all(t > 0 for t in c[side]["times_s"])
        assert math.isfinite(c["ratio"]) and c["ratio"] > 0, name
    inference = result["comparisons"]["inference"]
    assert inference["arms"][0] == "merged" and inference["ratio_label"] == "merged/base (latency)"
    for key in inference["arms"][1:]:
        assert inference[key]["b"]["median_s"] > 0 and math.isfinite(inference[key]["ratio"]), key
    assert "unmerged" in inference["arms"] and inference["max_abs_logit_diff_merged_vs_unmerged"] < 1e-4

    epoch = result["comparisons"]["epoch"]  # transformers Trainer + PEFT (A) vs fishtune's Trainer (B)
    assert "Trainer" in epoch["a"]["label"] and epoch["ratio_label"] == "speed-up fishtune/Trainer (examples/s)"
    assert epoch["steps"] == 3 and epoch["examples"] == 96 == epoch["b"]["items_per_call"]
    assert math.isclose(epoch["ratio"], epoch["b"]["median_examples_per_s"] / epoch["a"]["median_examples_per_s"])
    assert math.isfinite(epoch["loop_ratio"]) and epoch["loop_ratio"] > 0
    assert all(t > -0.01 for t in epoch["outside_loop_s_median"].values())  # (loop times are rounded)
    trainer = epoch["trainer"]
    assert trainer["training_arguments"]["group_by_length"] is True and trainer["training_arguments"]["report_to"] == []
    assert len(trainer["train_loss"]) == len(epoch["a"]["times_s"])
    assert all(math.isfinite(x) for x in trainer["train_loss"])
    assert all(math.isfinite(x) for x in epoch["fishtune"]["train_loss"])
    padded = epoch["padded_tokens"]
    assert epoch["real_tokens"] <= padded["fishtune"] < padded["pad_to_128_not_timed"]
    assert all(epoch["real_tokens"] <= t < padded["pad_to_128_not_timed"] for t in padded["trainer_per_run"])

    fisher = result["comparisons"]["fisher"]
    assert fisher["masks_identical"] is True
    assert fisher["num_samples"] == 8 and fisher["max_rel_diff"] < 1e-4

    memory = result["comparisons"]["memory"]
    assert memory["mask_storage_bytes"] > 0 and math.isfinite(memory["ratio"]) and 0 < memory["ratio"] < 1

    for key in ("torch", "transformers", "peft"):
        assert result["versions"][key]
    assert result["device"]["type"] == "cpu" and result["device"]["name"]
    assert result["sizes"]["batch_size"] == 32 and result["sizes"]["fisher_samples"] == 8
    assert result["sizes"]["epoch_batches"] == 3
    assert result["sizes"]["model_params"] > 0 and result["sizes"]["step_batch_shape"][0] == 32

    out = capsys.readouterr().out
    for name in COMPARISONS:
        assert name in out
    assert str(files[0]) in out


def test_bench_only_selects_comparisons(tmp_path):
    assert main(["--model", "tiny-bert", "--repeats", "2", "--only", "inference", "--out", str(tmp_path)]) == 0
    (path,) = tmp_path.glob("*.json")
    assert set(json.loads(path.read_text())["comparisons"]) == {"inference"}


def test_an_out_below_a_file_is_one_line_before_any_work(tmp_path, capsys, monkeypatch):
    import fishtune.bench as bench

    def no_work(*args, **kwargs):
        raise AssertionError("the benchmark ran before --out was checked")

    monkeypatch.setattr(bench, "build_context", no_work)
    (tmp_path / "afile").write_text("keep me")
    for out in (tmp_path / "afile", tmp_path / "afile" / "sub"):
        assert main(["--model", "tiny-bert", "--only", "step", "--out", str(out)]) == 2
        err = capsys.readouterr().err.strip()
        assert "afile is a file" in err and len(err.splitlines()) == 1 and "Traceback" not in err
    assert (tmp_path / "afile").read_text() == "keep me"


def test_a_json_that_cannot_be_written_is_one_line_after_the_table(tmp_path, capsys, monkeypatch):
    # --out becomes unusable while the benchmark runs: the measured table is still shown
    import fishtune.bench as bench

    (tmp_path / "afile").write_text("keep me")
    monkeypatch.setattr(bench, "check_out", lambda out: None, raising=False)
    assert main(["--model", "tiny-bert", "--repeats", "1", "--only", "inference",
                 "--out", str(tmp_path / "afile" / "sub")]) == 1
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert "cannot write" in err and len(err.splitlines()) == 1 and "Traceback" not in err
    assert "inference" in captured.out and (tmp_path / "afile").read_text() == "keep me"


@pytest.fixture(scope="module")
def tiny_ctx():
    import argparse

    import torch

    from fishtune.bench.common import build_context

    args = argparse.Namespace(model="tiny-bert", seed=0, batch_size=8, epoch_batches=1, fisher_samples=8)
    return build_context(args, torch.device("cpu"), autocast=False)


def test_the_step_arms_differ_by_the_mask_alone(tiny_ctx, monkeypatch):
    """The vanilla and masked steps get the same optimizer from the same call (class, lr, decay,
    betas, eps, fused/foreach), so the masked/vanilla ratio times the mask and nothing else."""
    from fishtune.bench import common

    made = []   # (keyword arguments, the optimizer built) of each make_optimizer call
    real = common.make_optimizer

    def recorded(params, **kw):
        made.append((kw, real(params, **kw)))
        return made[-1][1]

    monkeypatch.setattr(common, "make_optimizer", recorded)
    common.vanilla_step(tiny_ctx, common.train_copy(tiny_ctx))
    _, _, masked_opt = common.masked_step(tiny_ctx, common.train_copy(tiny_ctx))
    assert len(made) == 2 and made[1][1] is masked_opt
    (vanilla_kw, vanilla_opt), (masked_kw, _) = made
    assert vanilla_kw == masked_kw and vanilla_kw["weight_decay"] == 0.0
    settings = [{k: v for k, v in opt.param_groups[0].items() if k not in ("params", "initial_lr")}
                for opt in (vanilla_opt, masked_opt)]
    assert type(vanilla_opt) is type(masked_opt) and settings[0] == settings[1]


def test_both_fisher_arms_run_in_fp32_whatever_the_bench_precision(tiny_ctx, monkeypatch):
    from dataclasses import replace

    from fishtune.bench import fisher

    seen = []
    for name in ("fisher_reference", "fisher_fishtune"):
        real = getattr(fisher, name)
        monkeypatch.setattr(fisher, name, lambda *a, _real=real, _name=name, **kw: seen.append((_name, kw["autocast"]))
                            or _real(*a, **kw))
    result = fisher.compare_fisher(replace(tiny_ctx, autocast=True), repeats=1, num_samples=4)
    assert {name for name, _ in seen} == {"fisher_reference", "fisher_fishtune"}
    assert all(autocast is False for _, autocast in seen) and result["masks_identical"] is True
