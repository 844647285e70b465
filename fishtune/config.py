"""Checks on a composed run config (before any model is loaded) and the run folder it maps to."""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path

from omegaconf import DictConfig, OmegaConf, open_dict

from .errors import ConfigError, first_line
from .keys import Key, anything, check_section, choice, flag, integer, number, optional, text

_NEEDS_SECTIONS = "the config needs the sections model, task, method, mask, train and data"
SEED_MAX = 2**63 - 1   # what a record holds as an integer (`report.schema.COUNT_RANGE`)

# Keys that change how a run is executed or logged, not what it computes: they are left out
# of the run-folder digest, so resuming with e.g. train.resume=false reaches the same folder.
_DIGEST_EXCLUDE = {
    "output_dir",
    "runs_root",
    "train.resume",
    "train.checkpoint_every",
    "train.log_every",
    "train.progress",
    "train.device",        # replaced by the resolved device type (see `comparable_config`)
    "train.precision",     # replaced by the resolved precision
    "train.compile",       # numerics aside, a compiled run resumes an eager checkpoint and back
    "mask.fisher_cache",   # a cached Fisher is the estimate the run would make (fishtune.fisher_cache)
    "data.dir",
    "data.source",
    "model.revision",      # the record names the snapshot loaded (`model_revision`), checked on skip and resume
}
# The mask keys of a `mask=none` cell (configs/mask/none.yaml): the rest of a vanilla cell's mask
# cannot act on it, so `comparable_config` drops it.
_VANILLA_MASK_KEYS = ("name", "keep_match", "tag")

MASK_STRATEGIES = ("none", "fish", "random", "reverse")
MASK_CONFIGS = (*MASK_STRATEGIES, "fish_live")


WARMUP_ORDERS = ("shuffled", "length_grouped")   # mask.warmup_order (fishtune.selection._warmup_batches)

# The keys of each config section and what each may be (`fishtune.keys`); `method.*` is the method
# registry's. A key outside these is refused: a `+train.lrr=...` would otherwise train at the
# default lr in a folder of its own.
TOP_KEYS = ("model", "task", "method", "mask", "train", "data", "seed", "output_dir", "runs_root")
TRAIN_KEYS = {
    "epochs": integer(1), "batch_size": integer(1), "eval_batch_size": integer(1), "lr": number(0),
    "weight_decay": number(0, inclusive=True), "warmup_ratio": number(0, inclusive=True, high=1),
    "grad_clip": optional(number(0)), "max_seq_length": integer(8), "max_steps": optional(integer(1)),
    "max_train_samples": optional(integer(1)), "max_eval_samples": optional(integer(1)),
    "eval_subset_seed": integer(0), "group_by_length": flag(), "pad_to_multiple_of": integer(1),
    "device": choice("auto", "cpu", "cuda"), "precision": choice("auto", "fp32", "bf16"), "compile": flag(),
    "resume": flag(), "checkpoint_every": optional(integer(1)), "log_every": integer(1), "progress": flag(),
}
MASK_KEYS = {
    "name": choice(*MASK_CONFIGS), "strategy": choice(*MASK_STRATEGIES[1:]),
    "keep_ratio": number(0, high=1, high_inclusive=True),
    "keep": Key(lambda v: v is None or (isinstance(v, int) and not isinstance(v, bool) and v >= 1),
                "null or a whole number of entries >= 1 (mask.keep_ratio sets a fraction)"),
    "keep_match": anything("a method config"), "head_in_budget": flag(), "num_samples": integer(1),
    "labels": choice("empirical", "expected"), "scope": choice("global", "per_tensor"),
    "estimator": choice("auto", "func", "hooks", "loop"), "fisher_batch_size": integer(1),
    "fisher_at": choice("init", "warmup"), "warmup_steps": integer(0), "warmup_order": choice(*WARMUP_ORDERS),
    "fisher_cache": flag(), "live": flag(), "seed": integer(0), "tag": text(),
}
DATA_KEYS = {"source": choice("auto", "local", "hub"), "dir": optional(text())}
MODEL_KEYS = {"name": text(), "package": optional(text()), "hub_id": optional(text()), "path": optional(text()),
              "revision": optional(Key(lambda v: isinstance(v, str) and v != "", "a branch, tag or commit (quote an "
                                           "all-digit one: model.revision=\"'0123456'\")")), "tiny": anything("null or a tiny model's shape")}
