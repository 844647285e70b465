"""The mask stage of a run: (optional dense warm-up) -> empirical Fisher -> top-k mask.

Budget. With P method parameters and keep ratio rho, k = round(rho * P) entries train
(`mask.keep` sets k directly). With `head_in_budget` (the FISH paper's accounting, where the
always-trained classifier of size H counts inside the budget) k = round(rho * (P + H)) - H.

Where the Fisher is taken. PEFT starts LoRA's B at zero, so at initialisation dL/dA = 0 for
every A entry (A's gradient is B^T (dL/dh) x^T): a Fisher taken there can only rank B.
`fisher_at=warmup` first trains every trainable parameter densely for `warmup_steps` steps,
estimates the Fisher there, and then restores every trainable parameter (method and head)
to its initial value, so masked training starts from the same point as the vanilla run.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from omegaconf import DictConfig
from torch import Tensor, nn

from .batching import Encoded, iterate, train_order
from .config import WARMUP_ORDERS, is_pair_match, warmup_order
from .errors import ConfigError
from .live import Pair

if TYPE_CHECKING:
    from .fishmask import FishMask


def mask_budget(mask_cfg: DictConfig, *, method_total: int, head_total: int, matched: int | None = None) -> int:
    """k, the number of method-parameter entries that train (see the module docstring);
    `matched` (from `matched_budget`, when `mask.keep_match` is set) is taken as it is."""
    if matched is not None:
        keep = matched
        if keep > method_total:
            raise ConfigError(f"mask.keep_match={mask_cfg.keep_match} trains {keep} entries, more than this method's "
                              f"{method_total} candidates; match a smaller config or enlarge this one")
    elif mask_cfg.keep is not None:
        keep = int(mask_cfg.keep)
    elif mask_cfg.head_in_budget:
        keep = round(float(mask_cfg.keep_ratio) * (method_total + head_total)) - head_total
    else:
        keep = round(float(mask_cfg.keep_ratio) * method_total)
    if keep > method_total:
        raise ConfigError(f"mask.keep={keep} is larger than the method's {method_total} parameters; "
                          "lower mask.keep or use mask.keep_ratio")
    if keep < 1 and matched is not None:
        raise ConfigError(f"mask.keep_match={mask_cfg.keep_match} leaves a budget of {keep} entries for this "
                          "method's mask (what that config trains, less what this one trains densely); match a "
                          "larger config")
    if keep < 1:
        raise ConfigError(f"the mask budget is {keep} entries (keep_ratio {mask_cfg.keep_ratio} of {method_total}"
                          f"{' minus the head' if mask_cfg.head_in_budget else ''}); raise mask.keep_ratio")
    return keep


def matched_budget(base_model: nn.Module, mask_cfg: DictConfig, *, own_dense: int,
                   vanilla: DictConfig | None = None) -> int | None:
    """k that makes this run train exactly as many entries as `mask.keep_match` does (None if unset).

    The matched method config is applied to `base_model` (a fresh copy of this run's model, thrown
    away afterwards): k = its candidates + its dense group - this run's dense group, so the
    optimizer-updated counts (selected + dense; the head is the same model's) are equal. `vanilla`,
    the method of a pair's vanilla cell (`pair_vanilla_method`), replaces the pair's own matched
    config (not one the command line set): the cell the masks are compared with, command-line
    overrides included.
    """
    spec = mask_cfg.get("keep_match")
    if mask_cfg.name == "none" or spec is None:
        return None
    from .methods import count_for, method_config

    matched = method_config(spec)
    if vanilla is not None and vanilla.name == matched.name and is_pair_match(mask_cfg):
        matched = vanilla
    try:
        candidates, dense = count_for(base_model, matched)
    except ConfigError as err:   # the matched config does not fit this model (`check_rank`, ...)
        raise ConfigError(f"mask.keep_match ({matched.name}): {err}") from None
    return candidates + dense - own_dense


@dataclass
class MaskResult:
    fish: FishMask                # the mask with its families, pairs and info (what `save` writes)
    stats: dict                   # selected/total, share per tensor family, ties at the threshold

    @property
    def mask(self) -> dict[str, Tensor]:
        """bool, CPU, keyed by model.named_parameters() names"""
        return self.fish.mask

    @property
    def fisher_time_s(self) -> float:
        return self.fish.info["fisher_time_s"]

    @property
    def warmup_time_s(self) -> float:
        return self.fish.info["warmup_time_s"]


def build_mask(model: nn.Module, method_params: list[str], mask_cfg: DictConfig, data: Encoded, *,
               keep: int, lr: float, seed: int, pad_id: int, device: torch.device, autocast: bool,
               pairs: Sequence[Pair] = (), families: Mapping[str, str] | None = None,
               fisher: Mapping[str, Tensor] | None = None) -> MaskResult:
    """Select the `keep` method entries that will train (FISH, reverse or random).

    The mask stage of `fishtune run`, through the public API (`FishMask.from_fisher`) with the run's
    own batches: the warm-up's batches (`mask.warmup_order`) and the Fisher's seeded sample of the data.
    `pairs` are the method's zero-initialised factor pairs (`fishtune.live`): the stats count the
    selected entries that can never move, and `mask.live=true` selects only entries that can.
    `fisher`: the Fisher these settings give, already estimated (`fishtune.fisher_cache`).
    """
    from .fishmask import FishMask

    warmup = mask_cfg.fisher_at == "warmup" and mask_cfg.warmup_steps > 0
    fish = FishMask.from_fisher(
        model, _fisher_batches(data, mask_cfg, seed=seed, pad_id=pad_id, device=device), keep=keep, fisher=fisher,
        strategy=mask_cfg.strategy, live=bool(mask_cfg.get("live")), scope=mask_cfg.scope,
        num_samples=mask_cfg.num_samples, labels=mask_cfg.labels, estimator=mask_cfg.estimator,
        params=method_params, fisher_at="warmup" if warmup else "init", warmup_steps=int(mask_cfg.warmup_steps),
        warmup_lr=lr, seed=int(mask_cfg.seed), families=families, pairs=pairs, autocast=autocast,
        warmup_batches=_warmup_batches(data, batch_size=mask_cfg.fisher_batch_size, seed=seed, pad_id=pad_id,
                                       device=device, order=warmup_order(mask_cfg)) if warmup else None)
    stats = fish.stats
    if mask_cfg.strategy != "random":
        stats["fisher_precision"] = "fp32"
        # what the estimate summed over: mask.num_samples, or the whole split where it is smaller (WNLI: 635)
        stats["fisher_examples"] = min(int(mask_cfg.num_samples), len(data))
    return MaskResult(fish, stats)


def dead_stats(dead: Mapping[str, int], selected: int, families: Mapping[str, str] | None) -> dict:
    """`dead_by_family` (selected entries that can never move) and `live_selected` (the rest)."""
    by_family: dict[str, int] = {}
    for name, count in dead.items():
        family = families[name] if families is not None else "all"
        by_family[family] = by_family.get(family, 0) + count
    return {"dead_by_family": by_family, "live_selected": selected - sum(by_family.values())}


def _fisher_batches(data: Encoded, mask_cfg: DictConfig, *, seed: int, pad_id: int,
                    device: torch.device) -> Iterator[dict[str, Tensor]]:
    """The first `num_samples` examples of a seeded shuffle, length-grouped (exact either way)."""
    lengths = data.lengths()
    order = train_order(lengths, batch_size=len(data), seed=seed, epoch=-1, group_by_length=False)[0]
    chosen = sorted(order[: mask_cfg.num_samples], key=lengths.__getitem__)
    size = mask_cfg.fisher_batch_size
    batches = [chosen[s: s + size] for s in range(0, len(chosen), size)]
    return iterate(data, batches, pad_id=pad_id, multiple=1, device=device)


def _warmup_batches(data: Encoded, *, batch_size: int, seed: int, pad_id: int, device: torch.device,
                    order: str = WARMUP_ORDERS[0]) -> Iterator[dict[str, Tensor]]:
    """The warm-up's batches, endless: epochs -2, -3, ... of `train_order` (a pure function of the seed).

    `shuffled` (the default): plain shuffled batches, padded to their longest example, as SGD draws
    them and as `FishCallback` draws them from a Trainer's dataset. `length_grouped`: batches of
    similar lengths padded to a multiple of 8, ~1.4x faster on CPU, but they move the warmed-up
    point the Fisher is taken at, and with it the mask (README, "Choices made where the paper is
    silent": 77% overlap and 6 points of MRPC score on one seed).
    """
    if order not in WARMUP_ORDERS:
        raise ConfigError(f"mask.warmup_order must be one of {', '.join(WARMUP_ORDERS)}, got {order!r}")
    grouped = order == "length_grouped"
    lengths = data.lengths()
    epoch = -2
    while True:
        batches = train_order(lengths, batch_size=batch_size, seed=seed, epoch=epoch, group_by_length=grouped)
        yield from iterate(data, batches, pad_id=pad_id, multiple=8 if grouped else 1, device=device)
        epoch -= 1
