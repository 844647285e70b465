"""`inference`: eval-batch latency of each method's model as served, next to the base model.

Each arm is timed interleaved with the base model (A B A B, a base run of its own), so every ratio
is measured side by side. The first arm is the headline (the comparison's top-level a/b/ratio in the
JSON); each further arm is stored under its key: LoRA merged into the weights (`merge_and_unload()`,
should cost nothing), un-merged PEFT LoRA, and each AdapterHub method `fishtune.methods` registers
(bottleneck adapters, prefix tuning, UniPELT) with its shipped config (configs/method/<name>.yaml),
as served: adapters stay in the forward pass (they cannot be merged), prefix MLPs are folded away
(`eject_prefix_tuning`). A further method is one more `InferenceArm` in `ARMS`.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ..methods import REGISTRY, apply_method, method_config
from .common import Context, arm, fixed_batch, interleave


@dataclass(frozen=True)
class InferenceArm:
    key: str                                  # the JSON key ("merged" is the headline, at the top level)
    label: str                                # the arm's label in the table
    short: str                                # its name in the ratio label: "<short>/base (latency)"
    build: Callable[[Context], nn.Module]     # the model as served, on the CPU (moved to the device here)


def served_method(name: str) -> Callable[[Context], nn.Module]:
    """A builder: the method's shipped config applied to a fresh copy of the base model, as served."""

    def build(ctx: Context) -> nn.Module:
        model = apply_method(copy.deepcopy(ctx.base), method_config(name)).model
        try:
            from adapters.methods.prefix_tuning import PrefixTuningPool
        except ImportError:
            return model
        for module in model.modules():  # fold the training-time prefix MLP away (AdapterHub's eject)
            if isinstance(module, PrefixTuningPool):
                for prefix in module.prefix_tunings.values():
                    prefix.eject()
        return model

    return build


METHOD_ARMS = (  # (registry name, label); arms for names the registry lacks are left out
    ("adapter_pfeiffer", "AdapterHub bottleneck, Pfeiffer (SeqBn)"),
    ("adapter_houlsby", "AdapterHub bottleneck, Houlsby (DoubleSeqBn)"),
    ("adapter_parallel", "AdapterHub parallel bottleneck (ParBn)"),
    ("prefix", "AdapterHub prefix tuning (MLP folded)"),
    ("unipelt", "AdapterHub UniPELT (prefix MLP folded)"),
)

ARMS: tuple[InferenceArm, ...] = (
    InferenceArm("merged", "merged LoRA", "merged", lambda ctx: copy.deepcopy(ctx.lora.model).merge_and_unload()),
    InferenceArm("unmerged", "un-merged PEFT LoRA", "un-merged", lambda ctx: copy.deepcopy(ctx.lora.model)),
    *(InferenceArm(name, label, name, served_method(name)) for name, label in METHOD_ARMS if name in REGISTRY),
)


def compare_inference(ctx: Context, repeats: int, arms: Sequence[InferenceArm] = ARMS) -> dict[str, Any]:
    """Base model (A) vs each arm (B), pair by pair, on one eval batch."""
    inputs = fixed_batch(ctx, ctx.dev, labels=False)
    base = copy.deepcopy(ctx.base).to(ctx.device).eval()
    models = {spec.key: spec.build(ctx).to(ctx.device).eval() for spec in arms}

    def forward(model: nn.Module) -> Callable[[], Tensor]:
        def run() -> Tensor:
            with torch.no_grad(), torch.autocast(ctx.device.type, dtype=torch.bfloat16, enabled=ctx.autocast):
                return model(**inputs).logits
        return run

    extra: dict[str, Any] = {}
    if "merged" in models and "unmerged" in models:  # (also a first untimed call of both)
        extra["max_abs_logit_diff_merged_vs_unmerged"] = float(
            (forward(models["merged"])() - forward(models["unmerged"])()).abs().max())
    pairs: dict[str, dict[str, Any]] = {}
    for i, spec in enumerate(arms):
        times_base, times_arm = interleave(forward(base), forward(models[spec.key]), repeats, device=ctx.device,
                                           warmup=2 if i == 0 else 1)
        a = arm("base model (no LoRA)" if i == 0 else "base model (paired run)", times_base)
        b = arm(spec.label, times_arm)
        pairs[spec.key] = {"a": a, "b": b, "ratio": b["median_s"] / a["median_s"],
                           "ratio_label": f"{spec.short}/base (latency)"}
    headline, *others = [spec.key for spec in arms]
    result = {**pairs[headline], "target": "~1.00" if headline == "merged" else None,
              **{key: pairs[key] for key in others}, "arms": [spec.key for spec in arms],
              "batch_shape": list(inputs["input_ids"].shape)}
    result.update(extra)
    return result
