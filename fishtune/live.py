r"""Budget that can never move, and a selection that spends the whole budget on entries that can.

A factor pair (down, up) computes h = up @ f(down @ x) with `up` starting at exactly zero (LoRA's B,
a parallel adapter's up-projection). Rank component i couples row i of `down` (shape (r, in), plus
entry i of its bias) with column i of `up` (shape (out, r)):

    dL/d down[i, :] = (up[:, i]^T dL/dh) * f'(.) x^T

so while column i of `up` is zero, row i of `down` receives exactly zero gradient. If a fixed mask
selects no entry of that column, the column stays zero for ever and every selected entry of row i
is *dead*: counted in the trainable budget, never moved. (Entries of `up` itself are always live:
their gradient is dL/dh times f(down @ x), which is non-zero for a random `down`.)

`dead_entries` finds them for a given mask. `select_live` is the alternative selection
(`mask.live=true`): go down the ranking (largest Fisher first for fish, smallest for reverse, a
seeded permutation for random); an entry of a row whose partner column has nothing selected yet
is set aside; when the first entry of that column is selected, the set-aside entries of its row
(ranked higher than the current one) are selected at once; stop after exactly k entries. Every
selected entry can then move. Plain top-k stays the default (it is the paper's rule).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

import numpy as np
import torch
from torch import Tensor

from .errors import ConfigError
from .masking import flat_scores


class Pair(Protocol):
    """What a method declares for a zero-initialised factor pair (see `fishtune.methods.FactorPair`)."""

    down: str
    up: str
    down_bias: str | None
    down_transposed: bool
    up_transposed: bool


def _rank_major(t: Tensor, transposed: bool, *, up: bool) -> Tensor:
    """View a factor with the rank axis first: down as (r, in), up as (r, out)."""
    if up:
        return t if transposed else t.T  # stored (out, r) unless transposed (r, out)
    return t.T if transposed else t


def dead_components(mask: Mapping[str, Tensor], pair: Pair, initial: Mapping[str, Tensor]) -> Tensor:
    """Bool (r,): rank components whose `up` column starts at zero and has no selected entry."""
    up0 = _rank_major(initial[pair.up], pair.up_transposed, up=True)
    up_mask = _rank_major(mask[pair.up], pair.up_transposed, up=True)
    return (up0 == 0).all(1).cpu() & ~up_mask.any(1).cpu()


def dead_entries(mask: Mapping[str, Tensor], pairs: Sequence[Pair], initial: Mapping[str, Tensor]) -> dict[str, int]:
    """Selected entries that can never move, per parameter name (only names with some)."""
    dead: dict[str, int] = {}
    for pair in pairs:
        if pair.down not in mask or pair.up not in mask:
            continue
        comps = dead_components(mask, pair, initial)
        if not comps.any():
            continue
        down = _rank_major(mask[pair.down].cpu(), pair.down_transposed, up=False)
        dead[pair.down] = dead.get(pair.down, 0) + int(down[comps].sum())
        if pair.down_bias is not None and pair.down_bias in mask:
            dead[pair.down_bias] = dead.get(pair.down_bias, 0) + int(mask[pair.down_bias].cpu()[comps].sum())
    return {n: c for n, c in dead.items() if c}


def select_live(scores: Mapping[str, Tensor], *, keep: int, strategy: str, seed: int, pairs: Sequence[Pair],
                initial: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Exactly `keep` entries, none of them dead (module docstring); global scope only."""
    if strategy not in ("fish", "reverse", "random"):
        raise ConfigError(f"mask strategy must be fish, reverse or random, got {strategy!r}")
    names, sizes, keep, flat = flat_scores(scores, keep, finite=strategy != "random")
    offsets = dict(zip(names, np.cumsum([0, *sizes[:-1]]).tolist()))
    total = flat.numel()
    if strategy == "random":
        order = torch.randperm(total, generator=torch.Generator().manual_seed(seed))
    else:
        order = torch.sort(flat, descending=True, stable=True).indices
        order = order if strategy == "fish" else order.flip(0)

    # comp_of_down[i]: the component whose up column gates flat entry i (-1: free);
    # comp_of_up[i]: the component whose column flat entry i belongs to (-1: not a zero column).
    comp_of_down = np.full(total, -1, dtype=np.int64)
    comp_of_up = np.full(total, -1, dtype=np.int64)
    n_comps = 0
    for pair in pairs:
        if pair.down not in scores or pair.up not in scores:
            continue
        up0 = _rank_major(initial[pair.up].cpu(), pair.up_transposed, up=True)
        zero = (up0 == 0).all(1).numpy()
        ids = np.where(zero, n_comps + np.arange(len(zero)), -1)
        n_comps += len(zero)
        _paint(comp_of_up, offsets[pair.up], scores[pair.up].shape, ids, rank_axis=0 if pair.up_transposed else 1)
        _paint(comp_of_down, offsets[pair.down], scores[pair.down].shape, ids,
               rank_axis=1 if pair.down_transposed else 0)
        if pair.down_bias is not None and pair.down_bias in scores:
            comp_of_down[offsets[pair.down_bias]: offsets[pair.down_bias] + len(ids)] = ids

    chosen = _greedy(order.numpy(), keep, comp_of_down, comp_of_up, n_comps)
    selected = np.zeros(total, dtype=bool)
    selected[chosen] = True
    parts = torch.from_numpy(selected).split(sizes)
    masks = {n: p.reshape(scores[n].shape).clone() for n, p in zip(names, parts)}
    return {n: masks[n] for n in scores}


def _paint(target: np.ndarray, offset: int, shape: torch.Size, ids: np.ndarray, *, rank_axis: int) -> None:
    """Write component ids into the flat slice of a 2-D tensor, broadcasting along the rank axis."""
    grid = np.broadcast_to(ids[:, None] if rank_axis == 0 else ids[None, :], tuple(shape))
    target[offset: offset + grid.size] = grid.reshape(-1)


def _greedy(order: np.ndarray, keep: int, comp_of_down: np.ndarray, comp_of_up: np.ndarray, n_comps: int) -> list[int]:
    """Walk the ranking, deferring gated entries until their component's column is selected."""
    live = np.zeros(n_comps, dtype=bool)
    pending: dict[int, list[int]] = {}
    chosen: list[int] = []
    for idx in order.tolist():
        comp = comp_of_down[idx]
        if comp >= 0 and not live[comp]:
            pending.setdefault(comp, []).append(idx)
            continue
        chosen.append(idx)
        column = comp_of_up[idx]
        if column >= 0 and not live[column]:
            live[column] = True
            chosen.extend(pending.pop(column, []))
        if len(chosen) >= keep:
            break
    return chosen[:keep]
