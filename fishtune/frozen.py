"""Masked training that never moves a frozen entry.

A fixed boolean mask M per parameter says which entries train. Two things can move an entry
whose gradient is zero: AdamW's decoupled weight decay (p -= lr * wd * p) and momentum from
earlier non-zero gradients. So each step does, for the partially masked tensors only:

    after backward:        g <- g * M                       (clipping and Adam see masked grads)
    after optimizer.step:  p <- p * M + p0 * (1 - M)        (p0: values when the mask was bound)

`EntryMask.attach(optimizer)` does both through hooks PyTorch provides for exactly this, so any
training loop (fishtune's `Trainer`, transformers' `Trainer`, a user's own) gets them without a
change: `Tensor.register_post_accumulate_grad_hook` masks each gradient once autograd has
accumulated it into `.grad` (so before any clipping, gradient-accumulation sums stay masked, and
the clip norm is that of the masked gradients), and `Optimizer.register_step_post_hook` restores
the frozen entries after each optimizer step (a skipped step, e.g. AMP overflow, moves nothing and
restores nothing). The restore is two `torch._foreach_*` calls over all masked tensors: no
per-parameter Python loop and no host sync. It is exact: x * 1 + 0 == x and x * 0 + p0 == p0 bit
for bit (for finite x). Tensors with no selected entry are frozen outright (requires_grad off, so
no gradient and no optimizer update or state); tensors with every entry selected need nothing.
`mask_grads` / `restore_frozen` are the two operations, callable by hand as well.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from .errors import ConfigError


class EntryMask:
    """Applies a fixed per-entry mask to a model's parameters during training.

    Built on a model, it turns requires_grad off for tensors with no selected entry and records
    p0 * (1 - M) for the partially masked ones (the values frozen entries are restored to). With
    `snapshot=True` it also keeps a copy of the wholly frozen tensors on the CPU, so that
    `frozen_changed` can audit them too.
    """

    def __init__(self, model: nn.Module, mask: Mapping[str, Tensor], *, snapshot: bool = False):
        params = dict(model.named_parameters())
        unknown = sorted(set(mask) - set(params))
        if unknown:
            raise ConfigError(f"the mask names parameters the model does not have, e.g. {unknown[0]!r} "
                              f"({len(unknown)} in all); was it built on another model?")
        self.params: list[Tensor] = []
        self.keep: list[Tensor] = []
        self.frozen_values: list[Tensor] = []
        self.frozen_tensors: dict[str, Tensor] = {}   # wholly frozen: name -> CPU copy (snapshot only)
        self._handles: list = []
        for name in sorted(mask):
            p = params[name]
            if tuple(mask[name].shape) != tuple(p.shape):
                raise ConfigError(f"mask shape {tuple(mask[name].shape)} does not match parameter {name!r} "
                                  f"{tuple(p.shape)}")
            m = mask[name].to(p.device, torch.bool)
            if not bool(m.any()):
                p.requires_grad_(False)
                if snapshot:
                    self.frozen_tensors[name] = p.detach().to("cpu", copy=True)
            elif not bool(m.all()):
                keep = m.to(p.dtype)
                self.params.append(p)
                self.keep.append(keep)
                self.frozen_values.append(p.detach() * (1 - keep))
        self._model_params = params

    def mask_grads(self) -> None:
        """g <- g * M for every partially masked tensor (what the gradient hooks do, all at once)."""
        grads = [p.grad for p in self.params if p.grad is not None]
        if grads:
            torch._foreach_mul_(grads, [k for p, k in zip(self.params, self.keep) if p.grad is not None])

    @torch.no_grad()
    def restore_frozen(self) -> None:
        """p <- p * M + p0 * (1 - M) (call after the optimizer step)."""
        if self.params:
            torch._foreach_mul_(self.params, self.keep)
            torch._foreach_add_(self.params, self.frozen_values)

    # --- hooks ------------------------------------------------------------------------------------

    @property
    def attached(self) -> bool:
        return bool(self._handles)

    def attach(self, optimizer: torch.optim.Optimizer) -> "EntryMask":
        """Mask every gradient once accumulated and restore frozen entries after every step of
        `optimizer` (module docstring); `detach()` removes both. Wrappers that keep the torch
        optimizer in `.optimizer` (accelerate's `AcceleratedOptimizer`, as in transformers' Trainer)
        are unwrapped, so the restore follows the steps that really ran."""
        if self._handles:
            raise RuntimeError("this mask is already attached to an optimizer; detach() it first")
        inner = torch_optimizer(optimizer)
        for p, keep in zip(self.params, self.keep):
            self._handles.append(p.register_post_accumulate_grad_hook(_grad_masker(keep)))
        self._handles.append(inner.register_step_post_hook(lambda _opt, _args, _kwargs: self.restore_frozen()))
        return self

    def detach(self) -> None:
        """Remove the hooks `attach` registered (a no-op when not attached)."""
        for handle in self._handles:
            handle.remove()
        self._handles = []

    # --- audit ------------------------------------------------------------------------------------

    def frozen_changed(self) -> int:
        """Frozen entries whose bits differ from the values they had when the mask was built: those of
        the partially masked tensors, and (with `snapshot=True`) of the wholly frozen ones."""
        changed = 0
        for p, keep, frozen in zip(self.params, self.keep, self.frozen_values):
            differs = _bits(p.detach()) != _bits(frozen)
            changed += int((differs & (keep == 0)).sum())
        for name, before in self.frozen_tensors.items():
            changed += int((_bits(self._model_params[name].detach().cpu()) != _bits(before)).sum())
        return changed

    def storage_bytes(self) -> int:
        """Extra memory the mask costs during training (masks and frozen values)."""
        return sum(t.numel() * t.element_size() for t in self.keep + self.frozen_values)


def torch_optimizer(optimizer) -> torch.optim.Optimizer:
    """The `torch.optim.Optimizer` inside wrappers that keep it in `.optimizer` (accelerate's)."""
    inner = optimizer
    while not _is_plain_optimizer(inner) and isinstance(getattr(inner, "optimizer", None), torch.optim.Optimizer):
        inner = inner.optimizer
    if not isinstance(inner, torch.optim.Optimizer):
        raise ConfigError(f"attach() needs a torch.optim.Optimizer (or a wrapper holding one in .optimizer), "
                          f"got {type(optimizer).__name__}")
    return inner


def _is_plain_optimizer(obj) -> bool:
    """A torch optimizer that is not a wrapper around another one."""
    return isinstance(obj, torch.optim.Optimizer) and not isinstance(getattr(obj, "optimizer", None),
                                                                       torch.optim.Optimizer)


def _grad_masker(keep: Tensor):
    def hook(p: Tensor) -> None:
        if p.grad is not None:
            p.grad.mul_(keep)

    return hook


def count_changed(model: nn.Module, initial: Mapping[str, Tensor], mask: Mapping[str, Tensor] | None = None) -> int:
    """Entries of `initial`'s tensors whose bits now differ, counting only those outside `mask` if
    given (0 then means frozen stayed frozen); without a mask, every entry that moved."""
    params = dict(model.named_parameters())
    changed = 0
    for name, before in initial.items():
        differs = _bits(params[name].detach().cpu()) != _bits(before.cpu())
        if mask is not None:
            differs &= ~mask[name].cpu()
        changed += int(differs.sum())
    return changed


def _bits(t: Tensor) -> Tensor:
    """Reinterpret a float tensor as integers of the same width (compares -0.0, NaN exactly)."""
    by_size = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}
    return t.contiguous().view(by_size[t.element_size()])
