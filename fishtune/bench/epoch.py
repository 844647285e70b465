"""`epoch`: a short LoRA training run through fishtune's `Trainer` vs transformers' `Trainer` + PEFT.

What a user would otherwise run is the transformers `Trainer` at its own speed settings, so that is
the reference arm: `DataCollatorWithPadding` (dynamic padding; to a multiple of 8 only under bf16, as
transformers' run_glue.py does), `group_by_length=True`, no evaluation, no saving, no reporting, its
default optimizer, linear warm-up then decay to zero. fishtune's arm is `Trainer.fit` with the
shipped `train` defaults (length-grouped batches, padding to a multiple of 8). Both arms: the same
PEFT LoRA weights (a fresh copy per run), the same examples, batch size, number of steps, learning
rate and schedule shape, warm-up share, weight decay and gradient clipping, fp32 on CPU and bf16
autocast on CUDA. A run is timed from `fit()` / `train()` to its return (each builds its optimizer
and batches inside); building the trainer objects and copying the weights is not timed.

A loop padding every batch to 128 is not timed any more (on SST-2 it was ~8x slower: nobody should
run it); its padded-token count stays in the JSON for scale.
"""

from __future__ import annotations

import copy
import importlib.resources
import math
import statistics
import tempfile
import time
from collections.abc import Callable
from typing import Any

from omegaconf import DictConfig, OmegaConf

from ..batching import Encoded, train_order
from ..train import Trainer
from .common import LR, MAX_LENGTH, PAD_MULTIPLE, Context, arm, interleave_fresh, train_copy

WARMUP_RUN_STEPS = 2      # the untimed warm-up run of each arm


def fishtune_train_cfg(ctx: Context, steps: int) -> DictConfig:
    """The shipped `train` defaults (configs/train/default.yaml), for one run of `steps` steps."""
    defaults = OmegaConf.load(str(importlib.resources.files("fishtune.configs") / "train" / "default.yaml"))
    return OmegaConf.merge(defaults, {"epochs": 1, "batch_size": ctx.batch_size, "lr": LR, "max_steps": steps,
                                      "progress": False, "checkpoint_every": None})


def trainer_kwargs(ctx: Context, cfg: DictConfig, steps: int, output_dir: str) -> dict[str, Any]:
    """`TrainingArguments` for the reference arm, mirroring `cfg` where both have a setting."""
    return {"output_dir": output_dir, "per_device_train_batch_size": ctx.batch_size, "max_steps": steps,
            "learning_rate": LR, "lr_scheduler_type": "linear",
            "warmup_steps": round(float(cfg.warmup_ratio) * steps),  # fishtune's rounding of its warmup_ratio
            "weight_decay": float(cfg.weight_decay), "max_grad_norm": float(cfg.grad_clip or 0.0),
            "group_by_length": True, "eval_strategy": "no", "save_strategy": "no", "report_to": [],
            "disable_tqdm": True, "bf16": ctx.autocast, "use_cpu": ctx.device.type == "cpu",
            "dataloader_pin_memory": ctx.device.type == "cuda",  # the default True only warns on a CPU
            "seed": ctx.seed, "label_names": ["labels"]}


def subset(data: Encoded, n: int) -> Encoded:
    types = data.token_type_ids[:n] if data.token_type_ids is not None else None
    return Encoded(data.input_ids[:n], types, data.labels[:n])


def hf_dataset(data: Encoded) -> Any:
    """The same tokenised examples as a `datasets.Dataset`, as a tokenizer + `.map()` would leave them."""
    from datasets import Dataset

    columns: dict[str, list] = {"input_ids": data.input_ids,
                                "attention_mask": [[1] * len(ids) for ids in data.input_ids],
                                "label": data.labels.tolist()}
    if data.token_type_ids is not None:
        columns["token_type_ids"] = data.token_type_ids
    return Dataset.from_dict(columns)


class CountingCollator:
    """The Trainer's collator, also counting the padded tokens it hands out (one integer add per batch)."""

    def __init__(self, collate: Callable[[list], dict]):
        self.collate, self.padded_tokens = collate, 0

    def __call__(self, features: list) -> dict:
        batch = self.collate(features)
        self.padded_tokens += batch["input_ids"].numel()
        return batch


def trainer_run(ctx: Context, dataset: Any, cfg: DictConfig, steps: int, output_dir: str,
                log: list[dict[str, Any]]) -> Callable[[], None]:
    """A fresh transformers `Trainer` on a fresh copy of the LoRA model; returns its (timed) train()."""
    from transformers import DataCollatorWithPadding, PrinterCallback, TrainingArguments
    from transformers import Trainer as HFTrainer

    start = time.perf_counter()
    collator = CountingCollator(DataCollatorWithPadding(ctx.tokenizer,
                                                        pad_to_multiple_of=PAD_MULTIPLE if ctx.autocast else None))
    args = TrainingArguments(**trainer_kwargs(ctx, cfg, steps, output_dir))
    trainer = HFTrainer(model=copy.deepcopy(ctx.lora.model), args=args, train_dataset=dataset,
                        data_collator=collator, processing_class=ctx.tokenizer)
    trainer.remove_callback(PrinterCallback)  # disable_tqdm=True would print the final metrics dict
    setup_s = time.perf_counter() - start

    def run() -> None:
        out = trainer.train()
        log.append({"setup_s": setup_s, "padded_tokens": collator.padded_tokens, "train_loss": out.training_loss,
                    "reported_samples_per_s": out.metrics["train_samples_per_second"],
                    "loop_s": out.metrics["train_runtime"],  # its own clock: from after its set-up to the end
                    "n_gpu": trainer.args.n_gpu})

    return run


