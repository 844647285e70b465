"""Fixed sparse masks: exactly k entries chosen from per-parameter scores (FISH Mask).

Given scores s (one tensor per named parameter, e.g. the empirical Fisher of `fishtune.fisher`),
the FISH mask keeps the k entries with the largest s over all parameters flattened together:

    M = argtop-k_{i over all entries of all tensors} s_i      (scope "global", strategy "fish")

"reverse" keeps the k smallest scores (the contrastive control), "random" a uniform random
k-subset that depends only on the shapes and the seed. Scope "per_tensor" gives each tensor t the
share k * n_t / N of the budget (largest-remainder rounding, so the shares add up to k exactly).

Exactly k entries are kept whatever the ties: thresholding with `s >= kth_value` would keep every
entry tied with the k-th (e.g. all the zero scores of LoRA's A at initialisation) and silently
train far more than k. Entries are ordered by the concatenation of the flattened tensors, keys
sorted by name, and ties are broken by that flat index, so the mask does not depend on the dict's insertion order. All entries are ranked once, by score descending and
then by flat index ascending (a stable sort); "fish" keeps the first k of that ranking and
"reverse" the last k. So among tied scores fish prefers lower indices and reverse higher ones,
which makes the two masks disjoint whenever 2k <= N, ties or not.
"""

from __future__ import annotations

import logging
import numbers
import operator
from collections.abc import Mapping

import numpy as np
import torch
from torch import Tensor

from fishtune.errors import ConfigError

logger = logging.getLogger(__name__)

STRATEGIES = ("fish", "reverse", "random")
SCOPES = ("global", "per_tensor")


def select_mask(
    scores: Mapping[str, Tensor], *, keep: int, strategy: str, seed: int = 0, scope: str = "global"
) -> dict[str, Tensor]:
    """Boolean masks (CPU, same keys and shapes as ``scores``) with exactly ``keep`` True entries.

    strategy: "fish" (largest scores), "reverse" (smallest) or "random" (seeded; values ignored).
    scope: "global" (one top-k over everything, as FISH) or "per_tensor" (proportional quotas).
    Ties at the boundary are broken by flat index (see the module docstring), with a logged warning.
    """
    if strategy not in STRATEGIES:
        raise ConfigError(f"mask strategy must be one of {STRATEGIES}, got {strategy!r}")
    if scope not in SCOPES:
        raise ConfigError(f"mask scope must be one of {SCOPES}, got {scope!r}")
    names, sizes, keep, flat = flat_scores(scores, keep, finite=strategy != "random")
    total = flat.numel()
    generator = torch.Generator().manual_seed(seed)
    chosen = torch.zeros(total, dtype=torch.bool)
    if scope == "global":
        chosen[_choose(flat, keep, strategy, generator)] = True
    else:
        for part, part_scores, quota in zip(chosen.split(sizes), flat.split(sizes), _quotas(sizes, keep)):
            part[_choose(part_scores, quota, strategy, generator)] = True  # `part` is a view of `chosen`
    masks = dict(zip(names, (c.reshape(scores[n].shape) for n, c in zip(names, chosen.split(sizes)))))
    return {n: masks[n] for n in scores}


def flat_scores(scores: Mapping[str, Tensor], keep: object, *,
                finite: bool) -> tuple[list[str], list[int], int, Tensor]:
    """The scores as one float64 vector on the CPU, tensors in sorted-name order, with those names, their
    sizes and `keep` checked to be an integer in [1, total] (and, if `finite`, every score finite)."""
    names = sorted(scores)
    sizes = [scores[n].numel() for n in names]
    total = sum(sizes)
    k = as_int(keep)
    if k is None or not 0 < k <= total:
        raise ConfigError(f"mask keep must be an integer in [1, {total}] (the entries scored), got {keep!r}")
    flat = torch.cat([scores[n].detach().reshape(-1).to("cpu", torch.float64) for n in names])
    if finite and not torch.isfinite(flat).all():
        raise ConfigError("mask scores contain NaN or infinite values")
    return names, sizes, k, flat


def as_int(value: object) -> int | None:
    """`value` as an int if it is an integer (anything `operator.index` takes: int, a NumPy integer,
    an integer 0-d tensor) and not a bool; else None."""
    if isinstance(value, (bool, np.bool_)) or (isinstance(value, Tensor) and value.dtype == torch.bool):
        return None
    try:
        return operator.index(value)
    except TypeError:
        return None


def as_real(value: object) -> float | None:
    """`value` as a float if it is a real number (`numbers.Real`: int, float, NumPy scalars; or a
    real 0-d tensor) and not a bool; else None."""
    if isinstance(value, Tensor):
        if value.dim() != 0 or value.dtype == torch.bool or value.is_complex():
            return None
        value = value.item()
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        return None
    return float(value)


