"""Adapters saved in their library's format load back exactly; `fishtune export [--merge]`."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from safetensors.torch import load_file

from conftest import GLUE, REPO, TINY, records
from fishtune.batching import encode
from fishtune.data import load_split
from fishtune.methods import apply_method, method_config, save_adapter
from fishtune.models import load_model
from fishtune.tasks import get_task
from fishtune.train import predict

ADAPTERHUB = ("adapter_pfeiffer", "adapter_houlsby", "adapter_parallel", "prefix", "unipelt")


def _dev_logits(model, tokenizer) -> torch.Tensor:
    task = get_task("mrpc")
    dev = encode(load_split(task, task.eval_splits[0], data_dir=GLUE, source="local", max_samples=16, seed=0),
                 tokenizer=tokenizer, max_length=64, token_type_ids=True, regression=False)
    return torch.from_numpy(predict(model, dev, batch_size=8, pad_id=tokenizer.pad_token_id, multiple=8,
                                    device=torch.device("cpu"), autocast=False))


@pytest.fixture(scope="module")
def base():
    return load_model(OmegaConf.load(REPO / "configs" / "model" / "tiny-bert.yaml"), get_task("mrpc"), seed=1)


@pytest.mark.parametrize("method", ADAPTERHUB)
def test_adapterhub_adapter_and_head_round_trip(base, method: str, tmp_path: Path) -> None:
    from fishtune.methods._adapterhub import load

    setup = apply_method(copy.deepcopy(base.model), method_config(method))
    torch.manual_seed(0)
    with torch.no_grad():   # as after training: adapter and head far from their init
        for p in setup.model.parameters():
            if p.requires_grad:
                p.add_(0.3 * torch.randn_like(p))
    expected = _dev_logits(setup.model, base.tokenizer)
    assert save_adapter(setup.model, tmp_path / "adapter")
    fresh = load(copy.deepcopy(base.model), tmp_path / "adapter")
    torch.testing.assert_close(_dev_logits(fresh, base.tokenizer), expected, atol=1e-5, rtol=0)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """One tiny run folder per method used below (a multirun of four cells)."""
    from fishtune.cli import main

    root = tmp_path_factory.mktemp("export")
    assert main(["run", "-m", *TINY, f"runs_root={root}", "method=lora,dora,adapter_pfeiffer,full",
                 "train.max_train_samples=16", "train.max_eval_samples=8", "train.lr=1e-2"]) == 0
    return {r["method"]: Path(r["output_dir"]) for r in records(root)}


@pytest.mark.parametrize("method", ["lora", "dora"])
def test_merge_gives_a_plain_model_with_the_same_logits(runs, method: str, tmp_path: Path) -> None:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from fishtune.cli import main
    from fishtune.export import load_trained

    assert main(["export", str(runs[method]), "--merge", "--out", str(tmp_path / "merged")]) == 0
    merged = AutoModelForSequenceClassification.from_pretrained(tmp_path / "merged")
    assert not any("lora" in n for n, _ in merged.named_parameters())
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "merged")
    unmerged, _ = load_trained(runs[method])
    torch.testing.assert_close(_dev_logits(merged, tokenizer), _dev_logits(unmerged, tokenizer), atol=1e-5, rtol=0)


def test_adapterhub_run_exports_its_final_adapter(runs, tmp_path: Path) -> None:
    from fishtune.cli import main
    from fishtune.export import load_trained

    folder = runs["adapter_pfeiffer"]
    assert main(["export", str(folder), "--out", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "adapter_config.json").is_file()
    model, _ = load_trained(folder)   # the run's base model + its saved adapter and head
    params = dict(model.named_parameters())
    for name, value in load_file(str(folder / "peft_final.safetensors")).items():
        assert torch.equal(params[name], value), name


@pytest.mark.parametrize("method,words", [("adapter_pfeiffer", "cannot be merged"), ("full", "full fine-tuning")])
def test_unmergeable_methods_say_so_in_one_line(runs, capsys, method: str, words: str) -> None:
    from fishtune.cli import main

    assert main(["export", str(runs[method]), "--merge"]) == 1
    err = capsys.readouterr().err.strip()
    assert words in err and len(err.splitlines()) == 1 and not (runs[method] / "merged").exists()


def test_an_out_that_is_a_file_or_a_broken_config_is_one_line(runs, capsys, tmp_path: Path) -> None:
    import shutil

    from fishtune.cli import main

    a_file = tmp_path / "afile"
    a_file.write_text("keep me")
    assert main(["export", str(runs["lora"]), "--out", str(a_file)]) == 1
    assert "is a file" in capsys.readouterr().err and a_file.read_text() == "keep me"
    broken = tmp_path / "broken"
    shutil.copytree(runs["lora"], broken)
    for text, words in (("method: [unclosed\n", "cannot be read as a run config"),
                        ("", "no model, task and method sections")):
        (broken / "config.yaml").write_text(text)
        assert main(["export", str(broken)]) == 1
        err = capsys.readouterr().err.strip()
        assert words in err and len(err.splitlines()) == 1 and "Traceback" not in err


BROKEN = [("lora", "adapter_model.safetensors", "truncate"), ("lora", "adapter_config.json", "delete"),
          ("lora", "adapter_config.json", "not json"), ("adapter_pfeiffer", "pytorch_adapter.bin", "truncate"),
          ("adapter_pfeiffer", "head_config.json", "not json")]


@pytest.mark.parametrize("method,name,how", BROKEN)
def test_a_broken_adapter_is_one_line_naming_the_file(runs, capsys, tmp_path: Path, method: str, name: str,
                                                      how: str) -> None:
    import shutil

    from fishtune.cli import main

    run = tmp_path / "run"
    shutil.copytree(runs[method], run)
    broken = run / "adapter" / name
    if how == "truncate":
        with open(broken, "r+b") as f:
            f.truncate(500)
    elif how == "delete":
        broken.unlink()
    else:
        broken.write_text("{not json")
    for merge in ([], ["--merge"]) if method == "lora" else ([],):   # pfeiffer: cannot be merged anyway
        assert main(["export", str(run), *merge]) == 1
        err = capsys.readouterr().err.strip()
        assert str(broken) in err and len(err.splitlines()) == 1 and "Traceback" not in err
    assert not (run / "export").exists() and not (run / "merged").exists()


def test_an_adapter_that_does_not_fit_its_model_is_one_line(runs, capsys, tmp_path: Path) -> None:
    # a readable file of other tensors: the library's own load error, as one line
    import shutil

    from safetensors.torch import save_file

    from fishtune.cli import main

    run = tmp_path / "run"
    shutil.copytree(runs["lora"], run)
    save_file({"x": torch.zeros(3)}, str(run / "adapter" / "adapter_model.safetensors"))
    assert main(["export", str(run), "--merge"]) == 1
    err = capsys.readouterr().err.strip()
    assert "cannot load the adapter in" in err and len(err.splitlines()) == 1 and "Traceback" not in err
    assert not (run / "merged").exists()


def test_an_out_below_a_file_or_a_failed_copy_is_one_line(runs, capsys, tmp_path: Path, monkeypatch) -> None:
    import errno
    import os
    import shutil

    from fishtune.cli import main

    (tmp_path / "afile").write_text("keep me")
    for merge in ([], ["--merge"]):
        assert main(["export", str(runs["lora"]), *merge, "--out", str(tmp_path / "afile" / "sub")]) == 1
        err = capsys.readouterr().err.strip()
        assert "afile is a file" in err and len(err.splitlines()) == 1 and "Traceback" not in err

    def disk_full(src, dst, **kwargs):
        Path(dst).mkdir()
        (Path(dst) / "half").write_text("x")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(shutil, "copytree", disk_full)
    assert main(["export", str(runs["lora"]), "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err.strip()
    assert "cannot write" in err and "No space left" in err and len(err.splitlines()) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["afile"] and (tmp_path / "afile").read_text() == "keep me"


def test_adapter_export_and_merged_files_get_the_umask_mode(runs, tmp_path: Path) -> None:
    # safetensors writes owner-only 0600 files; a run folder shared by a group must stay readable by it
    from fishtune.cli import main

    plain = tmp_path / "plain"
    plain.write_text("x")
    mode = plain.stat().st_mode & 0o777
    assert main(["export", str(runs["lora"]), "--out", str(tmp_path / "copy")]) == 0
    assert main(["export", str(runs["lora"]), "--merge", "--out", str(tmp_path / "merged")]) == 0
    files = [*(runs["lora"] / "adapter").iterdir(), *(tmp_path / "copy").iterdir(), *(tmp_path / "merged").iterdir()]
    assert {"adapter_model.safetensors", "model.safetensors"} <= {f.name for f in files}
    assert {str(f): oct(f.stat().st_mode & 0o777) for f in files} == {str(f): oct(mode) for f in files}


@pytest.mark.parametrize("text,reason", [("model: [unclosed\n", "cannot be read ("), ("- 1\n", "not a YAML mapping"),
                                         ("seed: 1\n", "no model, task and method sections"),
                                         ("model: {}\ntask: {}\nmethod: {}\nseed: one\n", "no integer seed"),
                                         ("model: {}\ntask: {}\nmethod: {}\n", "no integer seed"),
                                         ("1\n", "not a YAML mapping"), ("true\n", "not a YAML mapping"),
                                         ("model: {}\ntask: {}\nmethod: {}\nseed: 1.5\n", "no integer seed"),
                                         ("model: {}\ntask: {}\nmethod: {}\nseed: true\n", "no integer seed"),
                                         ("model: {}\ntask: {}\nmethod: {}\nseed: '7'\n", "no integer seed"),
                                         ("a: " + "[" * 5000 + "]" * 5000 + "\n", "cannot be read (")])
def test_a_run_config_that_cannot_rebuild_the_run_says_why(tmp_path: Path, text: str, reason: str) -> None:
    from fishtune.config import load_run_config
    from fishtune.errors import ConfigError

    path = tmp_path / "config.yaml"
    with pytest.raises(ConfigError, match="missing"):
        load_run_config(path)
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_run_config(path)
    assert reason in str(caught.value) and "\n" not in str(caught.value)
    path.write_text("model: {}\ntask: {}\nmethod: {}\nseed: 3\n")
    assert int(load_run_config(path).seed) == 3