TINY_KEYS = {"arch": choice("bert", "roberta"), "hidden_size": integer(1), "num_hidden_layers": integer(1),
             "num_attention_heads": integer(1), "intermediate_size": integer(1)}
TASK_KEYS = {"name": text()}


def validate(cfg: DictConfig) -> None:
    """Raise `ConfigError` (one line: what is wrong, how to fix it) for an unknown key, a value of the
    wrong type or out of range, or an interpolation that cannot be resolved."""
    from omegaconf.errors import OmegaConfBaseException

    from .methods import method_config, validate_method
    from .tasks import get_task

    mask = cfg.get("mask")
    if not isinstance(mask, DictConfig):
        raise ConfigError(_NEEDS_SECTIONS)
    keep_match = mask.get("keep_match") if mask.get("name") != "none" else None
    matched = None
    if keep_match is not None:   # first: the mask tag interpolates it, so resolving would fail on it
        try:
            matched = method_config(keep_match)
        except ConfigError as err:
            raise ConfigError(f"mask.keep_match: {err}") from None
    try:
        values = OmegaConf.to_container(cfg, resolve=True)
    except OmegaConfBaseException as err:
        key = getattr(err, "full_key", None)
        raise ConfigError(f"cannot resolve the config{f' at {key}' if key else ''}: {first_line(err)}") from None
    check_section(values, {k: anything("a section") for k in TOP_KEYS}, "config")
    _check(all(isinstance(values.get(k), dict) for k in ("model", "task", "method", "mask", "train", "data")),
           _NEEDS_SECTIONS)
    # Every key of train, task and data is read, and every shipped config sets them all: a deleted one
    # (`~train.epochs`) is refused here, not found missing in a run folder. A model config may lack some.
    for section, keys, required in (("model", MODEL_KEYS, False), ("task", TASK_KEYS, True),
                                    ("train", TRAIN_KEYS, True), ("data", DATA_KEYS, True)):
        check_section(values[section], keys, section, required=required)
    check_section({k: values.get(k) for k in ("seed", "output_dir", "runs_root")},
                  {"seed": integer(0, SEED_MAX), "output_dir": optional(text()), "runs_root": text()}, "config")
    _check_tiny(values["model"])
    get_task(values["task"]["name"])
    validate_method(cfg.method)  # the method registry's schema: unknown keys and bad values, one line

    k = values["mask"]
    _check(k.get("name") in MASK_CONFIGS, f"unknown mask {k.get('name')!r}; choose one of: {', '.join(MASK_CONFIGS)}")
    check_section(k, MASK_KEYS, "mask")  # a vanilla cell may carry its pair's mask keys: unused, but typed
    if k["name"] == "none":
        return
    if matched is not None:
        _check(k.get("keep") is None, "mask.keep and mask.keep_match both set the budget; set one of them")
        _check(not k.get("head_in_budget"), "mask.head_in_budget has no effect with mask.keep_match (the matched "
                                            "count is of the same model, head alike); drop it")
        validate_method(matched, where="mask.keep_match")
    pair_vanilla_method(cfg)  # a pair's sides: one LoRA scale, and the keys it sets per side not overridden
    _check(not (k.get("live") and k.get("scope") != "global"), "mask.live=true needs mask.scope=global")


