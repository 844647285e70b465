"""Masked training that never moves a frozen entry.

A fixed boolean mask M per parameter says which entries train. Two things can move an entry
whose gradient is zero: AdamW's decoupled weight decay (p -= lr * wd * p) and momentum from
earlier non-zero gradients. So each step does, for the partially masked tensors only:

    after backward:        g <- g * M                       (clipping and Adam see masked grads)
    after optimizer.step:  p <- p * M + p0 * (1 - M)        (p0: values at the start)

Both are single `torch._foreach_*` calls over all masked tensors: no per-parameter Python loop
and no host sync. The second is exact: x * 1 + 0 == x and x * 0 + p0 == p0 bit for bit (for
finite x). Tensors with no selected entry are frozen outright (requires_grad off, no optimizer
state); tensors with every entry selected need nothing.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn


class EntryMask:
    """Applies a fixed per-entry mask to a model's parameters during training."""

    def __init__(self, model: nn.Module, mask: Mapping[str, Tensor]):
        params = dict(model.named_parameters())
        self.params: list[Tensor] = []
        self.keep: list[Tensor] = []
        self.frozen_values: list[Tensor] = []
        for name in sorted(mask):
            p, m = params[name], mask[name].to(params[name].device)
            if not bool(m.any()):
                p.requires_grad_(False)
            elif not bool(m.all()):
                keep = m.to(p.dtype)
                self.params.append(p)
                self.keep.append(keep)
                self.frozen_values.append(p.detach() * (1 - keep))

    def mask_grads(self) -> None:
        """g <- g * M for every partially masked tensor (call after backward)."""
        grads = [p.grad for p in self.params if p.grad is not None]
        if grads:
            torch._foreach_mul_(grads, [k for p, k in zip(self.params, self.keep) if p.grad is not None])

    @torch.no_grad()
    def restore_frozen(self) -> None:
        """p <- p * M + p0 * (1 - M) (call after the optimizer step)."""
        if self.params:
            torch._foreach_mul_(self.params, self.keep)
            torch._foreach_add_(self.params, self.frozen_values)

    def storage_bytes(self) -> int:
        """Extra memory the mask costs during training (masks and frozen values)."""
        return sum(t.numel() * t.element_size() for t in self.keep + self.frozen_values)


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
