"""The Fisher cache: a reverse run (or another budget) reads the Fisher a FISH run estimated, and its
mask is bit-identical to the one it would have estimated itself; anything that can change the
estimate misses; a broken cache file is a miss, never a crash."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import records
from fishtune.fisher_cache import CACHE_DIR

CELL = ["task=rte", "method.r=4", "mask.num_samples=16", "mask.warmup_steps=2"]


def _by_strategy(root: Path) -> dict[str, tuple[dict, Path]]:
    out = {}
    for path in sorted(root.rglob("results.json")):
        rec = next(r for r in records(path.parent) if r)
        out[rec["mask"]] = (rec, path.parent)
    return out


def _cache_files(root: Path) -> list[Path]:
    return sorted((root / CACHE_DIR).glob("*.safetensors"))


def test_reverse_reads_the_fish_runs_fisher_and_gets_the_mask_it_would_estimate(run_cli, tmp_path: Path) -> None:
    assert run_cli(*CELL, "mask=fish") == 0
    assert len(_cache_files(tmp_path / "runs")) == 1
    assert run_cli(*CELL, "mask=reverse") == 0
    assert run_cli(*CELL, "mask=fish", "mask.keep_ratio=0.25") == 0      # another budget: same Fisher
    assert len(_cache_files(tmp_path / "runs")) == 1
    # The same reverse cell with the cache off, in another runs folder: it estimates the Fisher itself.
    assert run_cli(*CELL, "mask=reverse", "mask.fisher_cache=false", f"runs_root={tmp_path / 'fresh'}") == 0

    runs = [r for r in records(tmp_path / "runs")]
    fish = next(r for r in runs if r["mask"] == "fish" and r["mask_stats"]["fisher_cache"]["hit"] is False)
    hits = [r for r in runs if r["mask_stats"]["fisher_cache"]["hit"]]
    assert len(hits) == 2 and all(r["status"] == "complete" for r in runs)
    assert {r["mask_stats"]["fisher_examples"] for r in runs} == {16}   # mask.num_samples of the 48
    for rec in hits:
        entry = rec["mask_stats"]["fisher_cache"]
        assert entry["key"] == fish["mask_stats"]["fisher_cache"]["key"]
        assert rec["time_s"]["fisher"] == fish["time_s"]["fisher"]  # the estimate's cost, spent once
        assert Path(entry["computed_by"]).name == Path(fish["output_dir"]).name

    (fresh,) = records(tmp_path / "fresh")
    assert "fisher_cache" not in fresh["mask_stats"] and not _cache_files(tmp_path / "fresh")
    cached_reverse = next(r for r in hits if r["mask"] == "reverse")
    a = (Path(cached_reverse["output_dir"]) / "mask.safetensors").read_bytes()
    b = (Path(fresh["output_dir"]) / "mask.safetensors").read_bytes()
    assert a == b  # bit-identical mask file, info included
    assert cached_reverse["score"] == fresh["score"]


@pytest.mark.slow  # four CLI runs (~6 s)
def test_settings_that_change_the_estimate_miss(run_cli, tmp_path: Path) -> None:
    assert run_cli(*CELL, "mask=fish") == 0
    assert run_cli(*CELL, "mask=reverse", "mask.num_samples=8") == 0
    assert run_cli(*CELL, "mask=fish", "seed=2") == 0
    assert run_cli(*CELL, "mask=random") == 0                          # no Fisher, no cache entry
    runs = records(tmp_path / "runs")
    assert [r["mask_stats"].get("fisher_cache", {}).get("hit") for r in runs].count(True) == 0
    assert len(_cache_files(tmp_path / "runs")) == 3


def test_a_broken_cache_file_is_a_miss_and_is_replaced(run_cli, tmp_path: Path) -> None:
    assert run_cli(*CELL, "mask=fish") == 0
    (path,) = _cache_files(tmp_path / "runs")
    good = {n: t.clone() for n, t in load_file(str(path)).items()}  # load_file maps the file
    path.write_bytes(b"not a safetensors file")
    assert run_cli(*CELL, "mask=reverse") == 0
    rev = next(r for r in records(tmp_path / "runs") if r["mask"] == "reverse")
    assert rev["status"] == "complete" and rev["mask_stats"]["fisher_cache"]["hit"] is False
    again = load_file(str(path))
    assert all(torch.equal(good[n], again[n]) for n in good)  # the same estimate, written back


def test_data_edited_in_place_misses(run_cli, tmp_path: Path) -> None:
    # the same data.dir, other examples: the key covers what the estimate reads, not only where from
    import shutil

    from conftest import GLUE

    glue = tmp_path / "glue"
    shutil.copytree(GLUE / "RTE", glue / "RTE")
    assert run_cli(*CELL, "mask=fish", f"data.dir={glue}") == 0
    train = glue / "RTE" / "train.tsv"
    flipped = {"entailment": "not_entailment", "not_entailment": "entailment"}
    lines = train.read_text(encoding="utf-8").splitlines()
    train.write_text("\n".join([lines[0]] + [line.rsplit("\t", 1)[0] + "\t" + flipped[line.rsplit("\t", 1)[1]]
                                             for line in lines[1:]]) + "\n", encoding="utf-8")
    assert run_cli(*CELL, "mask=reverse", f"data.dir={glue}") == 0
    assert [r["mask_stats"]["fisher_cache"]["hit"] for r in records(tmp_path / "runs")] == [False, False]
    assert len(_cache_files(tmp_path / "runs")) == 2


def test_inputs_digest_reads_the_model_and_the_examples() -> None:
    from fishtune.batching import Encoded
    from fishtune.fisher_cache import inputs_digest

    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2).to(torch.bfloat16)
    data = Encoded([[101, 7, 102], [101, 9, 102]], None, torch.tensor([0, 1]))
    before = inputs_digest(model, data)
    assert inputs_digest(model, data) == before
    assert inputs_digest(model, Encoded(data.input_ids, None, torch.tensor([1, 1]))) != before
    assert inputs_digest(model, Encoded([[101, 8, 102], [101, 9, 102]], None, data.labels)) != before
    with torch.no_grad():
        model.bias[0] += 1
    assert inputs_digest(model, data) != before


def test_inputs_digest_reads_the_models_own_config_but_not_its_path() -> None:
    """Dropout changes a warm-up (train mode) with the same weights; where the model was loaded
    from does not change the estimate."""
    from transformers import BertConfig, BertForSequenceClassification

    from fishtune.batching import Encoded
    from fishtune.fisher_cache import inputs_digest

    data = Encoded([[101, 7, 102]], None, torch.tensor([0]))
    config = BertConfig(vocab_size=120, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=16)
    torch.manual_seed(0)
    model = BertForSequenceClassification(config)
    before = inputs_digest(model, data)
    model.config._name_or_path = "/elsewhere/the-same-model"
    assert inputs_digest(model, data) == before
    model.config.hidden_dropout_prob = 0.0
    assert inputs_digest(model, data) != before


@pytest.mark.parametrize("shapes", [{"a": (3, 2), "b": (4,)}, {"a": (2, 3)}, {"a": (2, 3), "b": (4,), "c": (1,)}],
                         ids=["other-shape", "fewer-candidates", "more-candidates"])
def test_a_cached_fisher_that_does_not_fit_the_candidates_is_a_miss(tmp_path: Path, caplog, shapes) -> None:
    import logging

    from fishtune.fisher_cache import load_cached, save_cached

    path = tmp_path / "key.safetensors"
    save_cached(path, {"a": torch.rand(2, 3), "b": torch.rand(4)}, {"computed_by": "elsewhere"})
    assert load_cached(path, {"a": (2, 3), "b": (4,)}).meta == {"computed_by": "elsewhere"}   # it fits: a hit
    with caplog.at_level(logging.WARNING, logger="fishtune.fisher_cache"):
        assert load_cached(path, shapes) is None
    assert f"{path} does not fit this run's candidates; estimating again" in caplog.text


def test_a_cache_file_under_another_keys_name_is_a_miss(tmp_path: Path, caplog) -> None:
    import logging

    from fishtune.fisher_cache import load_cached, save_cached

    shapes = {"a": (2, 3)}
    path = tmp_path / "b1.safetensors"
    save_cached(path, {"a": torch.rand(2, 3)}, {"key": "a0", "computed_by": "elsewhere"})   # copied onto b1's name
    with caplog.at_level(logging.WARNING, logger="fishtune.fisher_cache"):
        assert load_cached(path, shapes, "b1") is None
    assert f"{path} holds the Fisher of key a0, not of its name; estimating again" in caplog.text
    assert load_cached(path, shapes, "a0").meta["key"] == "a0"
    save_cached(path, {"a": torch.rand(2, 3)}, {"computed_by": "before keys were stored"})
    assert load_cached(path, shapes, "b1") is not None                     # an older file: its name is all there is


def test_a_run_stores_the_key_it_estimated_for(run_cli, tmp_path: Path) -> None:
    import json

    from safetensors import safe_open

    from fishtune.fisher_cache import _META

    assert run_cli("mask=fish") == 0
    (path,) = (tmp_path / "runs" / CACHE_DIR).glob("*.safetensors")
    with safe_open(str(path), framework="pt") as f:
        assert json.loads(f.metadata()[_META])["key"] == path.stem