def _check_tiny(model: dict) -> None:
    """A tiny test model is built in-process from `model.tiny`: every key of it is read, and no other
    source (package, Hub id, path) is, so setting one would only rename the run folder."""
    tiny = model.get("tiny")
    if tiny is None:
        return
    _check(isinstance(tiny, dict), f"model.tiny must be null or a tiny model's shape, got {tiny!r}")
    check_section(tiny, TINY_KEYS, "model.tiny", required=True, owner="a tiny model")
    _check(tiny["hidden_size"] % tiny["num_attention_heads"] == 0,
           "model.tiny.hidden_size must be a multiple of model.tiny.num_attention_heads")
    other = [k for k in ("package", "hub_id", "path", "revision") if model.get(k) is not None]
    _check(not other, f"model {model.get('name')!r} is a tiny test model built in-process, which does not read "
                      f"model.{', model.'.join(other)}; drop it, or choose a real model (model=minilm-l6, ...)")


def pair_vanilla_method(cfg: DictConfig) -> DictConfig | None:
    """The method node of this masked run's vanilla cell: `cfg.method` resolved at `mask=none`, when
    it differs from this run's (a pair, `configs/pair/`, sets method keys per side); else None.

    A LoRA pair whose sides differ in alpha/r (an explicit `method.alpha` while r differs) would
    compare two LoRA scales, and a command-line value for the key a pair sets per side (`+pair=lora
    method.r=32`) leaves one method on both sides, so the masks would match the packaged config
    (r=8) rather than the vanilla cell: a ConfigError says what to do instead of either."""
    if cfg.mask.name == "none":
        return None
    other = copy.deepcopy(cfg)
    with open_dict(other):
        other.mask.name = "none"
    vanilla, own = (OmegaConf.to_container(c.method, resolve=True) for c in (other, cfg))
    if vanilla == own:
        spec = cfg.mask.get("keep_match")
        matched = spec.get("config") if isinstance(spec, (dict, DictConfig)) else spec
        if is_pair_match(cfg.mask) and matched == own.get("name"):
            raise ConfigError(f"the pair's method keys are set on the command line, so its vanilla and masked cells "
                              f"would both be {own.get('name')} with the same config, and the masks would match "
                              f"the packaged {matched} config instead of the vanilla cell; set the two sides in a "
                              f"pair file (configs/pair/), or run without +pair: method=... mask.keep_match=...")
        return None
    if {"alpha", "r"} <= set(own) and vanilla.get("name") == own.get("name"):
        scales = (vanilla["alpha"] / vanilla["r"], own["alpha"] / own["r"])
        if scales[0] != scales[1]:
            raise ConfigError(f"the pair's cells would have different LoRA scales (alpha/r {scales[0]:g} vanilla, "
                              f"{scales[1]:g} masked): method.alpha is fixed while r differs; set "
                              f"method.scale={scales[0]:g} instead, which keeps alpha/r in every cell")
    return OmegaConf.create(vanilla)


def is_pair_match(mask_cfg: DictConfig) -> bool:
    """Whether `mask.keep_match` is a pair file's own (`${fishtune.paired:...}`, configs/pair/), not
    a value the command line or an experiment set."""
    raw = OmegaConf.to_container(mask_cfg, resolve=False).get("keep_match")
    return isinstance(raw, str) and "fishtune.paired" in raw


def warmup_order(mask_cfg: DictConfig) -> str:
    """`mask.warmup_order` (shuffled when a config predates the key)."""
    return str(mask_cfg.get("warmup_order", WARMUP_ORDERS[0]))


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def resolved_runtime(train_cfg: DictConfig) -> dict[str, str]:
    """The device type and precision a run will use: `train.device=auto` and `train.precision=auto`
    resolved on this machine (auto = CUDA with bf16 autocast when present, else CPU fp32)."""
    import torch

    if train_cfg.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device=cuda but no CUDA device is visible; use train.device=auto or cpu")
    use_cuda = train_cfg.device == "cuda" or (train_cfg.device == "auto" and torch.cuda.is_available())
    if train_cfg.precision == "auto":
        bf16 = use_cuda and torch.cuda.is_bf16_supported()
    else:
        bf16 = train_cfg.precision == "bf16"
    return {"device": "cuda" if use_cuda else "cpu", "precision": "bf16" if bf16 else "fp32"}


