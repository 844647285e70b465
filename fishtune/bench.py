"""`fishtune bench`: how much fishtune's machinery costs next to the obvious PEFT code.

Five comparisons on real SST-2 sentences, each timed interleaved (A B A B ...) in one process so
that a busy or throttling machine slows both arms alike; medians and their ratio are reported:

- ``step``: one LoRA (r=16, query/value) training step with a 50% EntryMask through the shipped
  ``Trainer._step`` vs a plain PEFT step written the obvious way (model(**batch).loss.backward(),
  AdamW, scheduler). Same weights, same fixed batch, same precision; both unclipped.
- ``memory``: the extra bytes of that mask (``EntryMask.storage_bytes()``) next to the parameter
  and AdamW-state bytes, and on CUDA each arm's peak allocated memory, measured alone on the device.
- ``fisher``: ``empirical_fisher(estimator="auto")`` vs the FISH reference loop (batch size 1,
  ``loss.backward()``, accumulate ``p.grad ** 2``) on the same N examples; also how far apart the
  two Fisher estimates are and whether their 50% FISH masks are identical (checked in fp32).
- ``epoch``: training throughput of fishtune's data path (length-grouped batches, dynamic padding to
  a multiple of 8) vs padding every batch to 128 in an unsorted shuffle, with the same vanilla step.
- ``inference``: a merged LoRA model (``merge_and_unload()``) vs the base model without LoRA on the
  same eval batch (should be ~1.00), and the un-merged LoRA model for contrast.

Never read a single number in isolation: the ratios are what the benchmark is for.
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import gc
import importlib.resources
import math
import os
import platform
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf
from torch import Tensor, nn

from .atomic import atomic_write_json
from .batching import Encoded, collate, encode, iterate, train_order
from .data import DEFAULT_GLUE_DIR, load_split
from .errors import ConfigError
from .fisher import empirical_fisher
from .frozen import EntryMask
from .masking import select_mask
from .methods import MethodSetup, apply_method
from .models import MINILM_PACKAGE, load_model, package_model_dir, uses_token_type_ids
from .record import environment
from .runner import pick_device
from .tasks import get_task
from .train import (
    Trainer,
    linear_schedule,
    make_optimizer,
    model_inputs,
    seed_everything,
)

MODELS = ("minilm-l6", "tiny-bert", "roberta-base")
COMPARISONS = ("step", "memory", "fisher", "epoch", "inference")
LORA = {"name": "lora", "r": 16, "alpha": 32, "dropout": 0.1, "target_modules": ["query", "value"]}
LR = 2e-3
MAX_LENGTH = 128          # the naive baseline pads every batch to this (also the truncation length)
PAD_MULTIPLE = 8          # fishtune's default train.pad_to_multiple_of
FISHER_BATCH = 32         # fishtune's default mask.fisher_batch_size
TOTAL_STEPS = 10**6       # for the schedulers: the learning rate never reaches zero during the bench
# Defaults that depend on the device: (CPU, CUDA). The CPU defaults take ~3-4 min with MiniLM on 2 busy
# cores; the CUDA ones ~3 min with roberta-base (scripts/gpu_check.sh allows 300 s).
DEFAULT_REPEATS = (10, 30)       # epoch runs a third as many (>= 2), fisher 2-3: their rounds are long
DEFAULT_FISHER_SAMPLES = (64, 512)
DEFAULT_EPOCH_BATCHES = (8, 50)

Batch = dict[str, Tensor]


@dataclass
class Context:
    """Everything the comparisons share: device, one set of weights, tokenised SST-2."""

    model_name: str
    model_source: str
    device: torch.device
    autocast: bool                 # bf16 autocast
    base: nn.Module                # the classifier without LoRA (CPU; copies go to the device)
    lora: MethodSetup              # the same weights with PEFT LoRA r=16 on query/value (CPU)
    pad_id: int
    train: Encoded                 # a seeded random subset of SST-2 train
    dev: Encoded                   # the eval batch (SST-2 dev)
    batch_size: int
    seed: int


# --- timing ----------------------------------------------------------------------------------


def sync(device: torch.device) -> None:
    """Wait for queued device work (CUDA is asynchronous; the CPU is not)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def interleave(fn_a: Callable[[], Any], fn_b: Callable[[], Any], repeats: int, *,
               device: torch.device, warmup: int = 1) -> tuple[list[float], list[float]]:
    """Seconds per call of fn_a and fn_b, measured A B A B ... after `warmup` untimed rounds."""
    for _ in range(warmup):
        fn_a()
        fn_b()
    times_a: list[float] = []
    times_b: list[float] = []
    for _ in range(repeats):
        for fn, times in ((fn_a, times_a), (fn_b, times_b)):
            sync(device)
            start = time.perf_counter()
            fn()
            sync(device)
            times.append(time.perf_counter() - start)
    return times_a, times_b


