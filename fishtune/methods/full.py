"""Full fine-tuning (`method=full`): every backbone parameter is trainable and a mask candidate
(family `backbone`; with `mask=fish` this is the original FISH Mask). The HF classifier is the head."""

from __future__ import annotations

from omegaconf import DictConfig
from torch import nn

from . import Method, MethodSetup, head_names, register


def apply_full(model: nn.Module, cfg: DictConfig) -> MethodSetup:
    for p in model.parameters():
        p.requires_grad_(True)
    head = head_names(model)
    candidates = {n: "backbone" for n, _ in model.named_parameters() if n not in set(head)}
    return MethodSetup(model, candidates, head)


register(Method("full", {}, apply_full, merge="full fine-tuning has no adapter to merge: the run folder "
                                             "holds the trained backbone in peft_final.safetensors"))