def fishtune_run(ctx: Context, data: Encoded, cfg: DictConfig, log: list[dict[str, Any]]) -> Callable[[], None]:
    """A fresh fishtune `Trainer` on a fresh copy of the LoRA model; returns its (timed) fit()."""
    start = time.perf_counter()
    trainer = Trainer(train_copy(ctx), cfg, device=ctx.device, autocast=ctx.autocast, seed=ctx.seed,
                      pad_id=ctx.pad_id, evaluate=lambda: {"score": math.nan})
    setup_s = time.perf_counter() - start

    def run() -> None:
        progress = trainer.fit(data, resume=False)
        epoch = progress.history[-1]
        log.append({"setup_s": setup_s, "train_loss": epoch["train_loss"], "loop_s": epoch["time_s"]["train"]})

    return run


def compare_epoch(ctx: Context, repeats: int, num_batches: int) -> dict[str, Any]:
    """transformers Trainer + PEFT (A) vs fishtune's Trainer (B): `num_batches` steps on the same examples."""
    examples = min(len(ctx.train), num_batches * ctx.batch_size)
    data = subset(ctx.train, examples)
    steps = math.ceil(examples / ctx.batch_size)
    cfg = fishtune_train_cfg(ctx, steps)
    dataset = hf_dataset(data)
    theirs: list[dict[str, Any]] = []
    ours: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="fishtune-bench-trainer-") as output_dir:
        warm = min(WARMUP_RUN_STEPS, steps)  # kernels, lazy imports, the Trainer's first-use setup
        trainer_run(ctx, dataset, cfg, warm, output_dir, [])()
        fishtune_run(ctx, data, fishtune_train_cfg(ctx, warm), [])()
        times_t, times_f = interleave_fresh(lambda: trainer_run(ctx, dataset, cfg, steps, output_dir, theirs),
                                            lambda: fishtune_run(ctx, data, cfg, ours),
                                            repeats, device=ctx.device, warmup=0)
    pad_multiple = PAD_MULTIPLE if ctx.autocast else None
    a = arm("transformers Trainer + PEFT LoRA", times_t, items=examples, unit="examples_per_s")
    b = arm("fishtune Trainer, vanilla LoRA", times_f, items=examples, unit="examples_per_s")
    lengths = data.lengths()
    batches = train_order(lengths, batch_size=ctx.batch_size, seed=ctx.seed, epoch=0,
                          group_by_length=bool(cfg.group_by_length))
    multiple = int(cfg.pad_to_multiple_of or 1)
    fishtune_padded = sum(len(idx) * math.ceil(max(lengths[i] for i in idx) / multiple) * multiple for idx in batches)
    loop = {"trainer": statistics.median(r["loop_s"] for r in theirs),
            "fishtune": statistics.median(r["loop_s"] for r in ours)}
    return {
        "a": a, "b": b, "ratio": a["median_s"] / b["median_s"],
        "ratio_label": "speed-up fishtune/Trainer (examples/s)",
        "loop_ratio": loop["trainer"] / loop["fishtune"],
        "loop_ratio_label": "speed-up fishtune/Trainer inside the training loop (each trainer's own clock)",
        "loop_s_median": loop,
        "outside_loop_s_median": {"trainer": statistics.median(t - r["loop_s"] for t, r in zip(times_t, theirs)),
                                  "fishtune": statistics.median(t - r["loop_s"] for t, r in zip(times_f, ours))},
        "steps": steps, "examples": examples, "real_tokens": sum(lengths),
        "padded_tokens": {"fishtune": fishtune_padded,
                          "trainer_per_run": [r["padded_tokens"] for r in theirs],
                          "pad_to_128_not_timed": examples * MAX_LENGTH},
        "trainer": {"training_arguments": trainer_kwargs(ctx, cfg, steps, "<temp dir>"),
                    "data_collator": f"DataCollatorWithPadding(pad_to_multiple_of={pad_multiple})",
                    "setup_s_median": statistics.median(r["setup_s"] for r in theirs),
                    "reported_samples_per_s": [round(r["reported_samples_per_s"], 3) for r in theirs],
                    "train_loss": [r["train_loss"] for r in theirs], "n_gpu": theirs[0]["n_gpu"]},
        "fishtune": {"train": {k: cfg[k] for k in ("warmup_ratio", "weight_decay", "grad_clip", "group_by_length",
                                                   "pad_to_multiple_of")},
                     "setup_s_median": statistics.median(r["setup_s"] for r in ours),
                     "train_loss": [r["train_loss"] for r in ours]},
        "note": "ratio: each timed call is a whole training run from fresh weights (fit()/train() to "
                "return), built untimed (setup_s_median); loop_ratio: the step loops alone, as each trainer "
                "times them (Trainer's train_runtime starts after its gc.collect(), dataloader and optimizer "
                "set-up; fishtune's epoch time after its optimizer set-up); the train losses differ by batch "
                "order and dropout only",
    }
