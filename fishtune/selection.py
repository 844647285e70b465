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

import logging
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import torch
from omegaconf import DictConfig
from torch import Tensor, nn

from .batching import Encoded, iterate, train_order
from .errors import ConfigError
from .fisher import empirical_fisher
from .live import Pair, dead_entries, select_live
from .masking import mask_stats, select_mask
from .train import make_optimizer, model_inputs, task_loss

log = logging.getLogger(__name__)


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
    if keep < 1:
        raise ConfigError(f"the mask budget is {keep} entries (keep_ratio {mask_cfg.keep_ratio} of {method_total}"
                          f"{' minus the head' if mask_cfg.head_in_budget else ''}); raise mask.keep_ratio")
    return keep


def matched_budget(base_model: nn.Module, mask_cfg: DictConfig, *, own_dense: int) -> int | None:
    """k that makes this run train exactly as many entries as `mask.keep_match` does (None if unset).

    The matched method config is applied to `base_model` (a fresh copy of this run's model, thrown
    away afterwards): k = its candidates + its dense group - this run's dense group, so the
    optimizer-updated counts (selected + dense; the head is the same model's) are equal.
    """
    spec = mask_cfg.get("keep_match")
    if mask_cfg.name == "none" or spec is None:
        return None
    from .methods import count_for, method_config

    candidates, dense = count_for(base_model, method_config(spec))
    return candidates + dense - own_dense


@dataclass
class MaskResult:
    mask: dict[str, Tensor]       # bool, CPU, keyed by model.named_parameters() names
    stats: dict                   # selected/total, share per tensor family, ties at the threshold
    fisher_time_s: float
    warmup_time_s: float


def build_mask(model: nn.Module, method_params: list[str], mask_cfg: DictConfig, data: Encoded, *,
               keep: int, lr: float, seed: int, pad_id: int, device: torch.device, autocast: bool,
               pairs: Sequence[Pair] = (), families: Mapping[str, str] | None = None) -> MaskResult:
    """Select the `keep` method entries that will train (FISH, reverse or random).

    `pairs` are the method's zero-initialised factor pairs (`fishtune.live`): the stats count the
    selected entries that can never move, and `mask.live=true` selects only entries that can.
    """
    params = dict(model.named_parameters())
    warmup_time = fisher_time = 0.0
    if mask_cfg.strategy == "random":
        scores = {n: torch.zeros(params[n].shape) for n in method_params}  # shapes only
    else:
        if mask_cfg.fisher_at == "warmup" and mask_cfg.warmup_steps > 0:
            start = time.perf_counter()
            initial = {n: p.detach().clone() for n, p in params.items() if p.requires_grad}
            _dense_warmup(model, data, steps=mask_cfg.warmup_steps, batch_size=mask_cfg.fisher_batch_size,
                          lr=lr, seed=seed, pad_id=pad_id, device=device, autocast=autocast)
            warmup_time = time.perf_counter() - start
        start = time.perf_counter()
        batches = _fisher_batches(data, mask_cfg, seed=seed, pad_id=pad_id, device=device)
        # fp32 whatever the training precision: empirical_fisher turns autocast off inside.
        scores = empirical_fisher(model, batches, num_samples=mask_cfg.num_samples, estimator=mask_cfg.estimator,
                                  labels=mask_cfg.labels, param_names=method_params)
        fisher_time = time.perf_counter() - start
        if mask_cfg.fisher_at == "warmup" and mask_cfg.warmup_steps > 0:
            with torch.no_grad():
                for n, value in initial.items():
                    params[n].copy_(value)
        scores = {n: s.cpu() for n, s in scores.items()}
    starting = {n: params[n].detach().cpu() for n in method_params}  # where masked training starts
    if mask_cfg.get("live"):
        mask = select_live(scores, keep=keep, strategy=mask_cfg.strategy, seed=int(mask_cfg.seed), pairs=pairs,
                           initial=starting)
    else:
        mask = select_mask(scores, keep=keep, strategy=mask_cfg.strategy, seed=int(mask_cfg.seed),
                           scope=mask_cfg.scope)
    stats = mask_stats(mask, None if mask_cfg.strategy == "random" else scores, families=families)
    stats.update(dead_stats(dead_entries(mask, pairs, starting), stats["selected"], families))
    if mask_cfg.strategy != "random":
        stats["fisher_precision"] = "fp32"
    return MaskResult(mask, stats, fisher_time, warmup_time)


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


def _dense_warmup(model: nn.Module, data: Encoded, *, steps: int, batch_size: int, lr: float, seed: int,
                  pad_id: int, device: torch.device, autocast: bool) -> None:
    """`steps` plain AdamW steps (constant lr) on every trainable parameter; the optimizer is discarded."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = make_optimizer(trainable, lr=lr, weight_decay=0.0, device=device)
    model.train()
    lengths = data.lengths()
    done = 0
    epoch = -2
    while done < steps:
        # Length-grouped, dynamically padded batches as in training (a pure function of the seed).
        order = train_order(lengths, batch_size=batch_size, seed=seed, epoch=epoch, group_by_length=True)
        for batch in iterate(data, order[: steps - done], pad_id=pad_id, multiple=8, device=device):
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
                logits = model(**model_inputs(batch)).logits
            task_loss(logits, batch["labels"]).backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            done += 1
        epoch -= 1
    log.info("dense warm-up: %d steps before the Fisher (parameters restored afterwards)", steps)
