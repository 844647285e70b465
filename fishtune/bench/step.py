"""`step` and `memory`: a plain PEFT LoRA step vs fishtune's `Trainer._step` with a 50% EntryMask."""

from __future__ import annotations

import gc
from typing import Any

import torch

from ..frozen import EntryMask
from .common import (
    Batch,
    Context,
    arm,
    fixed_batch,
    interleave,
    masked_step,
    sync,
    tensor_bytes,
    train_copy,
    vanilla_step,
)


def compare_step(ctx: Context, repeats: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """(step, memory): vanilla PEFT step vs fishtune's masked Trainer._step, on one fixed batch."""
    batch = fixed_batch(ctx, ctx.train)
    times_v, times_m, memory = time_steps(ctx, batch, repeats)
    a, b = arm("vanilla PEFT LoRA step", times_v), arm("fishtune Trainer._step, 50% mask", times_m)
    step = {"a": a, "b": b, "ratio": b["median_s"] / a["median_s"], "ratio_label": "masked/vanilla (time)",
            "target": "<= 1.03", "batch_shape": list(batch["input_ids"].shape), "grad_clip": None,
            "note": "both arms unclipped, fp32 master weights, the same optimizer (fishtune's make_optimizer: "
                    "AdamW, fused on CUDA, no weight decay): they differ by the mask alone"}
    if ctx.device.type == "cuda":  # the timing arms are gone: measure each arm alone
        memory["peak_bytes"] = {"vanilla": peak_step_memory(ctx, batch, masked=False),
                                "masked": peak_step_memory(ctx, batch, masked=True)}
        memory["peak_ratio"] = memory["peak_bytes"]["masked"] / memory["peak_bytes"]["vanilla"]
        memory["peak_ratio_label"] = "masked/vanilla peak allocated during a step (each arm alone on the device)"
    return step, memory


def time_steps(ctx: Context, batch: Batch, repeats: int) -> tuple[list[float], list[float], dict[str, Any]]:
    """Interleaved step times (vanilla, masked) on two copies of the weights, and the masked arm's bytes."""
    vanilla_model, masked_model = train_copy(ctx), train_copy(ctx)
    vanilla = vanilla_step(ctx, vanilla_model)
    masked, entry_mask, masked_opt = masked_step(ctx, masked_model)
    times_v, times_m = interleave(lambda: vanilla(batch), lambda: masked(batch), repeats, device=ctx.device, warmup=2)
    return times_v, times_m, memory_bytes(masked_model, entry_mask, masked_opt)


def memory_bytes(model: torch.nn.Module, entry_mask: EntryMask, opt: torch.optim.Optimizer) -> dict[str, Any]:
    """The mask's extra tensors next to the parameters and the AdamW state (exact byte counts)."""
    params = list(model.parameters())
    state = [t for s in opt.state.values() for t in s.values() if torch.is_tensor(t)]
    params_plus_opt = tensor_bytes(params) + tensor_bytes(state)
    return {"mask_storage_bytes": entry_mask.storage_bytes(), "param_bytes": tensor_bytes(params),
            "trainable_param_bytes": tensor_bytes([p for p in params if p.requires_grad]),
            "adamw_state_bytes": tensor_bytes(state), "param_plus_optimizer_bytes": params_plus_opt,
            "ratio": entry_mask.storage_bytes() / params_plus_opt,
            "ratio_label": "mask storage / (parameters + AdamW state) (bytes)",
            "mask_storage_per_trainable_byte": entry_mask.storage_bytes() / tensor_bytes([p for p in params if p.requires_grad]),
            "peak_bytes": None}


def peak_step_memory(ctx: Context, batch: Batch, *, masked: bool) -> int:
    """torch.cuda.max_memory_allocated over one steady-state step, with only this arm on the device."""
    gc.collect()
    torch.cuda.empty_cache()
    model = train_copy(ctx)
    step = masked_step(ctx, model)[0] if masked else vanilla_step(ctx, model)
    step(batch)  # creates the AdamW state
    sync(ctx.device)
    torch.cuda.reset_peak_memory_stats(ctx.device)
    step(batch)
    sync(ctx.device)
    peak = torch.cuda.max_memory_allocated(ctx.device)
    del model, step
    torch.cuda.empty_cache()
    return peak