def arm(label: str, times: list[float], *, items: int | None = None, unit: str | None = None) -> dict[str, Any]:
    """One side of a comparison: raw times, their median and (with `items`) the median throughput."""
    median = statistics.median(times)
    entry: dict[str, Any] = {"label": label, "times_s": [round(t, 6) for t in times], "median_s": median}
    if items is not None:
        entry["items_per_call"] = items
        entry[f"median_{unit}"] = items / median
    return entry


# --- setup -----------------------------------------------------------------------------------


def load_bench_model(name: str, *, seed: int) -> tuple[nn.Module, Any, str]:
    """(classifier, tokenizer, source) for SST-2; roberta-base is random-init (no Hub)."""
    task = get_task("sst2")
    if name == "roberta-base":
        from transformers import (
            AutoTokenizer,
            RobertaConfig,
            RobertaForSequenceClassification,
        )

        tokenizer = AutoTokenizer.from_pretrained(str(package_model_dir(MINILM_PACKAGE)))
        torch.manual_seed(seed)
        config = RobertaConfig(num_labels=task.num_labels, pad_token_id=tokenizer.pad_token_id)
        return RobertaForSequenceClassification(config), tokenizer, "random-init RobertaConfig() (MiniLM tokenizer)"
    cfg = OmegaConf.load(str(importlib.resources.files("fishtune.configs") / "model" / f"{name}.yaml"))
    loaded = load_model(cfg, task, seed=seed)
    return loaded.model, loaded.tokenizer, loaded.source


def build_context(args: argparse.Namespace, device: torch.device, autocast: bool) -> Context:
    """Load the model, add LoRA (with a random B, as after FISH's warm-up) and tokenise SST-2."""
    seed_everything(args.seed)
    model, tokenizer, source = load_bench_model(args.model, seed=args.seed)
    base = copy.deepcopy(model)
    lora = apply_method(model, OmegaConf.create(LORA))
    # PEFT starts B at zero, which makes every A entry's Fisher exactly zero (a trivial 50% mask).
    generator = torch.Generator().manual_seed(args.seed)
    with torch.no_grad():
        for name, p in lora.model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=generator) * 0.01)
    task = get_task("sst2")
    data_dir = Path("data/glue") if Path("data/glue").is_dir() else DEFAULT_GLUE_DIR
    pool = max(args.batch_size * args.epoch_batches, args.fisher_samples, args.batch_size)
    enc = {"tokenizer": tokenizer, "max_length": MAX_LENGTH, "token_type_ids": uses_token_type_ids(model),
           "regression": False}
    train = encode(load_split(task, "train", max_samples=pool, data_dir=data_dir, seed=args.seed), **enc)
    dev = encode(load_split(task, "dev", max_samples=args.batch_size, data_dir=data_dir, seed=args.seed), **enc)
    return Context(args.model, source, device, autocast, base, lora, tokenizer.pad_token_id, train, dev,
                   args.batch_size, args.seed)


def fixed_batch(ctx: Context, data: Encoded, *, labels: bool = True) -> Batch:
    """The first `batch_size` examples of `data`, padded to their longest (multiple of 8), on the device."""
    batch = collate(data, range(min(ctx.batch_size, len(data))), pad_id=ctx.pad_id, multiple=PAD_MULTIPLE)
    batch = {k: v.to(ctx.device) for k, v in batch.items()}
    return batch if labels else model_inputs(batch)


