"""`fishtune bench` end to end on the tiny model: it runs, and its JSON says what it measured.

Never asserts on speed: timings on a shared machine are not a test.
"""

from __future__ import annotations

import json
import math

from fishtune.bench import COMPARISONS, main

TIMED = ("step", "fisher", "epoch", "inference")


def test_bench_tiny_writes_all_comparisons(tmp_path, capsys):
    code = main(["--model", "tiny-bert", "--repeats", "2", "--fisher-samples", "8", "--out", str(tmp_path)])
    assert code == 0
    files = list(tmp_path.glob("tiny-bert-cpu-*.json"))
    assert len(files) == 1
    result = json.loads(files[0].read_text())

    assert set(result["comparisons"]) == set(COMPARISONS)
    for name in TIMED:
        c = result["comparisons"][name]
        for side in ("a", "b"):
            assert c[side]["median_s"] > 0
            assert len(c[side]["times_s"]) >= 2 and all(t > 0 for t in c[side]["times_s"])
        assert math.isfinite(c["ratio"]) and c["ratio"] > 0, name
    unmerged = result["comparisons"]["inference"]["unmerged"]
    assert unmerged["b"]["median_s"] > 0 and math.isfinite(unmerged["ratio"])

    fisher = result["comparisons"]["fisher"]
    assert fisher["masks_identical"] is True
    assert fisher["num_samples"] == 8 and fisher["max_rel_diff"] < 1e-4

    memory = result["comparisons"]["memory"]
    assert memory["mask_storage_bytes"] > 0 and math.isfinite(memory["ratio"]) and 0 < memory["ratio"] < 1

    for key in ("torch", "transformers", "peft"):
        assert result["versions"][key]
    assert result["device"]["type"] == "cpu" and result["device"]["name"]
    assert result["sizes"]["batch_size"] == 32 and result["sizes"]["fisher_samples"] == 8
    assert result["sizes"]["model_params"] > 0 and result["sizes"]["step_batch_shape"][0] == 32

    out = capsys.readouterr().out
    for name in COMPARISONS:
        assert name in out
    assert str(files[0]) in out


def test_bench_only_selects_comparisons(tmp_path):
    assert main(["--model", "tiny-bert", "--repeats", "2", "--only", "inference", "--out", str(tmp_path)]) == 0
    (path,) = tmp_path.glob("*.json")
    assert set(json.loads(path.read_text())["comparisons"]) == {"inference"}
