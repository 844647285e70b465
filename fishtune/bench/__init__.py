"""`fishtune bench`: how much fishtune's machinery costs next to what users would run instead.

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
- ``epoch``: training throughput of a short vanilla-LoRA run through fishtune's ``Trainer``
  (length-grouped batches, dynamic padding) vs transformers' ``Trainer`` + PEFT at its own speed
  settings (``group_by_length``, ``DataCollatorWithPadding``, no eval/saving/reporting), same model,
  examples, batch size, steps and schedule shape.
- ``inference``: a merged LoRA model (``merge_and_unload()``) vs the base model without LoRA on the
  same eval batch (should be ~1.00); then un-merged LoRA and each AdapterHub method of
  ``fishtune.methods`` (bottleneck adapters, prefix tuning, UniPELT), each paired with the base model.

Never read a single number in isolation: the ratios are what the benchmark is for.
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import os
import statistics
import sys
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

from ..atomic import atomic_write_json
from ..errors import ConfigError, FishtuneError
from ..record import environment
from ..runner import pick_device
from .common import LORA, MAX_LENGTH, MODELS, PAD_MULTIPLE, build_context, device_name
from .epoch import compare_epoch
from .fisher import compare_fisher
from .inference import compare_inference
from .step import compare_step

__all__ = ["COMPARISONS", "MODELS", "format_table", "main", "parse_args"]

COMPARISONS = ("step", "memory", "fisher", "epoch", "inference")
# Defaults that depend on the device: (CPU, CUDA). The CPU defaults take ~5 min with MiniLM on 1 thread
# of a busy machine; the CUDA ones ~3 min with roberta-base (scripts/gpu_check.sh allows 300 s).
DEFAULT_REPEATS = (10, 30)       # epoch runs a third as many (>= 2), fisher 2-3: their rounds are long
DEFAULT_FISHER_SAMPLES = (64, 512)
DEFAULT_EPOCH_BATCHES = (40, 50)  # steps per training run: the Trainer's fixed cost per train() stays small


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
        if name == "epoch":
            padded = c["padded_tokens"]
            rows.append(("", "", "", "", "", f"{c['loop_ratio']:.3f} = {c['loop_ratio_label']}"))
            rows.append(("", "", "", "", "", f"{c['steps']} steps; padded tokens: Trainer "
                         f"{statistics.median(padded['trainer_per_run']):.0f}, fishtune {padded['fishtune']} "
                         f"(real {c['real_tokens']}; pad-to-128 would be {padded['pad_to_128_not_timed']})"))
        if name == "inference":
            for key in c.get("arms", ["merged", "unmerged"])[1:]:
                u = c[key]
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
                   help=f"training steps per run in the epoch comparison, both trainers (default "
                        f"{DEFAULT_EPOCH_BATCHES[0]} CPU, {DEFAULT_EPOCH_BATCHES[1]} CUDA)")
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
        check_out(args.out)   # before any work: a bad --out must not cost the whole benchmark
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
    except FishtuneError as err:   # e.g. the JSON cannot be written after all (the table is printed first)
        print(f"fishtune bench: error: {err}", file=sys.stderr)
        return 1
    finally:
        torch.set_num_threads(threads)  # main() may run inside a longer process (the tests)


def check_out(out: Path) -> None:
    """`--out` must be a folder or one that can be created: no existing part of it a file, and the
    nearest existing folder writable (one `ConfigError` line otherwise)."""
    for path in (out, *out.parents):
        if path.exists():
            if not path.is_dir():
                raise ConfigError(f"--out {out}: {path} is a file, not a folder; choose another --out")
            if not os.access(path, os.W_OK | os.X_OK):
                raise ConfigError(f"--out {out}: {path} is not writable; choose another --out")
            return


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
    print()
    print(format_table(comparisons), flush=True)   # shown even if the JSON cannot be written
    atomic_write_json(path, result)
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
