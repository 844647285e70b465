"""PEFT methods: each turns a pre-trained classifier into (model, method parameters, head parameters).

The *method parameters* are the candidates for a FISH mask (LoRA's A and B, adapter weights, or
the whole backbone for full fine-tuning); the *head* (the classifier) is always trained densely
and counted separately. Masks only ever see parameter names, never the method.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from omegaconf import DictConfig
from torch import nn

from ..errors import ConfigError


@dataclass
class MethodSetup:
    model: nn.Module
    method_params: list[str]   # `model.named_parameters()` names the method trains (mask candidates)
    head_params: list[str]     # classifier-head names, trained densely

    def count(self, names: list[str]) -> int:
        params = dict(self.model.named_parameters())
        return sum(params[n].numel() for n in names)


def apply_method(model: nn.Module, method_cfg: DictConfig) -> MethodSetup:
    """Apply `method_cfg.name` to `model`; afterwards exactly method+head params require grad."""
    from .full import apply_full
    from .lora import apply_lora

    registry: dict[str, Callable[[nn.Module, DictConfig], MethodSetup]] = {
        "lora": apply_lora,
        "dora": apply_lora,
        "full": apply_full,
    }
    if method_cfg.name not in registry:
        raise ConfigError(f"unknown method {method_cfg.name!r}; choose one of: {', '.join(sorted(registry))}")
    setup = registry[method_cfg.name](model, method_cfg)
    trainable = {n for n, p in setup.model.named_parameters() if p.requires_grad}
    assert trainable == set(setup.method_params) | set(setup.head_params), "method/head split must cover the trainable set"
    return setup


def is_head_param(name: str) -> bool:
    """Classifier heads of HF sequence classifiers: BERT/RoBERTa `classifier`, decoder LMs `score`."""
    parts = name.split(".")
    return "classifier" in parts or "score" in parts
