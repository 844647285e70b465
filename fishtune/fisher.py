r"""Diagonal empirical Fisher information of the trainable parameters (the FISH score).

For N examples (x_n, y_n) the estimate returned for every trainable parameter theta is

    F_hat(theta) = sum_{n=1}^N ( d/dtheta log p(y_n | x_n) )^2        (elementwise)

i.e. the squared gradient of each single example's negative log-likelihood, summed over the
examples (Sung et al., 2021, "Training Neural Networks with Fixed Sparse Masks"). The squared
gradient of the batch-mean loss is *not* this quantity: the square must be taken per example.

- ``labels="empirical"``: y_n is the true label; the loss is cross-entropy (classification) or the
  squared error (f(x_n) - y_n)^2 (regression). The squared error is twice the NLL of a unit-variance
  Gaussian, so the regression score is 4x that Fisher; a constant factor does not change a ranking.
- ``labels="expected"`` (classification only; regression falls back to empirical): the model's own
  predictive distribution replaces the label,
  F_hat(theta) = sum_n sum_c p(c | x_n) (d/dtheta log p(c | x_n))^2, with p detached.
  It is computed as the squared gradient of sqrt(p(c | x_n)) * CE(x_n, c), summed over c.

Two exact estimators, and a mix of them:

- ``"loop"`` (the FISH reference): one forward/backward per example (batch size 1, padding stripped).
- ``"hooks"``: for an ``nn.Linear`` y = a W^T + b, with input a[n] of shape (tokens, in) and output
  gradient g[n] = dL/dy[n] of shape (tokens, out), the gradient of example n alone is

      dL_n/dW = sum_t g[n, t]^T a[n, t]   (out x in),        dL_n/db = sum_t g[n, t].

  With a *sum*-reduced batch loss L = sum_n L_n, g[n] depends on example n only (the examples do not
  interact in the forward pass), so one batched forward/backward yields every per-example gradient.
  A forward hook records a and the output y of each call; g = dL/dy comes from
  ``torch.autograd.grad(L, [y, ...])`` (the same values a tensor hook on y would see). A Linear
  called several times in one forward gets its per-call gradients summed before squaring.
  Padding positions are masked out of attention, so their g is zero and they add nothing; the
  positions after the batch's longest example are cut before the forward to save the work.
- ``"auto"``: hooks for the parameters held by an ``nn.Linear``, the loop for the rest.

Nothing here writes ``.grad``: gradients come from ``torch.autograd.grad``, so the caller's
gradients, ``requires_grad`` flags and parameter values are left as they were. The model is put in
eval mode (dropout off) while estimating and each module's previous mode is restored afterwards.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fishtune.errors import ConfigError, DataError, FishtuneError

logger = logging.getLogger(__name__)

ESTIMATORS = ("auto", "hooks", "loop")
LABEL_MODES = ("empirical", "expected")

Batch = dict[str, Tensor]
# A per-batch loss builder: logits -> list of (sum-reduced loss) whose per-example gradients,
# squared and summed over the list, give that batch's contribution to F_hat.
LossTerms = Callable[[Tensor], list[Tensor]]


def empirical_fisher(
    model: nn.Module,
    batches: Iterable[dict[str, Tensor]],
    *,
    num_samples: int,
    estimator: str = "auto",
    labels: str = "empirical",
    param_names: Collection[str] | None = None,
) -> dict[str, Tensor]:
    """Diagonal empirical Fisher of ``model``'s trainable parameters over ``num_samples`` examples.

    ``batches`` yield dicts with the model's inputs and a ``labels`` tensor (long class ids, or
    floats for regression); the model is called as ``model(**inputs)`` and its ``.logits`` used.
    Returns ``{name: float32 tensor of the parameter's shape}`` for every parameter with
    ``requires_grad`` (restricted to ``param_names`` if given), in ``named_parameters()`` order.
    Only the first ``num_samples`` examples count (the last batch is truncated); if the batches run
    out earlier, the examples seen are used and a warning is logged.
    """
    if estimator not in ESTIMATORS:
        raise ConfigError(f"fisher estimator must be one of {ESTIMATORS}, got {estimator!r}")
    if labels not in LABEL_MODES:
        raise ConfigError(f"fisher labels must be one of {LABEL_MODES}, got {labels!r}")
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        raise ConfigError(f"fisher num_samples must be a positive integer, got {num_samples!r}")

    wanted = _wanted_parameters(model, param_names)
    linear_of = _linear_holders(model, wanted)
    loop_params = {n: p for n, p in wanted.items() if n not in linear_of or estimator == "loop"}
    hook_modules = {} if estimator == "loop" else _modules_by_linear(linear_of, wanted)
    if estimator == "hooks" and loop_params:
        raise ConfigError(
            "fisher estimator 'hooks' covers only parameters of nn.Linear modules; not these: "
            + ", ".join(loop_params)
            + " (use estimator 'auto' or 'loop')"
        )

    device = next(model.parameters()).device
    fisher = {n: torch.zeros(p.shape, dtype=torch.float32, device=device) for n, p in wanted.items()}
    seen = 0
    with _eval_mode(model), torch.enable_grad():
        for batch in _first_examples(batches, num_samples):
            batch = {k: v.to(device) for k, v in batch.items()}
            if hook_modules:
                _accumulate_hooks(model, batch, labels, hook_modules, fisher)
            if loop_params:
                _accumulate_loop(model, batch, labels, loop_params, fisher)
            seen += batch["labels"].shape[0]
    if seen == 0:
        raise DataError("fisher: the batches held no examples")
    if seen < num_samples:
        logger.warning("fisher: batches ran out after %d of %d requested examples", seen, num_samples)
    return fisher


# --- which parameters, held by which modules ---------------------------------------------------


def _wanted_parameters(model: nn.Module, param_names: Collection[str] | None) -> dict[str, nn.Parameter]:
    """Trainable parameters by name, restricted to ``param_names`` (each must be trainable)."""
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    if param_names is None:
        wanted = trainable
    else:
        unknown = sorted(set(param_names) - set(trainable))
        if unknown:
            raise ConfigError(f"fisher param_names are not trainable parameters of the model: {unknown}")
        chosen = set(param_names)
        wanted = {n: p for n, p in trainable.items() if n in chosen}
    if not wanted:
        raise ConfigError("fisher: the model has no trainable parameters to score")
    return wanted


def _linear_holders(model: nn.Module, wanted: Mapping[str, nn.Parameter]) -> dict[str, nn.Linear]:
    """Map each wanted parameter that the hooks identity covers to the nn.Linear that holds it.

    Covered: held directly (``recurse=False``) by exactly one module, which is an ``nn.Linear``
    whose ``forward`` is not overridden. A parameter shared with another module (weight tying) is
    also used outside that Linear's forward, where the hooks would not see it, so it is left to the
    loop. PEFT's ``lora_A``/``lora_B`` and the trainable copy inside a ``ModulesToSaveWrapper`` are
    plain ``nn.Linear`` modules and are covered.
    """
    holders: dict[int, list[nn.Module]] = {}
    for module in model.modules():
        for p in module.parameters(recurse=False):
            holders.setdefault(id(p), []).append(module)
    covered = {}
    for name, p in wanted.items():
        mods = holders.get(id(p), [])
        if len(mods) == 1 and isinstance(mods[0], nn.Linear) and type(mods[0]).forward is nn.Linear.forward:
            covered[name] = mods[0]
    return covered


def _modules_by_linear(
    linear_of: Mapping[str, nn.Linear], wanted: Mapping[str, nn.Parameter]
) -> dict[nn.Linear, dict[str, str]]:
    """{linear: {"weight"/"bias": parameter name}} for the wanted parameters of each Linear."""
    modules: dict[nn.Linear, dict[str, str]] = {}
    for name, module in linear_of.items():
        role = "weight" if wanted[name] is module.weight else "bias"
        modules.setdefault(module, {})[role] = name
    return modules


# --- batches and losses ------------------------------------------------------------------------


def _first_examples(batches: Iterable[Batch], num_samples: int) -> Iterator[Batch]:
    """Yield batches up to ``num_samples`` examples in all, truncating the last; stop pulling then."""
    remaining = num_samples
    for batch in batches:
        if "labels" not in batch:
            raise DataError("fisher batches need a 'labels' entry")
        size = batch["labels"].shape[0]
        if size > remaining:
            batch = {k: v[:remaining] for k, v in batch.items()}
            size = remaining
        yield batch
        remaining -= size
        if remaining == 0:
            return


def _loss_terms(model: nn.Module, targets: Tensor, labels: str) -> LossTerms:
    """The sum-reduced loss terms for this batch (see the module docstring)."""

    def empirical_ce(logits: Tensor) -> list[Tensor]:
        return [F.cross_entropy(logits.float(), targets, reduction="sum")]

    def squared_error(logits: Tensor) -> list[Tensor]:
        return [((logits.float().squeeze(-1) - targets.float()) ** 2).sum()]

    def expected_ce(logits: Tensor) -> list[Tensor]:
        logits = logits.float()
        log_p = logits.log_softmax(-1)
        weight = log_p.detach().exp().sqrt()  # sqrt(p_c): squaring the gradient gives p_c * g_c^2
        return [-(weight[:, c] * log_p[:, c]).sum() for c in range(logits.shape[-1])]

    if _is_regression(model, targets):
        return squared_error
    if targets.is_floating_point():
        raise DataError("fisher: classification needs integer class labels, got floats")
    return expected_ce if labels == "expected" else empirical_ce


def _is_regression(model: nn.Module, targets: Tensor) -> bool:
    """Regression if the config's problem_type says so, else (as transformers) if num_labels == 1;
    a model without a config is taken as regressing when its labels are floats."""
    config = getattr(model, "config", None)
    problem_type = getattr(config, "problem_type", None)
    if problem_type == "regression":
        return True
    if problem_type not in (None, "single_label_classification"):
        raise ConfigError(f"fisher supports classification and regression, not {problem_type!r}")
    num_labels = getattr(config, "num_labels", None)
    return num_labels == 1 if num_labels is not None else targets.is_floating_point()


def _logits(model: nn.Module, batch: Batch) -> Tensor:
    """``model(**inputs).logits``; a model returning a bare tensor is taken as returning logits."""
    out = model(**{k: v for k, v in batch.items() if k != "labels"})
    return out.logits if hasattr(out, "logits") else out


# --- the two estimators ------------------------------------------------------------------------


def _accumulate_loop(
    model: nn.Module, batch: Batch, labels: str, params: Mapping[str, nn.Parameter], fisher: dict[str, Tensor]
) -> None:
    """Reference estimator: one forward/backward per example, squared gradients added to ``fisher``."""
    names, tensors = list(params), list(params.values())
    for i in range(batch["labels"].shape[0]):
        example = _single_example(batch, i)
        terms = _loss_terms(model, example["labels"], labels)(_logits(model, example))
        for j, loss in enumerate(terms):
            grads = torch.autograd.grad(loss, tensors, retain_graph=j < len(terms) - 1, allow_unused=True)
            for name, grad in zip(names, grads):
                if grad is not None:
                    fisher[name] += grad.float() ** 2


def _single_example(batch: Batch, i: int) -> Batch:
    """Example ``i`` as a batch of one, without its trailing padding."""
    return _cut_trailing_padding({k: v[i : i + 1] for k, v in batch.items()})


def _cut_trailing_padding(batch: Batch) -> Batch:
    """Drop the sequence positions after the last one any example attends to.

    Attention masks padding out, so cutting it changes nothing but the cost (up to rounding).
    Tensors whose second dimension is the sequence length are cut; left padding is kept.
    """
    mask = batch.get("attention_mask")
    if mask is None or mask.dim() != 2:
        return batch
    seq_len = mask.shape[1]
    attended = mask.any(0).nonzero()
    length = int(attended.max()) + 1 if attended.numel() else seq_len
    return {k: v[:, :length] if v.dim() >= 2 and v.shape[1] == seq_len else v for k, v in batch.items()}


def _accumulate_hooks(
    model: nn.Module,
    batch: Batch,
    labels: str,
    modules: Mapping[nn.Linear, Mapping[str, str]],
    fisher: dict[str, Tensor],
) -> None:
    """Hooks estimator: per-example Linear gradients from one batched forward (module docstring)."""
    batch = _cut_trailing_padding(batch)
    batch_size = batch["labels"].shape[0]
    calls: dict[nn.Linear, list[tuple[Tensor, Tensor]]] = {m: [] for m in modules}
    with _capture_linear_io(calls):
        logits = _logits(model, batch)
    captured = [(m, a, y) for m, io in calls.items() for a, y in io]
    terms = _loss_terms(model, batch["labels"], labels)(logits)
    outputs = [y for _, _, y in captured]
    for j, loss in enumerate(terms):
        grads = torch.autograd.grad(loss, outputs, retain_graph=j < len(terms) - 1, allow_unused=True)
        # Calls whose output gets no gradient add nothing and need not follow the batch layout
        # (e.g. DoRA evaluates lora_B(lora_A(I)) for its detached weight norm).
        _check_captured([c for c, g in zip(captured, grads) if g is not None], batch_size)
        per_example: dict[nn.Linear, dict[str, Tensor]] = {}
        for (m, a, _), g in zip(captured, grads):
            if g is not None:
                _add_call_grads(per_example.setdefault(m, {}), modules[m], a, g)
        for m, roles in per_example.items():
            for role, grad in roles.items():
                fisher[modules[m][role]] += (grad**2).sum(0)


def _check_captured(captured: list[tuple[nn.Linear, Tensor, Tensor]], batch_size: int) -> None:
    """Refuse what the hooks identity does not cover instead of returning a wrong Fisher."""
    for m, a, y in captured:
        if a.shape[0] != batch_size:
            raise FishtuneError(
                f"fisher: an nn.Linear {tuple(m.weight.shape)} got input {tuple(a.shape)} whose first "
                f"dimension is not the batch ({batch_size}); use estimator 'loop'"
            )
        if y._version != 0:  # gradient w.r.t. y would be that of the value written in place
            raise FishtuneError(
                f"fisher: the output of an nn.Linear {tuple(m.weight.shape)} is modified in place "
                "by the model; use estimator 'loop'"
            )


@contextmanager
def _capture_linear_io(calls: dict[nn.Linear, list[tuple[Tensor, Tensor]]]) -> Iterator[None]:
    """Record (input, output) of every call of the given Linears while the context is open."""

    def record(module: nn.Module, args: tuple[Tensor, ...], output: Tensor) -> None:
        if output.requires_grad:  # a call under no_grad contributes no gradient, as in the loop
            calls[module].append((args[0], output))

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


@contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    """Eval mode (dropout off) inside; every submodule's previous mode restored on exit."""
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        yield
    finally:
        for m, training in modes.items():
            m.training = training
