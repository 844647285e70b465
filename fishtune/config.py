"""Checks on a composed run config (before any model is loaded) and the run folder it maps to."""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path

from omegaconf import DictConfig, OmegaConf, open_dict

from .errors import ConfigError

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
}
# The mask keys of a `mask=none` cell (configs/mask/none.yaml): the rest of a vanilla cell's mask
# cannot act on it, so `comparable_config` drops it.
_VANILLA_MASK_KEYS = ("name", "keep_match", "tag")

MASK_STRATEGIES = ("none", "fish", "random", "reverse")
MASK_CONFIGS = (*MASK_STRATEGIES, "fish_live")


def validate(cfg: DictConfig) -> None:
    """Raise `ConfigError` (one line: what is wrong, how to fix it) for out-of-range values."""
    from .methods import method_config, validate_method
    from .tasks import get_task

    get_task(cfg.task.name)
    t = cfg.train
    _check(t.epochs >= 1, f"train.epochs must be >= 1, got {t.epochs}")
    _check(t.batch_size >= 1, f"train.batch_size must be >= 1, got {t.batch_size}")
    _check(t.eval_batch_size >= 1, f"train.eval_batch_size must be >= 1, got {t.eval_batch_size}")
    _check(float(t.lr) > 0, f"train.lr must be > 0, got {t.lr}")
    _check(float(t.weight_decay) >= 0, f"train.weight_decay must be >= 0, got {t.weight_decay}")
    _check(0 <= float(t.warmup_ratio) < 1, f"train.warmup_ratio must be in [0, 1), got {t.warmup_ratio}")
    _check(t.max_seq_length >= 8, f"train.max_seq_length must be >= 8, got {t.max_seq_length}")
    for key in ("max_steps", "max_train_samples", "max_eval_samples", "checkpoint_every"):
        value = t.get(key)
        _check(value is None or value >= 1, f"train.{key} must be null or >= 1, got {value}")
    _check(isinstance(t.get("eval_subset_seed"), int), f"train.eval_subset_seed must be an integer, got {t.get('eval_subset_seed')!r}")
    _check(t.device in ("auto", "cpu", "cuda"), f"train.device must be auto, cpu or cuda, got {t.device!r}")
    _check(t.precision in ("auto", "fp32", "bf16"), f"train.precision must be auto, fp32 or bf16, got {t.precision!r}")
    _check(cfg.data.source in ("auto", "local", "hub"), f"data.source must be auto, local or hub, got {cfg.data.source!r}")

    validate_method(cfg.method)  # the method registry's schema: unknown keys and bad values, one line

    k = cfg.mask
    _check(k.name in MASK_CONFIGS, f"unknown mask {k.name!r}; choose one of: {', '.join(MASK_CONFIGS)}")
    if k.name == "none":
        return
    _check(k.strategy in MASK_STRATEGIES[1:], f"mask.strategy must be fish, random or reverse, got {k.strategy!r}")
    _check(0 < float(k.keep_ratio) <= 1, f"mask.keep_ratio must be in (0, 1], got {k.keep_ratio}")
    _check(k.keep is None or (isinstance(k.keep, int) and not isinstance(k.keep, bool) and k.keep >= 1),
           f"mask.keep must be null or a whole number of entries >= 1, got {k.keep!r} "
           "(mask.keep_ratio sets a fraction)")
    if k.get("keep_match") is not None:
        _check(k.keep is None, "mask.keep and mask.keep_match both set the budget; set one of them")
        try:
            matched = method_config(k.keep_match)
        except ConfigError as err:
            raise ConfigError(f"mask.keep_match: {err}") from None
        validate_method(matched, where="mask.keep_match")
    _check(k.num_samples >= 1, f"mask.num_samples must be >= 1, got {k.num_samples}")
    _check(k.fisher_batch_size >= 1, f"mask.fisher_batch_size must be >= 1, got {k.fisher_batch_size}")
    _check(k.labels in ("empirical", "expected"), f"mask.labels must be empirical or expected, got {k.labels!r}")
    _check(k.scope in ("global", "per_tensor"), f"mask.scope must be global or per_tensor, got {k.scope!r}")
    _check(k.estimator in ("auto", "func", "hooks", "loop"), f"mask.estimator must be auto, func, hooks or loop, got {k.estimator!r}")
    _check(k.fisher_at in ("init", "warmup"), f"mask.fisher_at must be init or warmup, got {k.fisher_at!r}")
    _check(isinstance(k.get("live", False), bool), f"mask.live must be true or false, got {k.get('live')!r}")
    _check(isinstance(k.get("fisher_cache", True), bool),
           f"mask.fisher_cache must be true or false, got {k.get('fisher_cache')!r}")
    _check(not (k.get("live") and k.scope != "global"), "mask.live=true needs mask.scope=global")
    _check(k.warmup_steps >= 0, f"mask.warmup_steps must be >= 0, got {k.warmup_steps}")
    _check(warmup_order(k) in WARMUP_ORDERS,
           f"mask.warmup_order must be {' or '.join(WARMUP_ORDERS)}, got {k.get('warmup_order')!r}")


WARMUP_ORDERS = ("shuffled", "length_grouped")   # mask.warmup_order (fishtune.selection._warmup_batches)


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
