r"""The ``"hooks"`` Fisher estimator: per-example gradients of ``nn.Linear`` parameters from one batch.

For an ``nn.Linear`` y = a W^T + b, with input a[n] of shape (tokens, in) and output gradient
g[n] = dL/dy[n] of shape (tokens, out), the gradient of example n alone is

    dL_n/dW = sum_t g[n, t]^T a[n, t]   (out x in),        dL_n/db = sum_t g[n, t].

With a *sum*-reduced batch loss L = sum_n L_n, g[n] depends on example n only (the examples do not
interact in the forward pass), so one batched forward/backward yields every per-example gradient.
A forward hook records a and the output y of each call; g = dL/dy comes from
``torch.autograd.grad(L, [y, ...])``. A Linear called several times in one forward gets its per-call
gradients summed before squaring. Each module's (batch, out, in) gradients are formed, squared,
added and freed before the next module's, so at most one module's exist at a time. Padding
positions are masked out of attention, so their g is zero.

The identity holds only if W and b are used nowhere but in that module's own forward, on inputs
whose first axis is the examples. Hence only modules whose type is exactly ``nn.Linear`` (a subclass
may use its weight elsewhere, as ``nn.MultiheadAttention``'s ``out_proj``) holding parameters no
other module shares are taken, and:

- on every batch, a call whose input's first axis is not the batch size, or whose output the model
  modifies in place, disqualifies its module;
- on the first batch, (1) sum_n dL_n/dW must equal ``torch.autograd.grad(L, W)`` (catches a weight
  also used through ``F.linear(x, lin.weight)``), and (2) the gradient of example 0 must equal that
  of example 0 run alone, as a batch of one with the same padded length (catches an input whose
  first axis has the batch's size but is not the examples). Both use the first loss term and a
  relative tolerance (1e-4 in fp32; 5e-2 under bf16 autocast or for a model held in bf16/fp16).

A disqualified module is reported to the caller, with nothing of that batch added for it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from fishtune.errors import FishtuneError
from fishtune.fisher_func import mismatched

Batch = dict[str, Tensor]
# Runs the model on a batch and returns its sum-reduced loss terms (see fishtune.fisher).
ForwardTerms = Callable[[Batch], list[Tensor]]


def hook_modules(model: nn.Module, wanted: Mapping[str, nn.Parameter]) -> dict[nn.Linear, dict[str, str]]:
    """{linear: {"weight"/"bias": parameter name}} for the wanted parameters the hooks may score."""
    modules: dict[nn.Linear, dict[str, str]] = {}
    for name, module in _linear_holders(model, wanted).items():
        role = "weight" if wanted[name] is module.weight else "bias"
        modules.setdefault(module, {})[role] = name
    return modules


def _linear_holders(model: nn.Module, wanted: Mapping[str, nn.Parameter]) -> dict[str, nn.Linear]:
    """Map each wanted parameter the hooks may score to the nn.Linear that holds it.

    Taken: held directly (``recurse=False``) by exactly one module, whose type is exactly
    ``nn.Linear`` (a subclass may use its weight elsewhere, e.g. ``nn.MultiheadAttention``'s
    ``out_proj``, or override ``forward``). A parameter shared with another module (weight tying)
    is used outside that Linear's forward, where the hooks would not see it. PEFT's
    ``lora_A``/``lora_B``, the trainable copy in a ``ModulesToSaveWrapper`` and AdapterHub's
    bottleneck ``adapter_down``/``adapter_up`` and gates are exact ``nn.Linear`` modules. The first
    batch's checks (module docstring) catch a plain Linear whose weight is still used elsewhere.
    """
    holders: dict[int, list[nn.Module]] = {}
    for module in model.modules():
        for p in module.parameters(recurse=False):
            holders.setdefault(id(p), []).append(module)
    covered = {}
    for name, p in wanted.items():
        mods = holders.get(id(p), [])
        if len(mods) == 1 and type(mods[0]) is nn.Linear:
            covered[name] = mods[0]
    return covered


def accumulate_hooks(
    batch: Batch,
    modules: Mapping[nn.Linear, Mapping[str, str]],
    fisher: dict[str, Tensor],
    *,
    forward_terms: ForwardTerms,
    check: bool,
    tol: float,
) -> dict[nn.Linear, str]:
    """Add ``batch``'s per-example squared gradients of the ``modules``' parameters to ``fisher``.

    Returns ``{module: reason}`` for the modules it could not score: input not batch-first or output
    modified in place (any batch), or a failed check (``check``: the first batch). Nothing of this
    batch is added for them; every other module's squares are.
    """
    size = batch["labels"].shape[0]
    slots = {name: getattr(m, role) for m, roles in modules.items() for role, name in roles.items()}
    alone = _example_zero_grads(batch, slots, forward_terms) if check else {}
    calls: dict[nn.Linear, list[tuple[Tensor, Tensor, int]]] = {m: [] for m in modules}
    with _capture_linear_io(calls):
        terms = forward_terms(batch)
    captured = [(m, a, y, version) for m, io in calls.items() for a, y, version in io]
    outputs = [y for _, _, y, _ in captured]
    failed: dict[nn.Linear, str] = {}
    for j, loss in enumerate(terms):
        verify = check and j == 0  # the checks use the first loss term
        wrt = outputs + (list(slots.values()) if verify else [])
        grads = torch.autograd.grad(loss, wrt, retain_graph=j < len(terms) - 1, allow_unused=True)
        by_module: dict[nn.Linear, list[tuple[Tensor, Tensor]]] = {m: [] for m in modules}
        for (m, a, y, version), g in zip(captured, grads):
            # Calls whose output gets no gradient add nothing and need not follow the batch layout
            # (e.g. DoRA evaluates lora_B(lora_A(I)) for its detached weight norm).
            if g is not None:
                by_module[m].append((a, g))
                problem = _capture_problem(m, a, y._version != version, size)
                if problem and m not in failed:
                    if j > 0:  # the same calls got gradients for the first term
                        raise FishtuneError(f"fisher: {problem}; use estimator 'func' or 'loop'")
                    failed[m] = problem
        sums, firsts, squares = {}, {}, {}
        for m, io in by_module.items():
            if m in failed:
                continue
            per_example: dict[str, Tensor] = {}  # this module's (batch, *shape) gradients, summed over calls
            for a, g in io:
                _add_call_grads(per_example, modules[m], a, g)
            for role, grad in per_example.items():
                name = modules[m][role]
                if verify:  # keep what the checks need, add the squares once they pass
                    sums[name], firsts[name], squares[name] = grad.sum(0), grad[0].clone(), grad.square_().sum(0)
                else:
                    fisher[name] += grad.square_().sum(0)
            del per_example
        if verify:
            checked = {n: slots[n] for m, roles in modules.items() if m not in failed for n in roles.values()}
            together = dict(zip(slots, grads[len(outputs) :]))
            failed.update(_verify_hooks(modules, checked, sums, firsts, together, alone, tol))
            for m, roles in modules.items():
                if m not in failed:
                    for name in roles.values():
                        if name in squares:
                            fisher[name] += squares[name]
    return failed


def _example_zero_grads(
    batch: Batch, slots: Mapping[str, Tensor], forward_terms: ForwardTerms
) -> dict[str, Tensor | None]:
    """{name: gradient of the first loss term of example 0 alone}, padded as in ``batch``."""
    loss = forward_terms({k: v[:1] for k, v in batch.items()})[0]
    return dict(zip(slots, torch.autograd.grad(loss, list(slots.values()), allow_unused=True)))


def _verify_hooks(
    modules: Mapping[nn.Linear, Mapping[str, str]],
    checked: Mapping[str, Tensor],
    sums: Mapping[str, Tensor],
    firsts: Mapping[str, Tensor],
    together: Mapping[str, Tensor | None],
    alone: Mapping[str, Tensor | None],
    tol: float,
) -> dict[nn.Linear, str]:
    """The first batch's checks (module docstring) on the ``checked`` parameters: the sum over the
    batch, and example 0 alone."""

    def dense(grads: Mapping[str, Tensor | None]) -> dict[str, Tensor]:
        # no entry or None: zero (e.g. a module never called on the loss's path has no per-example gradient)
        return {n: torch.zeros(p.shape, device=p.device) if grads.get(n) is None else grads[n].float()
                for n, p in checked.items()}

    bad_sum = set(mismatched(dense(sums), dense(together), tol))
    bad_first = set(mismatched(dense(firsts), dense(alone), tol))
    failed = {}
    for m, roles in modules.items():
        for name in roles.values():
            if name in bad_sum:
                failed[m] = (f"per-example gradients of {name} do not add up to its batch gradient "
                             "(is the weight also used outside the module's forward?)")
            elif name in bad_first:
                failed[m] = (f"the per-example gradient of {name} differs from that of its example run alone "
                             "(is the module's input not batch-first?)")
    return failed


def _capture_problem(m: nn.Linear, a: Tensor, written_after: bool, batch_size: int) -> str | None:
    """Why the hooks identity does not cover this call of ``m``, or None."""
    if a.shape[0] != batch_size:
        return (f"an nn.Linear {tuple(m.weight.shape)} got input {tuple(a.shape)} whose first dimension "
                f"is not the batch ({batch_size})")
    if written_after:  # the gradient w.r.t. the output would be that of the value written in place
        return f"the output of an nn.Linear {tuple(m.weight.shape)} is modified in place by the model"
    return None


@contextmanager
def _capture_linear_io(calls: dict[nn.Linear, list[tuple[Tensor, Tensor, int]]]) -> Iterator[None]:
    """Record (input, output, output version) of every call of the given Linears while open.

    The version is taken as the call returns, not assumed 0: F.linear itself bumps it on some
    inputs (a non-contiguous 3-D input with a bias comes back at version 1)."""

    def record(module: nn.Module, args: tuple[Tensor, ...], output: Tensor) -> None:
        if output.requires_grad:  # a call under no_grad contributes no gradient, as in the loop
            calls[module].append((args[0], output, output._version))

    handles = [m.register_forward_hook(record) for m in calls]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def _add_call_grads(acc: dict[str, Tensor], roles: Mapping[str, str], a: Tensor, g: Tensor) -> None:
    """Add one call's per-example gradients, (batch, *param shape), to ``acc`` (float32)."""
    batch = a.shape[0]
    a = a.detach().float().reshape(batch, -1, a.shape[-1])
    g = g.float().reshape(batch, -1, g.shape[-1])
    if "weight" in roles:
        acc["weight"] = acc.get("weight", 0) + torch.einsum("bto,bti->boi", g, a)
    if "bias" in roles:
        acc["bias"] = acc.get("bias", 0) + g.sum(1)
