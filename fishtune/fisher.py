r"""Diagonal empirical Fisher information of the trainable parameters (the FISH score).

For N examples (x_n, y_n) the estimate returned for every trainable parameter theta is

    F_hat(theta) = sum_{n=1}^N ( d/dtheta log p(y_n | x_n) )^2        (elementwise)

i.e. the squared gradient of each single example's negative log-likelihood, summed over the
examples (Sung et al., 2021, "Training Neural Networks with Fixed Sparse Masks"). The squared
gradient of the batch-mean loss is *not* this quantity: the square must be taken per example.

- ``labels="empirical"``: y_n is the true label; the loss is cross-entropy (classification) or the
  squared error (f(x_n) - y_n)^2 (regression). The squared error is twice the NLL of a unit-variance
  Gaussian, so the regression score is 4x that Fisher; a constant factor does not change a ranking.
- ``labels="expected"``: the model's own predictive distribution replaces the label,
  F_hat(theta) = sum_n sum_c p(c | x_n) (d/dtheta log p(c | x_n))^2, with p detached.
  It is computed as the squared gradient of sqrt(p(c | x_n)) * CE(x_n, c), summed over c.
  Regression takes y ~ N(f(x_n), 1): E_y[(d/dtheta (f - y)^2)^2] = 4 E[(f - y)^2] (df/dtheta)^2
  = 4 (df/dtheta)^2, the squared gradient of 2 f(x_n) (on the empirical score's 4x scale).

Three exact estimators, and a mix of them:

- ``"loop"`` (the FISH reference): one forward/backward per example (batch size 1, padding stripped).
- ``"hooks"`` (:mod:`fishtune.fisher_hooks`): for the parameters of plain ``nn.Linear`` modules,
  dL_n/dW = sum_t g[n, t]^T a[n, t] and dL_n/db = sum_t g[n, t] from the inputs a and output
  gradients g of one batched forward/backward with a sum-reduced loss. Checked on the first batch:
  the per-example gradients must add up to autograd's batch gradient, and example 0's must match
  example 0 run alone; a module that fails (e.g. its weight also used through ``F.linear``) makes
  ``"hooks"`` raise a FishtuneError naming its parameters.
- ``"func"`` (:mod:`fishtune.fisher_func`): ``torch.func`` per-example gradients
  (``vmap(jacrev(...))`` over the examples with ``functional_call``), exact for any parameter
  (LayerNorms, embeddings, DoRA magnitudes, raw Parameters, prefixes). Checked on the first chunk:
  the per-example gradients must add up to autograd's batch gradient. The attention mask is
  needed; dropout is off (eval mode), so vmap sees no randomness.
- ``"auto"``: hooks when every wanted parameter sits in a plain ``nn.Linear``, else func for all of
  them (func needs a full batched pass for the others anyway, so a hooks pass on top would only add
  cost). With hooks, a module
  that fails a hooks check moves to func (logged at INFO). If func cannot run the model (vmap
  raises) or fails its check, those parameters fall back to the batch-1 loop, from the first
  example not yet scored, with a logged WARNING: ``"auto"`` never returns a score that failed a
  check. With ``estimator="func"`` the same failures raise a FishtuneError.

In hooks and func, the positions after the batch's longest example are cut first; examples keep
the rest of the batch's padding (masked out, so it changes nothing but for models whose output
depends on padding, as AdapterHub's UniPELT gates, which average over it).

Precision: everything runs in fp32 whatever autocast context the caller is in (autocast is disabled
inside for the model's device type and the CPU). ``precision="bf16"`` opts in to bf16 autocast on the
model's device for the forward/backward passes (faster on GPUs; the scores carry ~1e-2 relative
error); squares and sums are fp32 either way.

Nothing here writes ``.grad``: gradients come from ``torch.autograd.grad`` / ``torch.func``, so the
caller's gradients, ``requires_grad`` flags and parameter values are left as they were. The model is
put in eval mode (dropout off) while estimating and each module's previous mode is restored afterwards.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from contextlib import ExitStack, contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fishtune.errors import ConfigError, DataError, FishtuneError
from fishtune.fisher_func import FuncFailed, accumulate_func
from fishtune.fisher_hooks import accumulate_hooks, hook_modules

logger = logging.getLogger(__name__)

ESTIMATORS = ("auto", "func", "hooks", "loop")
LABEL_MODES = ("empirical", "expected")
PRECISIONS = ("fp32", "bf16")
CHECK_TOL = {"fp32": 1e-4, "bf16": 5e-2}  # relative tolerance of the hooks and func checks

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
    precision: str = "fp32",
    chunk_size: int | None = None,
) -> dict[str, Tensor]:
    """Diagonal empirical Fisher of ``model``'s trainable parameters over ``num_samples`` examples.

    ``batches`` yield dicts with the model's inputs and a ``labels`` tensor (long class ids, or
    floats for regression); the model is called as ``model(**inputs)`` and its ``.logits`` used.
    Returns ``{name: float32 tensor of the parameter's shape}`` for every parameter with
    ``requires_grad`` (restricted to ``param_names`` if given), in ``named_parameters()`` order.
    Only the first ``num_samples`` examples count (the last batch is truncated); if the batches run
    out earlier, the examples seen are used and a warning is logged. ``precision`` is ``"fp32"``
    (whatever the caller's autocast) or ``"bf16"`` (opt-in autocast). ``chunk_size`` bounds the
    examples per torch.func pass (None: as many as keep 2**27 per-example gradient floats per loss
    term).
    """
    if estimator not in ESTIMATORS:
        raise ConfigError(f"fisher estimator must be one of {ESTIMATORS}, got {estimator!r}")
    if labels not in LABEL_MODES:
        raise ConfigError(f"fisher labels must be one of {LABEL_MODES}, got {labels!r}")
    if precision not in PRECISIONS:
        raise ConfigError(f"fisher precision must be one of {PRECISIONS}, got {precision!r}")
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        raise ConfigError(f"fisher num_samples must be a positive integer, got {num_samples!r}")
    if chunk_size is not None and (isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1):
        raise ConfigError(f"fisher chunk_size must be None or a positive integer, got {chunk_size!r}")

    wanted = _wanted_parameters(model, param_names)
    hooked_by = {} if estimator in ("loop", "func") else hook_modules(model, wanted)
    hooked = {n for roles in hooked_by.values() for n in roles.values()}
    rest = {n: p for n, p in wanted.items() if n not in hooked}
    if estimator == "hooks" and rest:
        raise ConfigError(
            "fisher estimator 'hooks' covers only parameters of plain nn.Linear modules; not these: "
            + ", ".join(rest)
            + " (use estimator 'auto', 'func' or 'loop')"
        )
    if estimator == "auto" and rest:
        # func must run a full batched forward/backward for `rest` anyway: letting it score the
        # Linears too is cheaper than a hooks pass on top (DoRA on a tiny BERT: 1.9 vs 3.0 ms/example).
        hooked_by, rest = {}, dict(wanted)
    loop_params = rest if estimator == "loop" else {}
    func_params = {} if estimator == "loop" else rest
    # A model held in bf16/fp16 computes in it whatever `precision` says: check at that rounding.
    half = any(p.dtype in (torch.bfloat16, torch.float16) for p in wanted.values())
    tol = max(CHECK_TOL[precision], CHECK_TOL["bf16"] if half else 0.0)

    device = next(model.parameters()).device
    fisher = {n: torch.zeros(p.shape, dtype=torch.float32, device=device) for n, p in wanted.items()}

    def forward_terms(batch: Batch) -> list[Tensor]:
        return _loss_terms(model, batch["labels"], labels)(_logits(model, batch))

    seen = 0
    with _eval_mode(model), torch.enable_grad(), _precision(device.type, precision):
        for batch in _first_examples(batches, num_samples):
            batch = _on_device(batch, device)
            check, moved = seen == 0, False
            if hooked_by:
                failed = accumulate_hooks(_cut_trailing_padding(batch), hooked_by, fisher, forward_terms=forward_terms,
                                          check=check, tol=tol)
                for module, reason in failed.items():
                    names = list(hooked_by.pop(module).values())
                    if estimator == "hooks":
                        raise FishtuneError(f"fisher: hooks cannot score {', '.join(names)}: {reason}; "
                                            "use estimator 'func' or 'loop'")
                    logger.info("fisher: hooks cannot score %s (%s); torch.func scores them", ", ".join(names), reason)
                    func_params.update((n, wanted[n]) for n in names)
                    moved = True
            if loop_params:
                _accumulate_loop(model, batch, labels, loop_params, fisher)
            if func_params:
                _accumulate_func_or_loop(model, batch, labels, func_params, loop_params, fisher,
                                         strict=estimator == "func", check=check or moved, tol=tol,
                                         chunk_size=chunk_size)
            seen += batch["labels"].shape[0]
    if seen == 0:
        raise DataError("fisher: the batches held no examples")
    if seen < num_samples:
        logger.warning("fisher: batches ran out after %d of %d requested examples", seen, num_samples)
    return fisher


def _on_device(batch: Batch, device: torch.device) -> Batch:
    """The batch's tensors on `device`; an entry that is not a tensor is a DataError naming it."""
    wrong = [k for k, v in batch.items() if not isinstance(v, Tensor)]
    if wrong:
        raise DataError(f"fisher: batch entry {wrong[0]!r} is a {type(batch[wrong[0]]).__name__}, not a tensor; "
                        "pass batches of tensors only (drop or tensorise the other entries)")
    return {k: v.to(device) for k, v in batch.items()}


@contextmanager
def _precision(device_type: str, precision: str) -> Iterator[None]:
    """Autocast off (the model's device type and the CPU) for fp32; bf16 autocast on for "bf16"."""
    with ExitStack() as stack:
        for kind in dict.fromkeys((device_type, "cpu")):
            stack.enter_context(torch.autocast(kind, enabled=False))
        if precision == "bf16":
            stack.enter_context(torch.autocast(device_type, dtype=torch.bfloat16))
        yield


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

    def expected_squared_error(logits: Tensor) -> list[Tensor]:
        return [2 * logits.float().squeeze(-1).sum()]

    def expected_ce(logits: Tensor) -> list[Tensor]:
        logits = logits.float()
        log_p = logits.log_softmax(-1)
        weight = log_p.detach().exp().sqrt()  # sqrt(p_c): squaring the gradient gives p_c * g_c^2
        return [-(weight[:, c] * log_p[:, c]).sum() for c in range(logits.shape[-1])]

    if _is_regression(model, targets):
        return expected_squared_error if labels == "expected" else squared_error
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


# --- the estimators ----------------------------------------------------------------------------


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


def _accumulate_func_or_loop(
    model: nn.Module,
    batch: Batch,
    labels: str,
    func_params: dict[str, nn.Parameter],
    loop_params: dict[str, nn.Parameter],
    fisher: dict[str, Tensor],
    *,
    strict: bool,
    check: bool,
    tol: float,
    chunk_size: int | None,
) -> None:
    """The func estimator on ``batch``; what it cannot score moves to the loop (``strict``: raise).

    Parameters that fail go from ``func_params`` to ``loop_params`` (for the later batches) and the
    loop scores them here from the first example func did not add.
    """
    batch = _cut_trailing_padding(batch)
    _loss_terms(model, batch["labels"], labels)  # label errors surface here, not inside vmap

    def terms(logits: Tensor, targets: Tensor) -> list[Tensor]:
        return _loss_terms(model, targets, labels)(logits)

    while func_params:
        try:
            accumulate_func(model, batch, func_params, fisher, terms=terms, chunk_size=chunk_size, check=check, tol=tol)
            return
        except FuncFailed as err:
            if strict:
                hint = " (if vmap fails in the attention, load the model with attn_implementation='eager')"
                raise FishtuneError(f"fisher estimator 'func': {err}; use estimator 'loop'"
                                    + (hint if err.__cause__ is not None else "")) from err
            logger.warning("fisher: %s; the batch-1 loop scores %s instead", err, ", ".join(err.names))
            moved = {n: func_params.pop(n) for n in err.names}
            loop_params.update(moved)
            _accumulate_loop(model, {k: v[err.start :] for k, v in batch.items()}, labels, moved, fisher)


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
