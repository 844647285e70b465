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
restores nothing). Both multiply-adds run on the tensors' bits, read as integers of the same width
(M as 0/1): x * 1 + 0 == x and x * 0 + bits(p0) == bits(p0) hold for every bit pattern, so they
are exact whatever the values (in float arithmetic they are not: a frozen -0.0 would come back as
+0.0, and an inf gradient of a frozen entry would become inf * 0 = NaN in the optimizer state). The
restore is two `torch._foreach_*` calls over all masked tensors: no per-parameter Python loop and
no host sync. Tensors with no selected entry are frozen outright (requires_grad off, so
no gradient and no optimizer update or state; `unbind` turns it back on); tensors with every entry
selected need nothing. `mask_grads` / `restore_frozen` are the two operations, callable by hand as
well.

Distributed data parallel. A `DistributedDataParallel` wrapper records which parameters require
grad when it is built, and with `find_unused_parameters=False` (its default, and transformers'
when `ddp_find_unused_parameters` is unset) it fails on the second backward if one of them gets no
gradient. A mask bound after the wrapping (always so in transformers' Trainer, which wraps the
model before its callbacks' `on_train_begin`) must therefore not switch requires_grad off. So
while `torch.distributed` is initialized, tensors with no selected entry are *held* instead: they
keep requiring grad, the gradient hook zeroes their gradient, and the step hook copies their values
back (`torch._foreach_copy_`). That costs their gradients and a copy of their values, and works
whether the mask was bound before or after the wrapping.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from .errors import ConfigError


class EntryMask:
    """A binding of a fixed per-entry mask to a model's parameters, for training.

    Built on a model, it records M and the bits of p0 * (1 - M) for the partially masked tensors (as
    integers of the parameter's width: the module docstring) and masks a gradient they already hold; tensors with no selected
    entry lose a leftover gradient and get requires_grad off (held instead under torch.distributed:
    module docstring). `unbind` removes the hooks and turns requires_grad back on where this binding
    turned it off. A tensor with selected entries must require grad. With `snapshot=True` it also
    keeps a copy of the wholly frozen tensors that are not held on the CPU, so that `frozen_changed`
    can audit them too.
    """

    def __init__(self, model: nn.Module, mask: Mapping[str, Tensor], *, snapshot: bool = False):
        params = check_mask(model, mask)
        names = sorted(mask)
        idle = [n for n in names if not params[n].requires_grad and bool(mask[n].any())]
        if idle:   # checked before anything is changed
            raise ConfigError(f"parameter {idle[0]!r} has selected entries but does not require grad "
                              f"({len(idle)} such tensors): make it trainable first; if another mask is "
                              "attached to this model, detach() that one first")
        hold = distributed()
        self.params: list[Tensor] = []          # partially masked, with M and bits(p0) * (1 - M), as integers
        self.keep: list[Tensor] = []
        self.frozen_values: list[Tensor] = []
        self.held: list[Tensor] = []            # nothing selected, held in place (distributed), with p0
        self.held_values: list[Tensor] = []
        self.switched_off: list[Tensor] = []    # nothing selected, requires_grad turned off here
        self.frozen_tensors: dict[str, Tensor] = {}   # not held: name -> CPU copy (snapshot only)
        self.layout = {n: (params[n].device, params[n].dtype) for n in names}   # when bound
        self.bound = True
        self._handles: list = []
        with torch.no_grad():
            for name in names:
                p = params[name]
                m = mask[name].to(p.device, torch.bool)
                if not bool(m.any()):
                    p.grad = None   # a leftover gradient would still be applied by the next step
                    if hold and p.requires_grad:
                        self.held.append(p)
                        self.held_values.append(p.detach().clone())
                        continue
                    if p.requires_grad:
                        p.requires_grad_(False)
                        p._fishtune_switched_off = True   # for `check_unbound`
                        self.switched_off.append(p)
                    if snapshot:
                        self.frozen_tensors[name] = p.detach().to("cpu", copy=True)
                elif not bool(m.all()):
                    keep = m.to(_int_view(p).dtype)
                    if p.grad is not None:
                        _int_view(p.grad).mul_(keep)
                    self.params.append(p)
                    self.keep.append(keep)
                    self.frozen_values.append(_int_view(p.detach()) * (1 - keep))
        self._model, self._model_params = model, params
        self._dtypes = [p.dtype for p in self.params]   # what `restore_frozen` checks each step

    def mask_grads(self) -> None:
        """g <- g * M for every partially masked tensor (on the bits), g <- 0 for the held ones (what
        the gradient hooks do, all at once)."""
        grads = [_int_view(p.grad) for p in self.params if p.grad is not None]
        if grads:
            torch._foreach_mul_(grads, [k for p, k in zip(self.params, self.keep) if p.grad is not None])
        held = [p.grad for p in self.held if p.grad is not None]
        if held:
            torch._foreach_zero_(held)

    @torch.no_grad()
    def restore_frozen(self) -> None:
        """p <- p * M + p0 * (1 - M) on the bits, and p <- p0 for the held tensors (call after the
        optimizer step). The integer views are taken afresh, so they follow the parameters' storage;
        a parameter converted to another dtype since binding is a ConfigError before anything is
        written (its stored bits would be read as the new type's)."""
        if any(p.dtype != dtype for p, dtype in zip(self.params, self._dtypes)):
            self._check_layout()
        if self.params:
            bits = [_int_view(p.detach()) for p in self.params]
            torch._foreach_mul_(bits, self.keep)
            torch._foreach_add_(bits, self.frozen_values)
        if self.held:
            torch._foreach_copy_(self.held, self.held_values)

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
        if not self.bound:
            raise RuntimeError("this binding was undone (unbind); bind the mask again")
        inner = torch_optimizer(optimizer)
        updated = {id(q) for group in inner.param_groups for q in group["params"]}
        bound = {id(t) for t in self.params}
        missed = [n for n, q in self._model_params.items() if id(q) in bound and id(q) not in updated]
        if missed:   # its hooks would never fire: the optimizer trains other tensors (a copy of the model?)
            raise ConfigError(f"the optimizer does not update {missed[0]!r} ({len(missed)} of the {len(self.params)} "
                              "partially masked tensors), which the mask is bound to: build the optimizer from the "
                              "parameters of the model the mask is bound (or attached) to")
        for p, keep in zip(self.params, self.keep):
            self._handles.append(p.register_post_accumulate_grad_hook(_grad_masker(keep)))
        for p in self.held:
            self._handles.append(p.register_post_accumulate_grad_hook(_grad_zeroer))
        self._handles.append(inner.register_step_post_hook(lambda _opt, _args, _kwargs: self.restore_frozen()))
        return self

    def detach(self) -> None:
        """Remove the hooks `attach` registered (a no-op when not attached)."""
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def unbind(self) -> None:
        """Remove the hooks and turn requires_grad back on where binding turned it off. The frozen
        values stay recorded, so `frozen_changed` still compares with them."""
        self.detach()
        for p in self.switched_off:
            p.requires_grad_(True)
            p.__dict__.pop("_fishtune_switched_off", None)
        self.switched_off = []
        self.bound = False

    # --- audit ------------------------------------------------------------------------------------

    def frozen_changed(self) -> int:
        """Frozen entries whose bits differ from the values they had when the mask was bound: those of
        the partially masked tensors, the held ones, and (with `snapshot=True`) the other wholly
        frozen ones.
        A ConfigError if a parameter was moved, converted or replaced since (its values cannot be
        compared)."""
        self._check_layout()
        changed = 0
        for p, keep, frozen in zip(self.params, self.keep, self.frozen_values):
            changed += int(((_int_view(p.detach()) != frozen) & (keep == 0)).sum())
        for p, before in zip(self.held, self.held_values):
            changed += int((_bits(p.detach()) != _bits(before)).sum())
        for name, before in self.frozen_tensors.items():
            changed += int((_bits(self._model_params[name].detach().cpu()) != _bits(before)).sum())
        return changed

    def _check_layout(self) -> None:
        """ConfigError if a bound parameter was moved, converted, or replaced by another tensor
        (`load_state_dict(assign=True)`, a reloaded model) since binding."""
        now = dict(self._model.named_parameters())
        for name, (device, dtype) in self.layout.items():
            p = self._model_params[name]
            if now.get(name) is not p:
                raise ConfigError(f"parameter {name!r} of the model was replaced by another tensor since the mask was "
                                  "bound (load_state_dict(assign=True), a reloaded model?): attach the mask again "
                                  "after loading")
            if (p.device, p.dtype) != (device, dtype):
                raise ConfigError(f"parameter {name!r} is {p.dtype} on {p.device} now, {dtype} on {device} when the "
                                  "mask was bound: move or convert the model before attaching the mask")

    def storage_bytes(self) -> int:
        """Extra memory the mask costs during training (masks and frozen values)."""
        return sum(t.numel() * t.element_size() for t in self.keep + self.frozen_values + self.held_values)


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


def check_unbound(model: nn.Module) -> None:
    """Refuse a model to which a mask is still bound: binding turned requires_grad off for the tensors
    it selects nothing in, so a new mask's candidates (the trainable tensors) would leave them out."""
    off = [n for n, p in model.named_parameters() if p.__dict__.get("_fishtune_switched_off") and not p.requires_grad]
    if off:
        raise ConfigError(f"a FishMask is still bound to this model: it switched requires_grad off for {len(off)} "
                          f"tensors (e.g. {off[0]!r}); detach() that mask (or turn their requires_grad back on) "
                          "before building another mask on the model")


def check_mask(model: nn.Module, mask: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """`model`'s named parameters, after checking that `mask` names some of them, with their shapes."""
    params = dict(model.named_parameters())
    unknown = sorted(set(mask) - set(params))
    if unknown:
        raise ConfigError(f"the mask names parameters the model does not have, e.g. {unknown[0]!r} "
                          f"({len(unknown)} in all); was it built on another model?")
    for name, m in mask.items():
        if tuple(m.shape) != tuple(params[name].shape):
            raise ConfigError(f"mask shape {tuple(m.shape)} does not match parameter {name!r} "
                              f"{tuple(params[name].shape)}")
    return params


def distributed() -> bool:
    """Whether torch.distributed is initialized: the model may be wrapped in DDP (module docstring)."""
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def _grad_zeroer(p: Tensor) -> None:
    if p.grad is not None:
        p.grad.zero_()


def _grad_masker(keep: Tensor):
    def hook(p: Tensor) -> None:
        if p.grad is not None:
            _int_view(p.grad).mul_(keep)

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


_INT_OF_SIZE = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


def _bits(t: Tensor) -> Tensor:
    """Reinterpret a float tensor as integers of the same width (compares -0.0, NaN exactly)."""
    return _int_view(t.contiguous())


def _int_view(t: Tensor) -> Tensor:
    """`t`'s storage as integers of the same width (a view: writing it writes `t`)."""
    return t.view(_INT_OF_SIZE[t.element_size()])
