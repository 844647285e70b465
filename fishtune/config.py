"""Checks on a composed run config (before any model is loaded) and the run folder it maps to."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

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
    "train.device",
    "train.compile",
    "data.dir",
    "data.source",
}

METHODS = ("lora", "dora", "full")
MASK_STRATEGIES = ("none", "fish", "random", "reverse")


def validate(cfg: DictConfig) -> None:
    """Raise `ConfigError` (one line: what is wrong, how to fix it) for out-of-range values."""
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
    _check(t.device in ("auto", "cpu", "cuda"), f"train.device must be auto, cpu or cuda, got {t.device!r}")
    _check(t.precision in ("auto", "fp32", "bf16"), f"train.precision must be auto, fp32 or bf16, got {t.precision!r}")
    _check(cfg.data.source in ("auto", "local", "hub"), f"data.source must be auto, local or hub, got {cfg.data.source!r}")

    m = cfg.method
    _check(m.name in METHODS, f"unknown method {m.name!r}; choose one of: {', '.join(METHODS)}")
    if m.name in ("lora", "dora"):
        _check(m.r >= 1, f"method.r must be >= 1, got {m.r}")
        _check(m.alpha > 0, f"method.alpha must be > 0, got {m.alpha}")
        _check(0 <= m.dropout < 1, f"method.dropout must be in [0, 1), got {m.dropout}")
        _check(len(m.target_modules) > 0, "method.target_modules must name at least one module")

    k = cfg.mask
    _check(k.name in MASK_STRATEGIES, f"unknown mask {k.name!r}; choose one of: {', '.join(MASK_STRATEGIES)}")
    if k.name == "none":
        return
    _check(k.strategy in MASK_STRATEGIES[1:], f"mask.strategy must be fish, random or reverse, got {k.strategy!r}")
    _check(0 < float(k.keep_ratio) <= 1, f"mask.keep_ratio must be in (0, 1], got {k.keep_ratio}")
    _check(k.keep is None or k.keep >= 1, f"mask.keep must be null or >= 1, got {k.keep}")
    _check(k.num_samples >= 1, f"mask.num_samples must be >= 1, got {k.num_samples}")
    _check(k.fisher_batch_size >= 1, f"mask.fisher_batch_size must be >= 1, got {k.fisher_batch_size}")
    _check(k.labels in ("empirical", "expected"), f"mask.labels must be empirical or expected, got {k.labels!r}")
    _check(k.scope in ("global", "per_tensor"), f"mask.scope must be global or per_tensor, got {k.scope!r}")
    _check(k.estimator in ("auto", "hooks", "loop"), f"mask.estimator must be auto, hooks or loop, got {k.estimator!r}")
    _check(k.fisher_at in ("init", "warmup"), f"mask.fisher_at must be init or warmup, got {k.fisher_at!r}")
    _check(k.warmup_steps >= 0, f"mask.warmup_steps must be >= 0, got {k.warmup_steps}")


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def config_digest(cfg: DictConfig) -> str:
    """8 hex digits of SHA-256 over the resolved config minus execution-only keys."""
    data = OmegaConf.to_container(cfg, resolve=True)
    for dotted in _DIGEST_EXCLUDE:
        *parents, leaf = dotted.split(".")
        node = data
        for p in parents:
            node = node.get(p, {}) if isinstance(node, dict) else {}
        if isinstance(node, dict):
            node.pop(leaf, None)
    blob = json.dumps(data, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:8]


def run_dir(cfg: DictConfig) -> Path:
    """The run folder: `output_dir` if set, else a readable path unique per configuration."""
    if cfg.get("output_dir"):
        return Path(cfg.output_dir)
    return (
        Path(cfg.runs_root)
        / cfg.task.name
        / cfg.model.name
        / str(cfg.method.tag)
        / str(cfg.mask.tag)
        / f"seed{cfg.seed}-{config_digest(cfg)}"
    )
