"""LoRA and DoRA through HF PEFT (`method=lora`, `method=dora`).

LoRA: h = W x + (alpha / r) B A x on the target modules; B starts at zero (a declared factor
pair: PEFT stores A as (r, in) and B as (out, r), the `FactorPair` layout, no transpose).
DoRA: the same A, B plus a magnitude vector m per target, h = m * (W + s B A) x / ||W + s B A||_col;
its `lora_magnitude_vector` is a mask candidate too (family `lora_magnitude`).

Groups are read from PEFT's module structure (every `LoraLayer` and its per-adapter `lora_A`,
`lora_B`, `lora_magnitude_vector`), not from name substrings; the head is PEFT's trainable
`modules_to_save` copy of the HF classifier.
"""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf
from torch import nn

from ..keys import integer, names, number
from . import FactorPair, Method, MethodSetup, check_rank, extra_head_modules, head_modules, register

# scale before alpha: alpha follows it (`scale * r`), so a bad method.scale is named as itself
LORA_KEYS = {"r": integer(1), "scale": number(0), "alpha": number(0), "dropout": number(0, inclusive=True, high=1),
             "target_modules": names()}


def apply_lora(model: nn.Module, cfg: DictConfig) -> MethodSetup:
    from peft import LoraConfig, TaskType, get_peft_model
    from peft.tuners.lora import LoraLayer
    from peft.tuners.tuners_utils import check_target_module_exists

    config = LoraConfig(
        task_type=TaskType.SEQ_CLS,  # puts the classifier head in modules_to_save (trained densely)
        r=int(cfg.r),
        lora_alpha=float(cfg.alpha),
        lora_dropout=float(cfg.dropout),
        target_modules=list(OmegaConf.to_container(cfg.target_modules)),
        use_dora=cfg.name == "dora",
        modules_to_save=extra_head_modules(model) or None,   # SEQ_CLS adds `classifier`/`score` itself
    )
    check_rank(config.r, model, lambda path: check_target_module_exists(config, path))   # PEFT's own matching
    attrs = head_modules(model)
    peft_model = get_peft_model(model, config)
    adapter = peft_model.active_adapter
    candidates: dict[str, str] = {}
    pairs: list[FactorPair] = []
    for path, module in peft_model.named_modules():
        if not isinstance(module, LoraLayer) or adapter not in module.lora_A:
            continue
        a, b = f"{path}.lora_A.{adapter}.weight", f"{path}.lora_B.{adapter}.weight"
        candidates.update({a: "lora_A", b: "lora_B"})
        pairs.append(FactorPair(down=a, up=b))
        if adapter in getattr(module, "lora_magnitude_vector", {}):
            candidates[f"{path}.lora_magnitude_vector.{adapter}.weight"] = "lora_magnitude"
    head = []
    for attr in attrs:
        wrapper = getattr(peft_model.base_model.model, attr)   # PEFT's ModulesToSaveWrapper
        prefix = f"base_model.model.{attr}.modules_to_save.{adapter}."
        head += [prefix + n for n, _ in wrapper.modules_to_save[adapter].named_parameters()]
    return MethodSetup(peft_model, candidates, head, factor_pairs=pairs)


register(Method("lora", LORA_KEYS, apply_lora))
register(Method("dora", LORA_KEYS, apply_lora))