def vanilla_step(ctx: Context, model: nn.Module) -> Callable[[Batch], Tensor]:
    """A plain PEFT LoRA training step, written the obvious way (torch AdamW, HF scheduler, HF loss)."""
    from transformers import get_linear_schedule_with_warmup

    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=LR)
    sched = get_linear_schedule_with_warmup(opt, num_warmup_steps=0, num_training_steps=TOTAL_STEPS)

    def step(batch: Batch) -> Tensor:
        with torch.autocast(ctx.device.type, dtype=torch.bfloat16, enabled=ctx.autocast):
            out = model(**batch)
        out.loss.backward()
        opt.step()
        sched.step()
        opt.zero_grad()
        return out.loss

    return step


def masked_step(ctx: Context, model: nn.Module) -> tuple[Callable[[Batch], Tensor], EntryMask, torch.optim.Optimizer]:
    """fishtune's step (`Trainer._step`, its AdamW and schedule) with a random 50% EntryMask."""
    params = dict(model.named_parameters())
    shapes = {n: torch.zeros(params[n].shape) for n in ctx.lora.method_params}
    keep = sum(s.numel() for s in shapes.values()) // 2
    entry_mask = EntryMask(model, select_mask(shapes, keep=keep, strategy="random", seed=ctx.seed))
    trainer = Trainer(model, OmegaConf.create({"grad_clip": None}), device=ctx.device, autocast=ctx.autocast,
                      seed=ctx.seed, pad_id=ctx.pad_id, evaluate=dict, entry_mask=entry_mask)
    opt = make_optimizer(trainer.params, lr=LR, weight_decay=0.0, device=ctx.device)
    sched = linear_schedule(opt, warmup_steps=0, total_steps=TOTAL_STEPS)
    return (lambda batch: trainer._step(batch, opt, sched)), entry_mask, opt


def train_copy(ctx: Context) -> nn.Module:
    """A fresh copy of the LoRA model on the device, in training mode."""
    return copy.deepcopy(ctx.lora.model).to(ctx.device).train()


