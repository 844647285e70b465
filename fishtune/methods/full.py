"""Full fine-tuning: every backbone parameter is trainable (and a mask candidate: the FISH Mask)."""

from __future__ import annotations

from omegaconf import DictConfig
from torch import nn

from . import MethodSetup, is_head_param


def apply_full(model: nn.Module, cfg: DictConfig) -> MethodSetup:
    for p in model.parameters():
        p.requires_grad_(True)
    names = [n for n, _ in model.named_parameters()]
    head = [n for n in names if is_head_param(n)]
    return MethodSetup(model, [n for n in names if n not in head], head)