def _choose(flat: Tensor, k: int, strategy: str, generator: torch.Generator) -> Tensor:
    """Flat indices of the k entries that ``strategy`` keeps (ranking in the module docstring)."""
    if k == 0:
        return torch.empty(0, dtype=torch.long)
    if strategy == "random":
        return torch.randperm(flat.numel(), generator=generator)[:k]
    ranking = torch.sort(flat, descending=True, stable=True).indices
    order = ranking if strategy == "fish" else ranking.flip(0)
    _warn_ties(flat, order, k)
    return order[:k]


def _warn_ties(flat: Tensor, order: Tensor, k: int) -> None:
    """Warn when the k-th kept score equals scores left outside (the cut fell inside a tie)."""
    boundary = flat[order[k - 1]]
    outside = int((flat[order[k:]] == boundary).sum())
    if outside:
        inside = int((flat[order[:k]] == boundary).sum())
        logger.warning(
            "mask: %d entries tie at the boundary score %g (%d kept, %d left out); "
            "ties were broken by flat index (fish keeps lower indices, reverse higher)",
            inside + outside,
            float(boundary),
            inside,
            outside,
        )


def _quotas(sizes: list[int], keep: int) -> list[int]:
    """Per-tensor budgets keep * n_t / N, rounded by largest remainder so they sum to ``keep``.

    Exact integer arithmetic; remainders tied go to the earlier tensor (name order). No quota
    exceeds its tensor: keep <= N makes keep * n_t / N <= n_t.
    """
    total = sum(sizes)
    quotas = [keep * n // total for n in sizes]
    remainders = [keep * n % total for n in sizes]
    by_remainder = sorted(range(len(sizes)), key=lambda t: -remainders[t])
    for t in by_remainder[: keep - sum(quotas)]:
        quotas[t] += 1
    return quotas


def mask_stats(mask: Mapping[str, Tensor], scores: Mapping[str, Tensor] | None = None, *,
               families: Mapping[str, str] | None = None) -> dict:
    """Counts that make a mask auditable.

    Returns ``selected`` (True entries), ``total`` and ``by_family`` ({family: {selected, total,
    share_of_mask}}, share_of_mask = family's selected / all selected), where ``families`` maps each
    parameter name to the family its method declared (`MethodSetup.candidates`; without it every
    tensor counts as family "all") and ``selected_by_param`` ({parameter name: selected entries},
    names as given, for the report's per-layer mask anatomy). With ``scores``, also
    ``threshold_ties``: entries outside the mask whose score equals the boundary score (the k-th kept
    one), and ``zero_score_selected``: kept entries whose score is exactly 0.
    """
    uncovered = [n for n in mask if families is not None and n not in families]
    if uncovered:
        raise ConfigError(f"mask_stats: families name no family for {uncovered[0]!r} ({len(uncovered)} "
                          "parameters in all); give every masked parameter one")
    by_family: dict[str, dict[str, float]] = {}
    for name, m in mask.items():
        fam = by_family.setdefault(families[name] if families is not None else "all", {"selected": 0, "total": 0})
        fam["selected"] += int(m.sum())
        fam["total"] += m.numel()
    selected = sum(int(f["selected"]) for f in by_family.values())
    for fam in by_family.values():
        fam["share_of_mask"] = fam["selected"] / selected if selected else 0.0
    stats: dict = {"selected": selected, "total": sum(int(f["total"]) for f in by_family.values())}
    stats["by_family"] = by_family
    stats["selected_by_param"] = {name: int(m.sum()) for name, m in sorted(mask.items())}
    if scores is not None:
        stats.update(_score_stats(mask, scores))
    return stats


def _score_stats(mask: Mapping[str, Tensor], scores: Mapping[str, Tensor]) -> dict[str, int]:
    """threshold_ties and zero_score_selected (see `mask_stats`)."""
    if set(mask) != set(scores):
        raise ConfigError("mask_stats: mask and scores must have the same parameter names")
    names = sorted(mask)
    m = torch.cat([mask[n].reshape(-1).cpu() for n in names])
    s = torch.cat([scores[n].detach().reshape(-1).to("cpu", torch.float64) for n in names])
    kept, left = s[m], s[~m]
    if kept.numel() == 0:
        return {"threshold_ties": 0, "zero_score_selected": 0}
    # The boundary is the smallest kept score of a fish mask, the largest of a reverse one. An entry
    # left out can equal the other extreme only if every kept score is equal, so counting both
    # extremes is exact for either strategy (for a random mask the count means little).
    at_boundary = (left == kept.min()) | (left == kept.max())
    return {"threshold_ties": int(at_boundary.sum()), "zero_score_selected": int((kept == 0).sum())}
