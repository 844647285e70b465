"""The training loop: AdamW, linear warm-up/decay, dev evaluation each epoch, checkpoints.

It knows nothing of LoRA, masks or Fisher: it trains whatever requires grad. An optional mask
(`fishtune.FishMask`, or a bare `fishtune.frozen.EntryMask`) is attached to its optimizer exactly as
a user attaches one to theirs (`mask.attach(optimizer)`): the mask's hooks mask each gradient
inside `backward()` (so clipping sees the masked gradients) and restore the frozen entries after
each optimizer step; there is no other masking code path. The hot loop has no host sync except
every `log_every` steps (loss readout and the NaN check).
"""

from __future__ import annotations

import logging
import math
import random
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import Tensor, nn
from tqdm.auto import tqdm

from .batching import Encoded, eval_order, iterate, train_order
from .checkpoint import load_checkpoint, save_checkpoint
from .errors import DivergedError

log = logging.getLogger(__name__)


class Maskable(Protocol):
    """What the trainer needs of a mask: `FishMask` and `EntryMask` both have it."""

    def attach(self, optimizer: torch.optim.Optimizer) -> object: ...

    def detach(self) -> None: ...


def task_loss(logits: Tensor, labels: Tensor, *, reduction: str = "mean") -> Tensor:
    """Cross-entropy for classification, MSE for regression (a single output)."""
    if labels.is_floating_point():
        return F.mse_loss(logits.squeeze(-1).float(), labels, reduction=reduction)
    return F.cross_entropy(logits.float(), labels, reduction=reduction)


def model_inputs(batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
    return {k: v for k, v in batch.items() if k != "labels"}


def make_optimizer(params: list[Tensor], *, lr: float, weight_decay: float, device: torch.device) -> torch.optim.AdamW:
    """AdamW; fused kernels on CUDA (one launch for all tensors)."""
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=device.type == "cuda")


