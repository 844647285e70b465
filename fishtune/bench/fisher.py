"""`fisher`: the FISH reference loop (batch size 1) vs `empirical_fisher(estimator="auto")`.

Both arms run in fp32 whatever the bench's precision: fishtune's Fisher is fp32 (`empirical_fisher`
turns a caller's autocast off), so timing the reference under bf16 autocast would compare unequal
work, and the agreement is then checked on exactly the runs that are timed."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from ..batching import iterate, train_order
from ..fisher import empirical_fisher
from ..masking import select_mask
from .common import FISHER_BATCH, Batch, Context, arm, interleave


def fisher_reference(model: nn.Module, batches: list[Batch], names: list[str], *, autocast: bool) -> dict[str, Tensor]:
    """The FISH reference: per example (kept padded as in its batch), true-label loss, backward, add grad**2."""
    params = dict(model.named_parameters())
    fisher = {n: torch.zeros(params[n].shape, dtype=torch.float32, device=params[n].device) for n in names}
    for batch in batches:
        for i in range(batch["labels"].shape[0]):
            example = {k: v[i: i + 1] for k, v in batch.items()}
            with torch.autocast(example["labels"].device.type, dtype=torch.bfloat16, enabled=autocast):
                loss = model(**example).loss
            loss.backward()
            for n in names:
                fisher[n] += params[n].grad.float() ** 2
            model.zero_grad(set_to_none=True)
    return fisher


def fisher_fishtune(model: nn.Module, batches: list[Batch], names: list[str], *, autocast: bool) -> dict[str, Tensor]:
    """fishtune's estimator, called as `selection.build_mask` calls it."""
    num = sum(b["labels"].shape[0] for b in batches)
    with torch.autocast(batches[0]["labels"].device.type, dtype=torch.bfloat16, enabled=autocast):
        return empirical_fisher(model, batches, num_samples=num, estimator="auto", param_names=names)


def fisher_agreement(ours: Mapping[str, Tensor], ref: Mapping[str, Tensor]) -> dict[str, Any]:
    """Max over tensors of max|ours - ref| / max|ref|, and whether the 50% FISH masks coincide."""
    rel = max(float((ours[n] - ref[n]).abs().max() / ref[n].abs().max().clamp_min(1e-30)) for n in ref)
    keep = sum(t.numel() for t in ref.values()) // 2
    mask_ours = select_mask({n: t.cpu() for n, t in ours.items()}, keep=keep, strategy="fish")
    mask_ref = select_mask({n: t.cpu() for n, t in ref.items()}, keep=keep, strategy="fish")
    differ = sum(int((mask_ours[n] != mask_ref[n]).sum()) for n in ref)
    return {"max_rel_diff": rel, "max_rel_diff_label": "max over tensors of max|ours-ref| / max|ref|",
            "masks_identical": differ == 0, "mask_entries_differing": differ, "mask_keep": keep}


def compare_fisher(ctx: Context, repeats: int, num_samples: int) -> dict[str, Any]:
    """FISH batch-1 loop (A) vs empirical_fisher(estimator="auto") (B) on the same examples."""
    model = copy.deepcopy(ctx.lora.model).to(ctx.device).eval()
    names = list(ctx.lora.method_params)
    # The examples and batches `selection._fisher_batches` would use: a seeded shuffle, sorted by length.
    lengths = ctx.train.lengths()
    order = train_order(lengths, batch_size=len(lengths), seed=ctx.seed, epoch=-1, group_by_length=False)[0]
    chosen = sorted(order[:num_samples], key=lambda i: lengths[i])
    chunks = [chosen[s: s + FISHER_BATCH] for s in range(0, len(chosen), FISHER_BATCH)]
    batches = list(iterate(ctx.train, chunks, pad_id=ctx.pad_id, multiple=1, device=ctx.device))

    # The agreement of the two arms as timed (these untimed runs are also the warm-up).
    agreement = fisher_agreement(fisher_fishtune(model, batches, names, autocast=False),
                                 fisher_reference(model, batches, names, autocast=False))
    times_ref, times_ours = interleave(lambda: fisher_reference(model, batches, names, autocast=False),
                                       lambda: fisher_fishtune(model, batches, names, autocast=False),
                                       repeats, device=ctx.device, warmup=0)
    a = arm("FISH reference loop (batch 1)", times_ref, items=len(chosen), unit="samples_per_s")
    b = arm('fishtune empirical_fisher("auto")', times_ours, items=len(chosen), unit="samples_per_s")
    return {"a": a, "b": b, "ratio": a["median_s"] / b["median_s"],
            "ratio_label": "speed-up ours/reference (samples/s)", "num_samples": len(chosen),
            "batch_size": FISHER_BATCH, "precision": "fp32 (both arms, timed and checked)", **agreement}
