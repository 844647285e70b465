"""The method registry: every PEFT method fishtune knows, its config schema and its parameter groups.

A method turns a pre-trained HF sequence classifier into a `MethodSetup` that names every
trainable parameter and the group it belongs to:

- `candidates` (name -> family): the parameters the method adds (LoRA's A and B, bottleneck
  projections, prefix embeddings and MLP, gates, or the backbone for full fine-tuning); the
  candidates of a FISH / random / reverse mask, and all of them train in the vanilla method;
- `head`: the HF model's own classifier (BERT/RoBERTa `classifier`, PEFT's `modules_to_save` copy
  of it), always trained densely and counted separately;
- `dense` (name -> family): anything else trained densely, declared by a config key (e.g.
  UniPELT's gates with `method.dense_gates=true`), counted and recorded separately.

Masking, the Fisher, the records and the report see names and families only, never a method.
Each method lives in its own module and registers itself here with `register`; its module imports
PEFT / AdapterHub lazily, so validating a config (`validate_method`) loads no library.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from ..errors import ConfigError
from ..keys import Key, check_section, number, text

# Parameter families a method may declare (names the records and the report use).
FAMILIES = ("lora_A", "lora_B", "lora_magnitude", "adapter_down", "adapter_up", "adapter_norm",
            "prefix_embedding", "prefix_mlp", "gate", "backbone")


@dataclass(frozen=True)
class FactorPair:
    """A low-rank/bottleneck pair whose `up` factor starts at exactly zero: rank component i
    (row i of `down`, entry i of `down_bias`) receives gradient only through column i of `up`.
    `down` has shape (r, in), `up` (out, r) — transpose raw-Parameter layouts accordingly and say so.
    PEFT LoRA, AdapterHub LoRA and AdapterHub bottlenecks all store these layouts (no transpose)."""

    down: str
    up: str
    down_bias: str | None = None
    down_transposed: bool = False   # True when down is stored (in, r) (e.g. a raw Parameter layout)
    up_transposed: bool = False


@dataclass
class MethodSetup:
    model: nn.Module
    candidates: dict[str, str]        # mask-candidate parameter name -> family
    head: list[str]                   # classifier head, always trained densely, counted separately
    dense: dict[str, str] = field(default_factory=dict)   # trained densely besides the head (name -> family)
    factor_pairs: list[FactorPair] = field(default_factory=list)
    inference_count: int | None = None   # entries kept at inference when it differs (prefix MLP folded away)
    padding_sensitive: bool = False      # outputs depend on padding (UniPELT's mean-pooled gates)

    @property
    def method_params(self) -> list[str]:
        return list(self.candidates)

    @property
    def head_params(self) -> list[str]:
        return list(self.head)

    def count(self, names) -> int:
        params = dict(self.model.named_parameters())
        return sum(params[n].numel() for n in names)


# --- config schema -------------------------------------------------------------------------------


COMMON_KEYS: dict[str, Key] = {"name": text(), "tag": text(), "lr": number(0)}


@dataclass(frozen=True)
class Method:
    """A registered method: its config keys (besides name, tag, lr) and how to apply it."""

    name: str
    keys: Mapping[str, Key]
    apply: Callable[[nn.Module, DictConfig], MethodSetup]
    merge: str | None = None   # None if mergeable into the base weights, else why not (one line)


REGISTRY: dict[str, Method] = {}


def register(method: Method) -> Method:
    REGISTRY[method.name] = method
    return method


def get_method(name: str) -> Method:
    if name not in REGISTRY:
        raise ConfigError(f"unknown method {name!r}; choose one of: {', '.join(sorted(REGISTRY))}")
    return REGISTRY[name]


def validate_method(cfg: DictConfig, where: str = "method") -> None:
    """One `ConfigError` line for an unknown method, a missing or unknown key, or a bad value."""
    method = get_method(cfg.get("name"))
    cfg = OmegaConf.to_container(cfg, resolve=True)  # resolve each interpolation once, not per access
    check_section(cfg, {**COMMON_KEYS, **method.keys}, where, required=True, owner=f"method {method.name}")


# --- applying a method ---------------------------------------------------------------------------


def apply_method(model: nn.Module, method_cfg: DictConfig) -> MethodSetup:
    """Apply `method_cfg.name` to `model`; afterwards exactly candidates + head + dense require grad."""
    setup = get_method(method_cfg.name).apply(model, method_cfg)
    check_setup(setup)
    return setup


def check_setup(setup: MethodSetup) -> None:
    """The groups are disjoint, cover exactly the trainable set, use known families, and every
    declared factor pair has the layout and the zero `up` it promises."""
    params = dict(setup.model.named_parameters())
    trainable = {n for n, p in params.items() if p.requires_grad}
    groups = [set(setup.candidates), set(setup.head), set(setup.dense)]
    if sum(map(len, groups)) != len(set().union(*groups)):
        raise RuntimeError("method groups overlap (candidates, head, dense)")
    if set().union(*groups) != trainable:
        missing, extra = trainable - set().union(*groups), set().union(*groups) - trainable
        raise RuntimeError(f"method groups do not cover the trainable set: undeclared {sorted(missing)[:5]}, "
                           f"not trainable {sorted(extra)[:5]}")
    unknown = {f for f in [*setup.candidates.values(), *setup.dense.values()] if f not in FAMILIES}
    if unknown:
        raise RuntimeError(f"unknown parameter families {sorted(unknown)}; known: {FAMILIES}")
    if any(n.startswith("heads.") for n in setup.candidates):
        raise RuntimeError("an AdapterHub prediction head must never be a mask candidate")
    for pair in setup.factor_pairs:
        down = params[pair.down].T if pair.down_transposed else params[pair.down]
        up = params[pair.up].T if pair.up_transposed else params[pair.up]
        rank = down.shape[0]
        if up.dim() != 2 or up.shape[1] != rank or (pair.down_bias and params[pair.down_bias].shape != (rank,)):
            raise RuntimeError(f"factor pair {pair} does not have the (r, in) / (out, r) layout")
        if bool(torch.any(up != 0)):
            raise RuntimeError(f"factor pair {pair}: `up` does not start at zero")


def check_rank(r: int, model: nn.Module, targets: Callable[[str], object]) -> None:
    """A low-rank update B·A (B: out × r, A: r × in) of a weight has rank ≤ min(out, in, r), so an
    r above min(out, in) of a targeted weight adds parameters but no rank, and inflates every
    budget counted from it (`mask.keep_match`): a ConfigError, before any factor is allocated.
    `targets(path)` is true for the modules the library will wrap (its own matching rule)."""
    weights = {path: m.weight.shape for path, m in model.named_modules()
               if targets(path) and isinstance(getattr(m, "weight", None), torch.Tensor) and m.weight.dim() == 2}
    if not weights:
        return   # the library names the targets it cannot find
    path, shape = min(weights.items(), key=lambda item: min(item[1]))
    if r > min(shape):
        raise ConfigError(f"LoRA rank r={r} is above the rank of an update to {path} ({shape[0]}×{shape[1]}); "
                          f"choose r ≤ {min(shape)}: a larger r adds parameters but no rank")


def classifier(model: nn.Module) -> tuple[str, nn.Module]:
    """(attribute, module) of the HF sequence classifier's head: BERT/RoBERTa `classifier`,
    decoder LMs `score`. AdapterHub heads (`model.heads`) are never used."""
    for attr in ("classifier", "score"):
        module = getattr(model, attr, None)
        if isinstance(module, nn.Module):
            return attr, module
    raise ConfigError(f"{type(model).__name__} has no `classifier` or `score` head; "
                      "fishtune needs an HF *ForSequenceClassification model")


# Newly initialised layers some HF classifiers have besides `classifier`, by `config.model_type`:
# part of the head (trained densely, never mask candidates), as `classifier` is.
EXTRA_HEAD_MODULES: dict[str, tuple[str, ...]] = {
    "distilbert": ("pre_classifier",), "deberta": ("pooler",), "deberta-v2": ("pooler",)}


def extra_head_modules(model: nn.Module) -> list[str]:
    """The attributes of `model` among `EXTRA_HEAD_MODULES` for its model type."""
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    return [a for a in EXTRA_HEAD_MODULES.get(model_type, ()) if isinstance(getattr(model, a, None), nn.Module)]


def head_modules(model: nn.Module) -> list[str]:
    """Attributes of `model` that make up its HF classification head: `classifier` (or `score`),
    and the extra new layer of DistilBERT (`pre_classifier`) and DeBERTa (`pooler`)."""
    return [*extra_head_modules(model), classifier(model)[0]]


def head_names(model: nn.Module, prefix: str = "") -> list[str]:
    """`named_parameters()` names of the HF classification head of `model` (found under `prefix`)."""
    return [f"{prefix}{attr}.{n}" for attr in head_modules(model) for n, _ in getattr(model, attr).named_parameters()]


def count_for(model: nn.Module, method_cfg: DictConfig) -> tuple[int, int]:
    """(candidate count, dense count) of `method_cfg` applied to `model` (a throw-away copy);
    the global RNG is left as it was, so the caller's own initialisation does not depend on it."""
    with torch.random.fork_rng(devices=[]):
        setup = apply_method(model, method_cfg)
        return setup.count(setup.candidates), setup.count(setup.dense)


