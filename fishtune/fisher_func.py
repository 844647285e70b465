r"""The ``"func"`` Fisher estimator: exact per-example gradients of any parameter with ``torch.func``.

For example n (inputs x_n as they sit in the batch, padding and attention mask included; label y_n)
and the sum-reduced loss terms L_k (k = 1 for true labels, one per class for expected labels), the
estimate adds, for every requested parameter theta,

    sum_n sum_k ( d/dtheta L_k(f_theta(x_n), y_n) )^2        (elementwise),

where f_theta(x_n) is the model called on x_n as a batch of one. ``vmap(jacrev(...))`` over the
examples evaluates every g_{n,k} = dL_k(f_theta(x_n))/dtheta in one batched pass, with theta fed in
through ``functional_call``. vmap keeps the examples apart by construction (each is its own batch of
one), so the result is exact whatever the parameter: LayerNorms, embeddings, DoRA magnitudes,
AdapterHub's raw-Parameter LoRA, prefix embeddings, gates. The examples go through in chunks, so at
most ``chunk * K * (entries of the parameters)`` per-example gradient floats exist at once.

Examples see the batch's padding, as in the batched forward: for models whose output does not depend
on masked positions (all but AdapterHub's UniPELT, whose gates average over padding too) this equals
the batch-1 loop, which strips each example's padding, up to rounding.

Attention: transformers 4.57's BERT/RoBERTa choose their attention class when built and cache
``attn_implementation`` on the base model. With ``"sdpa"`` the forward builds the 4-D mask with
``_prepare_4d_attention_mask_for_sdpa``, whose ``if torch.all(mask == 1)`` is data-dependent control
flow that vmap refuses. While estimating, that cached attribute is set to ``"eager"`` (the 2-D mask
then becomes the additive (1 - mask) * finfo.min mask, which the SDPA modules take as ``attn_mask``)
and ``scaled_dot_product_attention`` is limited to its math kernel, made of ordinary ops that vmap
batches (CPU's fused kernel has no batching rule: vmap would run it example by example). Both are
restored afterwards. Models that still cannot run under vmap raise :class:`FuncFailed`.

Parameters are handed to ``functional_call`` once per module holding them, not through its
``tie_weights`` (see :func:`_holders`), and every holder's Parameter is put back afterwards.

Check: on request (the first batch), the per-example gradients of the first chunk summed over its
examples must equal ``torch.autograd.grad`` of the chunk's summed loss. A parameter that
``functional_call`` cannot substitute (one the model reaches other than as a module attribute) would
get zero per-example gradients and fails the check instead of scoring 0.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager

import torch
from torch import Tensor, nn
from torch.func import functional_call, jacrev, vmap
from torch.nn.attention import SDPBackend, sdpa_kernel

from fishtune.errors import FishtuneError

# logits, targets -> the sum-reduced loss terms whose per-example gradients are squared and summed.
Terms = Callable[[Tensor, Tensor], list[Tensor]]

# Per-example gradient floats per chunk when ``chunk_size`` is None (2**27 floats: 512 MiB in fp32).
GRADIENT_BUDGET = 2**27


class FuncFailed(FishtuneError):
    """The func estimator could not score ``names``; examples ``start:`` of the batch were not added."""

    def __init__(self, message: str, names: list[str], start: int) -> None:
        super().__init__(message)
        self.names = names
        self.start = start


def accumulate_func(
    model: nn.Module,
    batch: Mapping[str, Tensor],
    params: Mapping[str, nn.Parameter],
    fisher: dict[str, Tensor],
    *,
    terms: Terms,
    chunk_size: int | None,
    check: bool,
    tol: float,
) -> None:
    """Add ``batch``'s per-example squared gradients of ``params`` to ``fisher`` (module docstring).

    Raises :class:`FuncFailed` if vmap cannot run the model (every name; the examples from the
    failing chunk on were not added) or if ``check`` finds a mismatch (those names; nothing of the
    batch was added for any parameter).
    """
    names = list(params)
    theta = {n: p.detach() for n, p in params.items()}
    holders = _holders(model, params)
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    targets = batch["labels"]

    def example_terms(theta: dict[str, Tensor], one: dict[str, Tensor], target: Tensor) -> Tensor:
        values = {path: theta[n] for n, paths in holders.items() for path in paths.values()}
        out = functional_call(model, values, (), {k: v.unsqueeze(0) for k, v in one.items()}, tie_weights=False)
        return torch.stack(terms(_logits(out), target.unsqueeze(0)))

    per_example = vmap(jacrev(example_terms), in_dims=(None, 0, 0))
    size = targets.shape[0]
    chunk = chunk_size or max(1, GRADIENT_BUDGET // max(1, sum(p.numel() for p in theta.values())))
    with _vmappable_attention(model), _parameters_kept(holders):
        for start in range(0, size, chunk):
            part = {k: v[start : start + chunk] for k, v in inputs.items()}
            try:
                # Outside the transforms, nothing needs a graph: without no_grad, autograd records
                # the whole vmap(jacrev) computation whenever a parameter outside `theta` requires
                # grad (a head, the other candidates), and `fisher +=` then chains every batch's
                # graph onto the Fisher (+0.5 GB per batch on MiniLM). jacrev ignores the outer mode.
                with torch.no_grad():
                    grads = per_example(theta, part, targets[start : start + chunk])
            except torch.OutOfMemoryError:
                raise
            except Exception as err:
                raise FuncFailed(f"torch.func could not run the model ({type(err).__name__}: "
                                 f"{_first_line(err)})", names, start) from err
            if check and start == 0:
                _check_sums(model, params, part, targets[:chunk], grads, terms, tol)
            for n in names:  # one parameter's squares at a time, each freed as it is added
                fisher[n] += grads.pop(n).float().square().sum((0, 1))


def _check_sums(
    model: nn.Module,
    params: Mapping[str, nn.Parameter],
    inputs: Mapping[str, Tensor],
    targets: Tensor,
    grads: Mapping[str, Tensor],
    terms: Terms,
    tol: float,
) -> None:
    """Per-example gradients summed over the chunk == autograd's gradient of the chunk's total loss."""
    total = torch.stack(terms(_logits(model(**inputs)), targets)).sum()
    names = list(params)
    batch_grads = torch.autograd.grad(total, [params[n] for n in names], allow_unused=True)
    summed = {n: grads[n].float().sum((0, 1)) for n in names}
    reference = {n: torch.zeros_like(summed[n]) if g is None else g.float() for n, g in zip(names, batch_grads)}
    bad = mismatched(summed, reference, tol)
    if bad:
        raise FuncFailed("per-example gradients from torch.func do not add up to the batch gradient for "
                         + ", ".join(bad), bad, 0)


def mismatched(values: Mapping[str, Tensor], reference: Mapping[str, Tensor], tol: float) -> list[str]:
    """Names whose max |value - ref| exceeds ``tol`` times max |ref|; the scale is floored at 1e-3
    of the largest reference of all, so that analytically zero gradients (rounding noise only, e.g.
    an attention key bias) compare against the others' scale."""
    overall = max((r.abs().max().item() for r in reference.values() if r.numel()), default=0.0)
    bad = []
    for n, ref in reference.items():
        if not ref.numel():
            continue
        scale = max(ref.abs().max().item(), 1e-3 * overall)
        if (values[n] - ref).abs().max().item() > tol * scale:
            bad.append(n)
    return bad


