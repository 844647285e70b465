"""One Fisher estimate per configuration: FISH and reverse masks, and masks at several budgets, read
the same warmed-up Fisher, so `fishtune run` estimates it once and keeps it in
`<runs_root>/.fisher-cache/<key>.safetensors` (`cache_path`).

The key is a digest of everything that can change the estimate: the run's comparable config with
the seed (`fishtune.config`), minus only the mask keys that choose entries *from* the Fisher
(strategy, budget, scope, live), plus the data location, the SHA-256 of the fishtune source files
this process imported (but the reporter, planner and benchmark: `provenance.NOT_TRAINING`), the
library versions (the shipped model's package included), and what the estimate reads
(`inputs_digest`): the model's config, its parameter values and the training examples as token ids
and labels, so an edited data file, another tokenizer, another revision of a Hub model or an edited
`config.json` (dropout, say) misses too. Anything else that differs (a training key that
cannot matter, a commit that did not touch the Fisher) gives another key: a miss costs one
estimate, a wrong hit would cost a wrong mask. A file that cannot be read or does not fit the
candidates is a miss too (named in the log, then overwritten). `mask.fisher_cache=false` turns it
off; the run record says which way its Fisher came (`mask_stats.fisher_cache`).
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from torch import Tensor, nn

from .atomic import atomic_write
from .batching import Encoded
from .config import comparable_config, digest

log = logging.getLogger(__name__)

CACHE_DIR = ".fisher-cache"
# The mask keys that only choose entries from a Fisher (and the labels derived from them).
SELECTION_KEYS = ("name", "tag", "strategy", "keep_ratio", "keep", "keep_match", "head_in_budget", "scope", "live")
_META = "fishtune.FisherCache"


@dataclass(frozen=True)
class CachedFisher:
    scores: dict[str, Tensor]
    meta: dict[str, Any]      # fisher_time_s, warmup_time_s, computed_by (the run folder that estimated it)


def cache_key(cfg: DictConfig, runtime: dict[str, str], inputs: str | None = None) -> str:
    """16 hex digits naming the Fisher estimate `cfg` asks for, of a model and data whose
    `inputs_digest` is `inputs` (module docstring)."""
    from .provenance import TRAINING_SOURCE_SHA256
    from .record import library_versions

    config = comparable_config(cfg, runtime=runtime, seed=True)
    for key in SELECTION_KEYS:
        config.get("mask", {}).pop(key, None)
    data = {"dir": str(cfg.data.get("dir")), "source": str(cfg.data.get("source"))}
    return digest({"config": config, "data": data, "code": TRAINING_SOURCE_SHA256,
                   "versions": library_versions(), "inputs": inputs}, 16)


def inputs_digest(model: nn.Module, train: Encoded) -> str:
    """SHA-256 of the model's own config (dropout, layer-norm epsilon, activation, pad id: the
    warm-up runs in train mode; paths and version stamps left out), its parameters (names and
    bytes) and the training examples (token ids, token types, labels): what the warm-up and the
    Fisher read besides the run config. ~0.2 s for MiniLM-L6 and SST-2's 10,000 examples on a CPU."""
    h = hashlib.sha256()
    config = getattr(model, "config", None)
    if hasattr(config, "to_dict"):
        own = {k: v for k, v in config.to_dict().items() if not k.startswith("_") and k != "transformers_version"}
        h.update(json.dumps(own, sort_keys=True, default=str).encode())
    for name, p in model.named_parameters():
        h.update(name.encode())
        h.update(p.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    h.update(json.dumps([train.input_ids, train.token_type_ids], separators=(",", ":")).encode())
    h.update(train.labels.numpy().tobytes())
    return h.hexdigest()


def cache_path(cfg: DictConfig, key: str) -> Path:
    """`<runs_root>/.fisher-cache/<key>.safetensors`; beside the run folder when `output_dir` names it."""
    root = Path(cfg.output_dir).parent if cfg.get("output_dir") else Path(cfg.runs_root)
    return root / CACHE_DIR / f"{key}.safetensors"


def load_cached(path: Path, shapes: dict[str, tuple[int, ...]], key: str | None = None) -> CachedFisher | None:
    """The cached Fisher at `path` if it exists, reads, was saved under `key` (its metadata names the
    key it was estimated for: a file copied or renamed onto another key's name is a miss; files from
    before the key was stored pass) and fits `shapes` (candidate name -> shape); else None."""
    if not path.is_file():
        return None
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = json.loads((f.metadata() or {})[_META])
            scores = {name: f.get_tensor(name).clone() for name in f.keys()}  # not a view of the file
    except Exception as err:  # noqa: BLE001 - any unreadable file is a miss, never a crash
        log.warning("fisher cache: cannot read %s (%s: %s); estimating again", path, type(err).__name__, err)
        return None
    if key is not None and meta.get("key") not in (None, key):
        log.warning("fisher cache: %s holds the Fisher of key %s, not of its name; estimating again",
                    path, meta.get("key"))
        return None
    if {n: tuple(t.shape) for n, t in scores.items()} != {n: tuple(s) for n, s in shapes.items()}:
        log.warning("fisher cache: %s does not fit this run's candidates; estimating again", path)
        return None
    return CachedFisher(scores, meta)


def save_cached(path: Path, scores: dict[str, Tensor], meta: dict[str, Any]) -> None:
    """Write the Fisher atomically (two cells that estimate it at once write the same bytes)."""
    from safetensors.torch import save_file

    tensors = {n: t.detach().cpu().float().contiguous() for n, t in scores.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata={_META: json.dumps(meta, sort_keys=True)}))


def build_with_cache(cfg: DictConfig, runtime: dict[str, str], build, shapes: dict[str, tuple[int, ...]],
                     folder: Path, model: nn.Module, train: Encoded):
    """`build(fisher)` -> `MaskResult`, fed the cached Fisher when this run's key has one; otherwise
    built from a fresh estimate, whose scores are then cached. Returns the result and the record's
    `fisher_cache` entry: key, hit, and the estimate's own warm-up and Fisher seconds (on a hit,
    those of the run that made it, `computed_by`). `model` and `train` are what the estimate reads:
    their `inputs_digest` joins the key."""
    from .errors import FishtuneError

    if cfg.mask.strategy == "random" or not cfg.mask.get("fisher_cache", True):
        return build(None), None
    key = cache_key(cfg, runtime, inputs_digest(model, train))   # only where a cache is read
    path = cache_path(cfg, key)
    cached = load_cached(path, shapes, key)
    if cached is not None:
        log.info("fisher cache: the Fisher of %s (estimated by %s)", path.name, cached.meta.get("computed_by"))
        return build(cached.scores), {"key": key, "hit": True, **cached.meta}
    result = build(None)
    meta = {"fisher_time_s": round(result.fisher_time_s, 3), "warmup_time_s": round(result.warmup_time_s, 3),
            "computed_by": str(folder)}
    try:
        save_cached(path, result.fish.scores, {"key": key, **meta})
    except FishtuneError as err:  # the run does not need the cache: say so and go on
        log.warning("fisher cache: not written (%s)", err)
    return result, {"key": key, "hit": False, **meta}