def comparable_config(cfg: DictConfig, *, runtime: dict[str, str] | None = None, seed: bool = False) -> dict:
    """The resolved config as a plain dict, minus execution-only keys, with `train.device` and
    `train.precision` replaced by what they resolve to (`runtime`, default: this machine).

    Without `seed`, the seed is replaced by a placeholder *before* resolving, so keys that follow it
    (`mask.seed: ${seed}`) drop out with it while an explicit `mask.seed=7` stays: two runs that
    differ only by their seed have the same comparable config (the reporter's unit of pooling).
    """
    runtime = runtime or resolved_runtime(cfg.train)
    cfg = copy.deepcopy(cfg)
    if not seed:
        with open_dict(cfg):
            cfg.seed = "<seed>"
    data = OmegaConf.to_container(cfg, resolve=True)
    return _comparable(data, runtime, effective_max_train_samples(cfg), seed=seed)


def saved_comparable_config(saved: dict, runtime: dict[str, str]) -> dict:
    """`comparable_config` rebuilt from a run's saved, already resolved `config.yaml` (for records
    made before they carried it): the seed is gone from it, and a `mask.seed` equal to the seed is
    taken to have followed it (the default `${seed}`), as `comparable_config` does."""
    from omegaconf.errors import OmegaConfBaseException

    data = copy.deepcopy(saved)
    run_seed = data.pop("seed", None)
    if run_seed is not None and isinstance(data.get("mask"), dict) and data["mask"].get("seed") == run_seed:
        data["mask"]["seed"] = "<seed>"
    try:
        cap = effective_max_train_samples(OmegaConf.create(data))
    except (ConfigError, OmegaConfBaseException):  # a task this version does not know, or no train node
        cap = (data.get("train") or {}).get("max_train_samples")
    return _comparable(data, runtime, cap, seed=False)


def _comparable(data: dict, runtime: dict[str, str], cap: int | None, *, seed: bool) -> dict:
    """The steps `comparable_config` and `saved_comparable_config` share, on a resolved config dict."""
    for dotted in _DIGEST_EXCLUDE:
        *parents, leaf = dotted.split(".")
        node = data
        for p in parents:
            node = node.get(p, {}) if isinstance(node, dict) else {}
        if isinstance(node, dict):
            node.pop(leaf, None)
    data.pop("hydra", None)
    if isinstance(data.get("mask"), dict) and data["mask"].get("name") == "none":
        # A vanilla cell has no mask: keys a pair sets for its masked cells (mask.fisher_at, ...)
        # cannot act on it, so they must not make it another run than plain `mask=none`.
        data["mask"] = {k: v for k, v in data["mask"].items() if k in _VANILLA_MASK_KEYS}
    data.setdefault("train", {}).update(runtime)
    data["train"]["max_train_samples"] = cap
    if not seed:
        data.pop("seed", None)
    return data


def effective_max_train_samples(cfg: DictConfig) -> int | None:
    """`train.max_train_samples`, or None where the cap keeps the whole train split (at or above the
    task's published train size): `max_train_samples=10000` on MRPC (3,668 examples) trains on
    exactly what `null` does, so the two are one run (one folder, one comparison digest) and a cell
    that two experiments share is trained once. The runner checks the loaded split really is that
    size (`check_train_size`)."""
    from .tasks import get_task

    cap = cfg.train.get("max_train_samples")
    if cap is None or cap < get_task(cfg.task.name).train_size:
        return cap
    return None


def check_train_size(cfg: DictConfig, loaded: int) -> None:
    """Refuse a train split bigger than the published one when the cap was read as "the whole split":
    the cap would subsample it while the run folder and record said it did not."""
    from .tasks import get_task

    cap, published = cfg.train.get("max_train_samples"), get_task(cfg.task.name).train_size
    if cap is not None and cap >= published and loaded > cap:
        raise ConfigError(
            f"train.max_train_samples={cap} is at least {cfg.task.name}'s published train size ({published:,}), "
            f"so fishtune treats it as the whole split, but the train split found has {loaded:,} examples; "
            f"set train.max_train_samples below {published:,} or null")


