"""LoRA and DoRA through HF PEFT.

LoRA: h = W x + (alpha / r) B A x on the target modules; B starts at zero.
DoRA (`method=dora`): the same A, B plus a magnitude vector m per target, h = m * (W + s B A) x /
||W + s B A||_col; its `lora_magnitude_vector` is a mask candidate too (not an nn.Linear, so the
`auto` Fisher estimator scores it with the per-example loop).
"""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf
from peft import LoraConfig, TaskType, get_peft_model
from torch import nn

from . import MethodSetup, is_head_param


def apply_lora(model: nn.Module, cfg: DictConfig) -> MethodSetup:
    config = LoraConfig(
        task_type=TaskType.SEQ_CLS,  # puts the classifier head in modules_to_save (trained densely)
        r=int(cfg.r),
        lora_alpha=float(cfg.alpha),
        lora_dropout=float(cfg.dropout),
        target_modules=list(OmegaConf.to_container(cfg.target_modules)),
        use_dora=cfg.name == "dora",
    )
    peft_model = get_peft_model(model, config)
    trainable = [n for n, p in peft_model.named_parameters() if p.requires_grad]
    method = [n for n in trainable if "lora_" in n]
    head = [n for n in trainable if n not in method]
    assert all(is_head_param(n) for n in head), f"unexpected trainable non-LoRA parameters: {head}"
    return MethodSetup(peft_model, method, head)