def adapter_format(model: nn.Module) -> str | None:
    """"peft", "adapterhub", or None (no adapter of its own: full fine-tuning)."""
    if hasattr(model, "peft_config"):
        return "peft"
    if hasattr(model, "adapters_config"):
        return "adapterhub"
    return None


def save_adapter(model: nn.Module, folder) -> bool:
    """Write the trained adapter and the HF head in the library's own format into `folder`:
    PEFT `save_pretrained` (`PeftModel.from_pretrained` loads it) or AdapterHub `save_adapter`
    (`model.load_adapter` loads it). False, writing nothing, for a method without an adapter.
    The files get the mode a plain write would (`atomic.plain_modes`), not safetensors' 0600."""
    from ..atomic import plain_modes

    kind = adapter_format(model)
    if kind == "peft":
        model.save_pretrained(str(folder))
    elif kind == "adapterhub":
        from ._adapterhub import save

        save(model, folder)
    if kind is not None:
        plain_modes(folder)
    return kind is not None


def method_config(spec: Any) -> DictConfig:
    """A method config by name, as `method=<name>` composes it (configs/method/<name>.yaml and the
    files its `defaults` list names), or `{config: <name>, <key>: <value>, ...}` for a config with
    some keys changed (what `mask.keep_match` accepts)."""
    from importlib.resources import files

    from omegaconf import OmegaConf

    overrides: dict = {}
    if isinstance(spec, (dict, DictConfig)):
        overrides = {k: v for k, v in dict(spec).items() if k != "config"}
        spec = spec.get("config")
    root = files("fishtune.configs") / "method"
    options = sorted(p.name[:-5] for p in root.iterdir() if p.name.endswith(".yaml"))
    if not isinstance(spec, str) or spec not in options:
        raise ConfigError(f"no method config {spec!r}; choose one of: {', '.join(options)}")
    raw = OmegaConf.create((root / f"{spec}.yaml").read_text(encoding="utf-8"))
    defaults = list(raw.pop("defaults", []))
    if "_self_" not in defaults:
        defaults.append("_self_")   # Hydra's rule: a config's own keys come after its defaults
    merged = OmegaConf.create()
    for entry in defaults:
        merged = OmegaConf.merge(merged, raw if entry == "_self_" else method_config(str(entry)))
    return OmegaConf.merge(merged, overrides)


# Each method module registers itself on import (they import PEFT / AdapterHub lazily).
from . import bottleneck, full, lora, prefix, unipelt  # noqa: E402,F401
