"""What every comparison shares: settings, the model and data (`Context`), interleaved timing."""

from __future__ import annotations

import argparse
import copy
import importlib.resources
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf
from torch import Tensor, nn

from ..batching import Encoded, collate, encode
from ..data import DEFAULT_GLUE_DIR, load_split
from ..frozen import EntryMask
from ..masking import select_mask
from ..methods import MethodSetup, apply_method
from ..models import MINILM_PACKAGE, load_model, package_model_dir, uses_token_type_ids
from ..tasks import get_task
from ..train import Trainer, linear_schedule, make_optimizer, model_inputs, seed_everything

MODELS = ("minilm-l6", "tiny-bert", "roberta-base")
LORA = {"name": "lora", "r": 16, "alpha": 32, "dropout": 0.1, "target_modules": ["query", "value"]}
LR = 2e-3
MAX_LENGTH = 128          # the truncation length (and what a pad-to-max loop would pad every batch to)
PAD_MULTIPLE = 8          # fishtune's default train.pad_to_multiple_of
FISHER_BATCH = 32         # fishtune's default mask.fisher_batch_size
TOTAL_STEPS = 10**6       # for the step schedulers: the learning rate never reaches zero during the bench

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
    tokenizer: Any
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
    return interleave_fresh(lambda: fn_a, lambda: fn_b, repeats, device=device, warmup=warmup)


def interleave_fresh(make_a: Callable[[], Callable[[], Any]], make_b: Callable[[], Callable[[], Any]],
                     repeats: int, *, device: torch.device, warmup: int = 1) -> tuple[list[float], list[float]]:
    """Like `interleave`, but each call is built afresh by make_a()/make_b(), untimed, just before it runs.

    For arms whose call changes what it runs on (a training run starts from fresh weights each time).
    """
    for _ in range(warmup):
        make_a()()
        make_b()()
    times_a: list[float] = []
    times_b: list[float] = []
    for _ in range(repeats):
        for make, times in ((make_a, times_a), (make_b, times_b)):
            fn = make()
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

        tokenizer = AutoTokenizer.from_pretrained(str(package_model_dir(MINILM_PACKAGE)), trust_remote_code=False)
        torch.manual_seed(seed)
        config = RobertaConfig(num_labels=task.num_labels, pad_token_id=tokenizer.pad_token_id)
        return RobertaForSequenceClassification(config), tokenizer, "random-init RobertaConfig() (MiniLM tokenizer)"
    cfg = OmegaConf.load(str(importlib.resources.files("fishtune.configs") / "model" / f"{name}.yaml"))
    loaded = load_model(cfg, task, seed=seed)
    at = f"@{loaded.revision}" if loaded.revision else ""  # a Hub model: the snapshot commit benchmarked
    return loaded.model, loaded.tokenizer, loaded.source + at


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
    return Context(args.model, source, device, autocast, base, lora, tokenizer, tokenizer.pad_token_id, train, dev,
                   args.batch_size, args.seed)


def fixed_batch(ctx: Context, data: Encoded, *, labels: bool = True) -> Batch:
    """The first `batch_size` examples of `data`, padded to their longest (multiple of 8), on the device."""
    batch = collate(data, range(min(ctx.batch_size, len(data))), pad_id=ctx.pad_id, multiple=PAD_MULTIPLE)
    batch = {k: v.to(ctx.device) for k, v in batch.items()}
    return batch if labels else model_inputs(batch)


def train_copy(ctx: Context) -> nn.Module:
    """A fresh copy of the LoRA model on the device, in training mode."""
    return copy.deepcopy(ctx.lora.model).to(ctx.device).train()


def vanilla_step(ctx: Context, model: nn.Module) -> Callable[[Batch], Tensor]:
    """A plain PEFT LoRA training step, written the obvious way (HF scheduler, HF loss), with the
    masked arm's optimizer (`make_optimizer`: AdamW, fused on CUDA, no weight decay), so the two arms
    differ by the mask alone."""
    from transformers import get_linear_schedule_with_warmup

    opt = make_optimizer([p for p in model.parameters() if p.requires_grad], lr=LR, weight_decay=0.0,
                         device=ctx.device)
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
    entry_mask.attach(opt)  # as Trainer.fit does: the mask's hooks run inside backward() and opt.step()
    sched = linear_schedule(opt, warmup_steps=0, total_steps=TOTAL_STEPS)
    return (lambda batch: trainer._step(batch, opt, sched)), entry_mask, opt


def tensor_bytes(tensors: list[Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)