def tensor_bytes(tensors: list[Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


# --- the comparisons -------------------------------------------------------------------------


def compare_step(ctx: Context, repeats: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """(step, memory): vanilla PEFT step vs fishtune's masked Trainer._step, on one fixed batch."""
    batch = fixed_batch(ctx, ctx.train)
    times_v, times_m, memory = time_steps(ctx, batch, repeats)
    a, b = arm("vanilla PEFT LoRA step", times_v), arm("fishtune Trainer._step, 50% mask", times_m)
    step = {"a": a, "b": b, "ratio": b["median_s"] / a["median_s"], "ratio_label": "masked/vanilla (time)",
            "target": "<= 1.03", "batch_shape": list(batch["input_ids"].shape), "grad_clip": None,
            "note": "both arms unclipped, fp32 master weights; the masked arm uses fishtune's make_optimizer "
                    "(fused AdamW on CUDA), the vanilla arm torch.optim.AdamW defaults"}
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


def memory_bytes(model: nn.Module, entry_mask: EntryMask, opt: torch.optim.Optimizer) -> dict[str, Any]:
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

    # Agreement in fp32 (these untimed runs are also the warm-up); a bf16 warm-up round if timing in bf16.
    agreement = fisher_agreement(fisher_fishtune(model, batches, names, autocast=False),
                                 fisher_reference(model, batches, names, autocast=False))
    if ctx.autocast:  # warm the bf16 kernels up on one batch
        fisher_reference(model, batches[:1], names, autocast=True)
        fisher_fishtune(model, batches[:1], names, autocast=True)
    times_ref, times_ours = interleave(lambda: fisher_reference(model, batches, names, autocast=ctx.autocast),
                                       lambda: fisher_fishtune(model, batches, names, autocast=ctx.autocast),
                                       repeats, device=ctx.device, warmup=0)
    a = arm("FISH reference loop (batch 1)", times_ref, items=len(chosen), unit="samples_per_s")
    b = arm('fishtune empirical_fisher("auto")', times_ours, items=len(chosen), unit="samples_per_s")
    return {"a": a, "b": b, "ratio": a["median_s"] / b["median_s"],
            "ratio_label": "speed-up ours/reference (samples/s)", "num_samples": len(chosen),
            "batch_size": FISHER_BATCH, "agreement_precision": "fp32", **agreement}


def compare_epoch(ctx: Context, repeats: int, num_batches: int) -> dict[str, Any]:
    """Naive (unsorted, pad to 128) vs fishtune's data path (length-grouped, dynamic) over the same examples."""
    data = ctx.train
    examples = min(len(data), num_batches * ctx.batch_size)
    lengths = data.lengths()[:examples]
    model = train_copy(ctx)
    step = vanilla_step(ctx, model)
    naive = train_order(lengths, batch_size=ctx.batch_size, seed=ctx.seed, epoch=0, group_by_length=False)
    grouped = train_order(lengths, batch_size=ctx.batch_size, seed=ctx.seed, epoch=0, group_by_length=True)

    def run(batches: list[list[int]], multiple: int) -> None:
        # multiple=MAX_LENGTH pads every batch to 128: no example is longer (truncated at encoding).
        for batch in iterate(data, batches, pad_id=ctx.pad_id, multiple=multiple, device=ctx.device):
            step(batch)

    run(naive[:1], MAX_LENGTH)  # warm-up: one batch of each
    run(grouped[:1], PAD_MULTIPLE)
    times_n, times_g = interleave(lambda: run(naive, MAX_LENGTH), lambda: run(grouped, PAD_MULTIPLE), repeats,
                                  device=ctx.device, warmup=0)
    padded = {"naive": len(naive) * ctx.batch_size * MAX_LENGTH,
              "fishtune": sum(len(b) * math.ceil(max(lengths[i] for i in b) / PAD_MULTIPLE) * PAD_MULTIPLE
                              for b in grouped)}
    a = arm("naive: shuffled, pad to 128", times_n, items=examples, unit="examples_per_s")
    b = arm("fishtune: grouped, dynamic pad", times_g, items=examples,
            unit="examples_per_s")
    return {"a": a, "b": b, "ratio": a["median_s"] / b["median_s"],
            "ratio_label": "speed-up fishtune/naive (examples/s)", "batches": len(naive), "examples": examples,
            "real_tokens": sum(lengths), "padded_tokens": padded, "step": "vanilla PEFT LoRA step"}


def compare_inference(ctx: Context, repeats: int) -> dict[str, Any]:
    """Base model (A) vs merged LoRA (B), and un-merged LoRA for contrast, on one eval batch."""
    inputs = fixed_batch(ctx, ctx.dev, labels=False)
    base = copy.deepcopy(ctx.base).to(ctx.device).eval()
    unmerged = copy.deepcopy(ctx.lora.model).to(ctx.device).eval()
    merged = copy.deepcopy(ctx.lora.model).merge_and_unload().to(ctx.device).eval()

    def forward(model: nn.Module) -> Callable[[], Tensor]:
        def run() -> Tensor:
            with torch.no_grad(), torch.autocast(ctx.device.type, dtype=torch.bfloat16, enabled=ctx.autocast):
                return model(**inputs).logits
        return run

    merge_error = float((forward(merged)() - forward(unmerged)()).abs().max())
    times_base, times_merged = interleave(forward(base), forward(merged), repeats, device=ctx.device, warmup=2)
    times_base2, times_unmerged = interleave(forward(base), forward(unmerged), repeats, device=ctx.device, warmup=1)
    a, b = arm("base model (no LoRA)", times_base), arm("merged LoRA", times_merged)
    unmerged_arm = arm("un-merged PEFT LoRA", times_unmerged)
    base2 = arm("base model (paired run)", times_base2)
    return {"a": a, "b": b, "ratio": b["median_s"] / a["median_s"], "ratio_label": "merged/base (latency)",
            "target": "~1.00", "unmerged": {"a": base2, "b": unmerged_arm,
                                            "ratio": unmerged_arm["median_s"] / base2["median_s"],
                                            "ratio_label": "un-merged/base (latency)"},
            "batch_shape": list(inputs["input_ids"].shape), "max_abs_logit_diff_merged_vs_unmerged": merge_error}


# --- report ----------------------------------------------------------------------------------


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def format_table(comparisons: Mapping[str, Mapping[str, Any]]) -> str:
    """A plain-text table: both arms' medians and the labelled ratio of each comparison."""

    def median(entry: Mapping[str, Any]) -> str:
        rates = [k for k in entry if k.startswith("median_") and k != "median_s"]
        ms = f"{entry['median_s'] * 1e3:.1f} ms"
        return f"{ms} ({entry[rates[0]]:.1f} {rates[0][7:].replace('_per_', '/')})" if rates else ms

    rows = [("comparison", "A", "median A", "B", "median B", "ratio")]
    for name, c in comparisons.items():
        if name == "memory":
            rows.append((name, "params + AdamW state", f"{c['param_plus_optimizer_bytes'] / 2**20:.1f} MiB",
                         "mask storage", f"{c['mask_storage_bytes'] / 2**20:.2f} MiB",
                         f"{c['ratio']:.4f} = {c['ratio_label']}"))
            if c.get("peak_bytes"):
                p = c["peak_bytes"]
                rows.append(("", "peak, vanilla step", f"{p['vanilla'] / 2**20:.0f} MiB", "peak, masked step",
                             f"{p['masked'] / 2**20:.0f} MiB", f"{c['peak_ratio']:.3f} = masked/vanilla peak"))
            continue
        rows.append((name, c["a"]["label"], median(c["a"]), c["b"]["label"], median(c["b"]),
                     f"{c['ratio']:.3f} = {c['ratio_label']}"))
        if name == "fisher":
            same = "yes" if c["masks_identical"] else f"NO ({c['mask_entries_differing']} entries differ)"
            rows.append(("", "", "", "", "", f"max rel diff {c['max_rel_diff']:.1e}; 50% masks identical: {same}"))
        if name == "inference":
            u = c["unmerged"]
            rows.append(("", u["a"]["label"], median(u["a"]), u["b"]["label"], median(u["b"]),
                         f"{u['ratio']:.3f} = {u['ratio_label']}"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="fishtune bench", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", choices=MODELS, default="minilm-l6")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto",
                   help="auto: bf16 autocast on CUDA (if supported), fp32 on CPU")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--repeats", type=int, default=None,
                   help=f"timed rounds per comparison (default {DEFAULT_REPEATS[0]} on CPU, {DEFAULT_REPEATS[1]} on "
                        "CUDA; the epoch comparison runs a third as many, at least 2; fisher 2 or 3: the reference "
                        "loop is slow and its ratio large)")
    p.add_argument("--fisher-samples", type=int, default=None,
                   help=f"N for the Fisher comparison (default {DEFAULT_FISHER_SAMPLES[0]} CPU, "
                        f"{DEFAULT_FISHER_SAMPLES[1]} CUDA)")
    p.add_argument("--epoch-batches", type=int, default=None,
                   help=f"batches per epoch pass (default {DEFAULT_EPOCH_BATCHES[0]} CPU, {DEFAULT_EPOCH_BATCHES[1]} CUDA)")
    p.add_argument("--only", default=",".join(COMPARISONS), help=f"comma list of: {', '.join(COMPARISONS)}")
    p.add_argument("--out", type=Path, default=Path("results/bench"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1,
                   help="CPU intra-op threads (default 1; 0 keeps torch's default). On a busy machine, "
                        "multi-threaded ops wait for descheduled threads at every op (stalls of a scheduler "
                        "tick) and the timings become noise; one thread keeps them stable")
    args = p.parse_args(argv)
    args.only = [c.strip() for c in args.only.split(",") if c.strip()]
    unknown = sorted(set(args.only) - set(COMPARISONS))
    if unknown or not args.only:
        p.error(f"--only: unknown comparison(s) {unknown}; choose from {', '.join(COMPARISONS)}")
    if args.threads < 0:
        p.error("--threads must be >= 0")
    for name in ("batch_size", "repeats", "fisher_samples", "epoch_batches"):
        value = getattr(args, name)
        if value is not None and value < 1:
            p.error(f"--{name.replace('_', '-')} must be a positive integer")
    return args


def main(argv: list[str]) -> int:
    """Run the selected comparisons, print the table, write the JSON; 0 on success."""
    args = parse_args(argv)
    try:  # the same resolution as `fishtune run` (train.device / train.precision)
        device, autocast = pick_device(OmegaConf.create({"device": args.device, "precision": args.precision}))
    except ConfigError as err:
        print(f"fishtune bench: error: {err}", file=sys.stderr)
        return 2
    on_cuda = int(device.type == "cuda")
    args.repeats = args.repeats or DEFAULT_REPEATS[on_cuda]
    args.fisher_samples = args.fisher_samples or DEFAULT_FISHER_SAMPLES[on_cuda]
    args.epoch_batches = args.epoch_batches or DEFAULT_EPOCH_BATCHES[on_cuda]
    threads = torch.get_num_threads()
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        return _run(args, device, autocast)
    finally:
        torch.set_num_threads(threads)  # main() may run inside a longer process (the tests)


def _run(args: argparse.Namespace, device: torch.device, autocast: bool) -> int:
    _quiet()
    started = time.perf_counter()
    load_before = os.getloadavg()
    ctx = build_context(args, device, autocast)
    print(f"fishtune bench: {args.model} on {device_name(device)} ({device.type}, "
          f"{'bf16 autocast' if autocast else 'fp32'}, {torch.get_num_threads()} threads), "
          f"batch {args.batch_size}, {args.repeats} repeats", flush=True)

    comparisons: dict[str, Any] = {}
    for name in COMPARISONS:
        if name not in args.only or name in comparisons:
            continue
        print(f"  {name} ...", flush=True)
        torch.manual_seed(args.seed)
        if name in ("step", "memory"):
            step, memory = compare_step(ctx, args.repeats)
            comparisons.update({k: v for k, v in (("step", step), ("memory", memory)) if k in args.only})
        elif name == "fisher":
            comparisons[name] = compare_fisher(ctx, min(max(2, args.repeats), 3), args.fisher_samples)
        elif name == "epoch":
            comparisons[name] = compare_epoch(ctx, max(2, math.ceil(args.repeats / 3)), args.epoch_batches)
        else:
            comparisons[name] = compare_inference(ctx, args.repeats)

    env = environment(device)
    params = ctx.lora.count
    result = {
        "benchmark": "fishtune bench",
        "created_at": dt.datetime.now().isoformat(timespec="seconds"),
        "model": args.model, "model_source": ctx.model_source,
        "device": {"type": device.type, "name": device_name(device), "torch_threads": torch.get_num_threads(),
                   **env["hardware"]},
        "precision": "bf16 autocast" if autocast else "fp32",
        "versions": env["versions"], "git": env["git"], "args": {**vars(args), "out": str(args.out)},
        "sizes": {"model_params": sum(p.numel() for p in ctx.base.parameters()),
                  "lora_params": params(ctx.lora.method_params), "head_params": params(ctx.lora.head_params),
                  "lora": LORA, "batch_size": args.batch_size, "fisher_samples": args.fisher_samples,
                  "epoch_batches": args.epoch_batches, "max_length": MAX_LENGTH, "pad_to_multiple_of": PAD_MULTIPLE,
                  "train_pool": len(ctx.train), "mean_train_length": statistics.mean(ctx.train.lengths())},
        "comparisons": comparisons,
        "load_average_1min": {"start": load_before[0], "end": os.getloadavg()[0]},
        "wall_s": round(time.perf_counter() - started, 1),
    }
    for name in ("step", "inference"):
        if name in comparisons:
            result["sizes"][f"{name}_batch_shape"] = comparisons[name]["batch_shape"]
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    path = Path(args.out) / f"{args.model}-{device.type}-{stamp}.json"
    atomic_write_json(path, result)
    print()
    print(format_table(comparisons))
    print(f"\nwrote {path} ({result['wall_s']} s)")
    return 0


def _quiet() -> None:
    """Silence the libraries' start-up chatter (new classifier head, etc.)."""
    warnings.filterwarnings("ignore", message=".*newly initialized.*")
    warnings.filterwarnings("ignore", category=FutureWarning)
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except ImportError:
        pass