def _holders(model: nn.Module, params: Mapping[str, nn.Parameter]) -> dict[str, dict[tuple[nn.Module, str], str]]:
    """{name: {(module, attribute): one path to it}} for every module that holds each parameter.

    ``functional_call`` gets one path per holder, with ``tie_weights=False``. Its own tying swaps a
    module once per path, and a module reachable by several paths (AdapterHub's prefix pool sits
    under every layer and under the base model) is then left holding the substituted tensor (torch
    2.13). One path per holder still substitutes a weight tied across modules everywhere.
    """
    by_id = {id(p): n for n, p in params.items()}
    holders: dict[str, dict[tuple[nn.Module, str], str]] = {n: {} for n in params}
    for prefix, module in model.named_modules(remove_duplicate=False):
        for attr, p in module._parameters.items():
            if p is not None and id(p) in by_id:
                holders[by_id[id(p)]].setdefault((module, attr), f"{prefix}.{attr}" if prefix else attr)
    return holders


@contextmanager
def _parameters_kept(holders: Mapping[str, Mapping[tuple[nn.Module, str], str]]) -> Iterator[None]:
    """Put every holder's original Parameter back on exit, whatever ``functional_call`` left."""
    originals = [(module, attr, module._parameters[attr]) for paths in holders.values() for module, attr in paths]
    try:
        yield
    finally:
        for module, attr, p in originals:
            if module._parameters[attr] is not p:
                module._parameters[attr] = p


@contextmanager
def _vmappable_attention(model: nn.Module) -> Iterator[None]:
    """Cached ``attn_implementation == "sdpa"`` set to ``"eager"``, SDPA on its math kernel (docstring)."""
    switched = [m for m in model.modules() if m.__dict__.get("attn_implementation") == "sdpa"]
    for m in switched:
        m.attn_implementation = "eager"
    try:
        with sdpa_kernel(SDPBackend.MATH):
            yield
    finally:
        for m in switched:
            m.attn_implementation = "sdpa"


def _logits(out: object) -> Tensor:
    return out.logits if hasattr(out, "logits") else out  # type: ignore[return-value]


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0][:200] if text else "no message"