def digest(data: dict, length: int = 8) -> str:
    """Hex SHA-256 of a JSON-able dict (sorted keys), cut to `length` digits."""
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:length]


def config_digest(cfg: DictConfig, *, runtime: dict[str, str] | None = None) -> str:
    """8 hex digits naming the run folder: the comparable config *with* the seed."""
    return digest(comparable_config(cfg, runtime=runtime, seed=True))


def comparison_digest(cfg: DictConfig, *, runtime: dict[str, str] | None = None) -> str:
    """12 hex digits shared by the seeds of one configuration (recorded; the reporter pools by it)."""
    return digest(comparable_config(cfg, runtime=runtime), 12)


def run_dir(cfg: DictConfig, *, runtime: dict[str, str] | None = None) -> Path:
    """The run folder: `output_dir` if set, else a readable path unique per configuration, device
    type and precision (a GPU rerun of a cell done on CPU gets its own folder)."""
    if cfg.get("output_dir"):
        return Path(cfg.output_dir)
    return (
        Path(cfg.runs_root)
        / cfg.task.name
        / cfg.model.name
        / str(cfg.method.tag)
        / str(cfg.mask.tag)
        / f"seed{cfg.seed}-{config_digest(cfg, runtime=runtime)}"
    )


def check_run_folder_place(cfg: DictConfig, folder: Path) -> None:
    """Raise `ConfigError` when `folder`, or a folder above it, is a file (`runs_root=notes.txt`):
    no run can be written there."""
    blocker = _not_a_folder(Path(folder))
    if blocker is None:
        return
    key = "output_dir" if cfg.get("output_dir") else "runs_root"
    where = "is" if blocker == Path(folder) else f"would be below {blocker}, which is"
    raise ConfigError(f"the run folder {folder} {where} a file, not a folder; set {key} to a folder path")


def _not_a_folder(folder: Path) -> Path | None:
    """The nearest of `folder` and the folders above it that exists and is not a folder, if any
    (None also where that cannot be told, e.g. no permission to look)."""
    for path in (folder, *folder.parents):
        try:
            if path.is_dir():
                return None
            if path.exists() or path.is_symlink():
                return path
        except OSError:
            return None
    return None


def load_run_config(path: Path) -> DictConfig:
    """A run folder's resolved `config.yaml` as `fishtune export` rebuilds the run from it: a mapping
    with model, task and method sections and an integer seed. Anything else is a `ConfigError` whose
    message is the reason alone ("missing", "cannot be read (...)", ...), for the caller to place."""
    import yaml
    from omegaconf.errors import OmegaConfBaseException

    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError("missing") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"cannot be read ({first_line(err)})") from None
    try:
        loaded = yaml.safe_load(text)
        loaded = {} if loaded is None else loaded   # an empty file: no sections, as below
        if not isinstance(loaded, dict):
            raise ConfigError("not a YAML mapping")
        cfg = OmegaConf.create(loaded)
    except (ValueError, TypeError, RecursionError, yaml.YAMLError, OmegaConfBaseException) as err:
        raise ConfigError(f"cannot be read ({first_line(err)})") from None
    if not all(isinstance(cfg.get(k), DictConfig) for k in ("model", "task", "method")):
        raise ConfigError("it has no model, task and method sections")
    try:
        seed = cfg.seed   # read now: a missing or bad seed is this error, not a traceback later
    except OmegaConfBaseException as err:
        raise ConfigError(f"it has no integer seed ({first_line(err)})") from None
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise ConfigError(f"it has no integer seed (seed: {seed!r})")
    return cfg


def flatten(data: dict, prefix: str = "") -> dict:
    """{"train": {"lr": 1e-3}} -> {"train.lr": 1e-3} (lists stay values)."""
    flat: dict = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat
