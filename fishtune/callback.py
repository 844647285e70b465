"""`FishCallback`: a FISH mask inside transformers' `Trainer`.

    Trainer(..., callbacks=[FishCallback(keep_ratio=0.5, strategy="fish")])

Event: `on_train_begin`. In transformers 4.57 it is the first event after `create_optimizer` and
`accelerator.prepare` (and after a checkpoint's weights are loaded, when resuming), and its kwargs
carry `model` (the unwrapped model: the PeftModel, the AdapterHub or plain transformers model),
`optimizer` (accelerate's `AcceleratedOptimizer`; the mask hooks the torch optimizer inside it) and
`train_dataloader`. There the callback

1. computes the mask with `FishMask.from_fisher` (candidates, families, pairs and the warm-up rule
   as documented there: with `fisher_at="auto"` a dense warm-up of `warmup_steps` steps at the
   Trainer's learning rate, then the Fisher, then every trainable parameter restored, when some
   candidate's partner factor starts at zero, e.g. PEFT LoRA's B or AdapterHub ParBn's up).
   The examples come from the Trainer's own training set and collator (`train_dataloader.dataset`,
   `.collate_fn`), read through a plain DataLoader of `fisher_batch_size` with a shuffle seeded by
   `args.seed` (iterating the Trainer's accelerate-prepared loader itself would draw from its
   sampler's RNG and register it with accelerate's gradient state); the Fisher takes the first
   `num_samples` examples of that shuffle. The warm-up and the Fisher leave the RNG streams as they
   were, so the Trainer's dropout and data order do not depend on whether a mask was computed;
2. saves it as `<output_dir>/fish_mask.safetensors` (process zero);
3. attaches it to the Trainer's optimizer (`FishMask.attach`): every gradient is masked inside
   `backward()`, before the Trainer's `max_grad_norm` clipping (the clip norm is that of the
   masked gradients, and gradient accumulation sums masked gradients), and the frozen entries are
   restored after every optimizer step, so weight decay and momentum never move them.

`on_train_end` detaches the hooks (the parameters with nothing selected require grad again) and
audits (`FishMask.verify`): a frozen entry that moved raises a FishtuneError; the counts are in
`callback.audit`. Resuming (`trainer.train(resume_from_checkpoint=...)`) reloads
`<output_dir>/fish_mask.safetensors` instead of computing a new mask (its frozen entries hold their
initial values in every checkpoint, so binding there restores exactly those). Another `train()`
on the same model that is not a resume keeps the mask the callback already has (computed once,
saved once). A mask computed elsewhere can be passed as `FishCallback(mask=FishMask or path)`.

Distributed (torchrun, DDP). The Trainer wraps the model in DistributedDataParallel before
`on_train_begin`, so the mask is bound after the wrapping: while torch.distributed is initialized
the parameters with nothing selected keep requiring grad and are held in place by the hooks
(`fishtune.frozen`), and `ddp_find_unused_parameters=False` works. Each process computes its own
mask, from the same seeded sample of the training set, then takes rank 0's (`rank0_mask`): a
non-deterministic kernel can flip a near-tie between processes, and differing masks would let the
replicas drift apart. `mask=` passes every process the same one.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback

from .errors import ConfigError
from .fishmask import FISHER_AT, FishMask, LossFn, check_budget
from .masking import SCOPES, STRATEGIES

log = logging.getLogger(__name__)

MASK_FILE = "fish_mask.safetensors"


class FishCallback(TrainerCallback):
    """Compute a FISH mask when training starts and enforce it in the Trainer's optimizer."""

    def __init__(self, keep: int | None = None, keep_ratio: float | None = None, *, strategy: str = "fish",
                 live: bool = False, scope: str = "global", labels: str = "empirical", estimator: str = "auto",
                 num_samples: int = 1024, fisher_at: str = "auto", warmup_steps: int = 50,
                 warmup_lr: float | None = None, fisher_batch_size: int = 32, params: Sequence[str] | None = None,
                 head: Sequence[str] | None = None, loss_fn: LossFn | None = None, seed: int | None = None,
                 mask: FishMask | str | Path | None = None, save: bool = True):
        for key, value, options in (("strategy", strategy, STRATEGIES), ("scope", scope, SCOPES),
                                    ("fisher_at", fisher_at, FISHER_AT)):
            if value not in options:
                raise ConfigError(f"FishCallback: {key} must be one of {', '.join(options)}, got {value!r}")
        if mask is not None and (keep is not None or keep_ratio is not None):
            raise ConfigError("FishCallback: mask= is the mask to train with; keep=/keep_ratio= would be ignored: "
                              "pass one or the other")
        if mask is None:
            try:
                check_budget(keep, keep_ratio)   # now, not once the Trainer has set everything up
            except ConfigError as err:
                raise ConfigError(f"FishCallback: {err}") from None
        self.options: dict[str, Any] = dict(
            keep=keep, keep_ratio=keep_ratio, strategy=strategy, live=live, scope=scope, labels=labels,
            estimator=estimator, num_samples=num_samples, fisher_at=fisher_at, warmup_steps=warmup_steps,
            params=params, head=head, loss_fn=loss_fn)
        self.warmup_lr, self.fisher_batch_size, self.seed, self.save = warmup_lr, fisher_batch_size, seed, save
        self.mask: FishMask | None = FishMask.load(mask) if isinstance(mask, (str, Path)) else mask
        self._given = mask is not None
        self.audit: dict[str, int] | None = None

    def on_train_begin(self, args, state, control, model=None, optimizer=None, train_dataloader=None, **kwargs):
        if model is None or optimizer is None:
            raise ConfigError("FishCallback needs the Trainer's model and optimizer at on_train_begin "
                              "(DeepSpeed/FSDP optimizers are not supported)")
        saved = Path(args.output_dir) / MASK_FILE
        if self._given:
            pass
        elif state.global_step > 0:   # resuming from a checkpoint: the mask of the first session
            if not saved.is_file():
                raise ConfigError(f"FishCallback: resuming at step {state.global_step} but {saved} is missing; "
                                  "pass FishCallback(mask=...) with the mask the run started with")
            self.mask = FishMask.load(saved)
            log.info("FishCallback: resumed with the mask in %s", saved)
        elif self.mask is not None and self.mask.model is model:
            log.info("FishCallback: train() again on the same model: keeping the mask computed the first time")
        else:
            self.mask = rank0_mask(self._compute(args, model, train_dataloader), model)
            if self.save and args.should_save:
                saved.parent.mkdir(parents=True, exist_ok=True)
                self.mask.save(saved)
        self.mask.attach(optimizer, model=model)
        log.info("FishCallback: %s", self.mask)

    def on_train_end(self, args, state, control, model=None, **kwargs):
        if self.mask is None:
            return
        self.mask.detach()
        self.audit = self.mask.verify(model)
        log.info("FishCallback: frozen entries unchanged (%s)", self.audit)

    def _compute(self, args, model: torch.nn.Module, train_dataloader) -> FishMask:
        seed = args.seed if self.seed is None else self.seed
        batches = None
        if self.options["strategy"] != "random":
            if train_dataloader is None:
                raise ConfigError("FishCallback: the Trainer passed no train_dataloader to compute the Fisher from")
            batches = _loader(train_dataloader, self.fisher_batch_size, seed)
        lr = args.learning_rate if self.warmup_lr is None else self.warmup_lr
        return FishMask.from_fisher(model, batches, warmup_lr=float(lr), seed=int(seed),
                                    autocast=bool(getattr(args, "bf16", False)), **self.options)


def rank0_mask(mask: FishMask, model: torch.nn.Module) -> FishMask:
    """`mask` with the entries of rank 0's, under torch.distributed with several processes (each
    rank broadcasts its tensors in name order; a rank whose own mask differed logs how many entries
    it took). Alone, or without torch.distributed, `mask` as it is."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return mask
    on_gpu = dist.get_backend() == "nccl"   # NCCL moves CUDA tensors only
    device = next(model.parameters()).device if on_gpu else torch.device("cpu")
    differ = 0
    for name in sorted(mask.mask):
        entries = mask.mask[name].to(device, torch.uint8)
        dist.broadcast(entries, src=0)
        theirs = entries.to("cpu", torch.bool)
        differ += int((theirs != mask.mask[name]).sum())
        mask.mask[name] = theirs
    if differ:
        log.warning("FishCallback: rank %d's own mask differed from rank 0's in %d entries (near-ties ordered "
                    "differently); every rank trains with rank 0's", dist.get_rank(), differ)
    return mask


def _loader(train_dataloader, batch_size: int, seed: int):
    """A plain DataLoader over the Trainer's training set and collator (module docstring)."""
    from torch.utils.data import DataLoader, IterableDataset

    dataset = train_dataloader.dataset
    collate = getattr(train_dataloader, "collate_fn", None)
    if isinstance(dataset, IterableDataset):
        return DataLoader(dataset, batch_size=batch_size, collate_fn=collate)
    generator = torch.Generator().manual_seed(int(seed))
    return DataLoader(dataset, batch_size=batch_size, shuffle=True, generator=generator, collate_fn=collate)