def linear_schedule(optimizer: torch.optim.Optimizer, *, warmup_steps: int, total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """lr(t) = lr * t / w for t < w, then lr * (T - t) / (T - w) (linear decay to zero at T)."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


@torch.no_grad()
def predict(model: nn.Module, data: Encoded, *, batch_size: int, pad_id: int, multiple: int,
            device: torch.device, autocast: bool) -> np.ndarray:
    """Logits for every example of `data`, in the original order (float32)."""
    was_training = model.training
    model.eval()
    batches = eval_order(data.lengths(), batch_size=batch_size)
    outputs: list[Tensor] = []
    for batch in iterate(data, batches, pad_id=pad_id, multiple=multiple, device=device):
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            outputs.append(model(**model_inputs(batch)).logits.float())
    model.train(was_training)
    logits = torch.cat(outputs).cpu().numpy()
    order = np.array([i for b in batches for i in b])
    result = np.empty_like(logits)
    result[order] = logits
    return result


@dataclass
class Progress:
    """Where training stands; saved in every checkpoint so a rerun resumes exactly here."""

    epoch: int = 0               # epochs completed
    step_in_epoch: int = 0       # optimizer steps done in the current epoch
    global_step: int = 0
    loss_sum: float = 0.0        # sum of the current epoch's step losses so far
    history: list[dict] = field(default_factory=list)
    time_train: float = 0.0
    time_eval: float = 0.0


class Trainer:
    """Trains `model`'s requires-grad parameters on `train_data`, evaluating after each epoch."""

    def __init__(self, model: nn.Module, cfg: DictConfig, *, device: torch.device, autocast: bool,
                 seed: int, pad_id: int, evaluate: Callable[[], dict[str, float]],
                 entry_mask: Maskable | None = None, checkpoint_path: Path | None = None,
                 on_epoch_end: Callable[[Progress], None] | None = None):
        self.model, self.cfg, self.device, self.autocast = model, cfg, device, autocast
        self.seed, self.pad_id, self.evaluate = seed, pad_id, evaluate
        self.entry_mask, self.checkpoint_path, self.on_epoch_end = entry_mask, checkpoint_path, on_epoch_end
        self.params = [p for p in model.parameters() if p.requires_grad]

    def fit(self, train_data: Encoded, *, resume: bool = True) -> Progress:
        cfg = self.cfg
        lengths = train_data.lengths()
        steps_per_epoch = math.ceil(len(train_data) / cfg.batch_size)
        total = steps_per_epoch * cfg.epochs
        if cfg.max_steps:
            total = min(total, cfg.max_steps)
        optimizer = make_optimizer(self.params, lr=float(cfg.lr), weight_decay=float(cfg.weight_decay), device=self.device)
        scheduler = linear_schedule(optimizer, warmup_steps=round(cfg.warmup_ratio * total), total_steps=total)
        progress = Progress()
        # Attached before a checkpoint is loaded: attaching records the frozen values the steps
        # restore, and a checkpoint holds exactly those at every frozen entry.
        if self.entry_mask is not None:
            self.entry_mask.attach(optimizer)
        try:
            if resume and self.checkpoint_path is not None and self.checkpoint_path.exists():
                progress = load_checkpoint(self.checkpoint_path, self.model, optimizer, scheduler)
                log.info("resumed from %s at epoch %d step %d", self.checkpoint_path, progress.epoch,
                         progress.step_in_epoch)
            if progress.global_step == 0:
                torch.manual_seed(self.seed)  # the dropout stream starts the same whatever ran before

            self.model.train()
            while progress.epoch < cfg.epochs and progress.global_step < total:
                self._run_epoch(train_data, lengths, progress, optimizer, scheduler, total)
        finally:
            if self.entry_mask is not None:
                self.entry_mask.detach()
        return progress

    def _run_epoch(self, data: Encoded, lengths: list[int], progress: Progress,
                   optimizer: torch.optim.Optimizer, scheduler, total: int) -> None:
        cfg = self.cfg
        batches = train_order(lengths, batch_size=cfg.batch_size, seed=self.seed, epoch=progress.epoch,
                              group_by_length=cfg.group_by_length)
        skip = self._skipped = progress.step_in_epoch
        todo = batches[skip: skip + (total - progress.global_step)]
        loss_sum = torch.tensor(progress.loss_sum, device=self.device)
        # A bar on a terminal; in a file (CI, `> log`, SLURM) a plain line every ~5% instead of
        # hundreds of carriage-return updates.
        interactive = bool(cfg.progress) and sys.stderr.isatty()
        bar = tqdm(total=len(batches), initial=skip, desc=f"epoch {progress.epoch + 1}/{cfg.epochs}",
                   disable=not interactive, leave=False, dynamic_ncols=True)
        plain_every = max(1, len(batches) // 20) if cfg.progress and not interactive else 0
        start = time.perf_counter()
        examples = 0
        for batch in iterate(data, todo, pad_id=self.pad_id, multiple=cfg.pad_to_multiple_of, device=self.device):
            loss = self._step(batch, optimizer, scheduler)
            loss_sum += loss.detach()
            examples += len(batch["labels"])
            progress.step_in_epoch += 1
            progress.global_step += 1
            bar.update(1)
            if progress.global_step % cfg.log_every == 0:
                self._check_finite(loss_sum, progress)
                bar.set_postfix(loss=f"{loss_sum.item() / progress.step_in_epoch:.4f}",
                                ex_s=f"{examples / (time.perf_counter() - start):.0f}")
            if plain_every and progress.step_in_epoch % plain_every == 0:
                self._plain_progress(progress, len(batches), loss_sum, examples, time.perf_counter() - start)
            if cfg.checkpoint_every and progress.global_step % cfg.checkpoint_every == 0:
                progress.loss_sum = float(loss_sum)
                self._checkpoint(progress, optimizer, scheduler)
        bar.close()
        self._check_finite(loss_sum, progress)
        train_time = time.perf_counter() - start
        progress.time_train += train_time

        start = time.perf_counter()
        metrics = self.evaluate()
        eval_time = time.perf_counter() - start
        progress.time_eval += eval_time
        steps = max(1, progress.step_in_epoch)
        entry = {"epoch": progress.epoch + 1, "steps": progress.global_step,
                 "train_loss": round(float(loss_sum) / steps, 6), "dev": metrics,
                 "time_s": {"train": round(train_time, 3), "eval": round(eval_time, 3)}}
        progress.history.append(entry)
        log.info("epoch %d/%d  loss %.4f  dev %s  %.1f s (%.0f ex/s)", progress.epoch + 1, cfg.epochs,
                 entry["train_loss"], _fmt(metrics), train_time, examples / max(train_time, 1e-9))
        progress.epoch += 1
        progress.step_in_epoch = 0
        progress.loss_sum = 0.0
        self._checkpoint(progress, optimizer, scheduler)
        if self.on_epoch_end is not None:
            self.on_epoch_end(progress)

    def _plain_progress(self, progress: Progress, steps: int, loss_sum: Tensor, examples: int, elapsed: float) -> None:
        """One log line: epoch, step, share done, mean loss so far, ex/s and the epoch's ETA."""
        done = progress.step_in_epoch
        rate = examples / max(elapsed, 1e-9)
        eta = (steps - done) * elapsed / max(1, done - self._skipped)
        log.info("epoch %d/%d  step %d/%d (%d%%)  loss %.4f  %.0f ex/s  ETA %dm%02ds", progress.epoch + 1,
                 self.cfg.epochs, done, steps, 100 * done // steps, float(loss_sum) / done, rate,
                 eta // 60, eta % 60)

    def _step(self, batch: dict[str, Tensor], optimizer: torch.optim.Optimizer, scheduler) -> Tensor:
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.autocast):
            logits = self.model(**model_inputs(batch)).logits
        loss = task_loss(logits, batch["labels"])
        loss.backward()                 # an attached mask's hooks mask the gradients here
        if self.cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.params, float(self.cfg.grad_clip), foreach=True)
        optimizer.step()                # ... and restore the frozen entries right after the step
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        return loss

    def _check_finite(self, loss_sum: Tensor, progress: Progress) -> None:
        if not torch.isfinite(loss_sum):
            raise DivergedError(f"training loss became {float(loss_sum)} by step {progress.global_step}; "
                                "lower train.lr or check the data")

    def _checkpoint(self, progress: Progress, optimizer: torch.optim.Optimizer, scheduler) -> None:
        if self.checkpoint_path is not None:
            save_checkpoint(self.checkpoint_path, self.model, optimizer, scheduler, progress)


def _fmt(metrics: Mapping[str, float]) -> str:
    score = metrics.get("score")
    rest = ", ".join(f"{k} {v:.2f}" for k, v in metrics.items() if k != "score")
    return f"score {score:.2f} ({rest})"


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
