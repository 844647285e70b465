"""`FishMask`: FISH masks in anyone's training loop.

    from fishtune import FishMask
    mask = FishMask.from_fisher(model, train_dataloader, keep=73_728, num_samples=1024)   # or keep_ratio=
    mask.attach(optimizer)     # grads masked after backward, frozen entries restored after each step
    ...                        # the user's own loop, unchanged
    mask.verify(model)         # raises if any frozen entry moved; returns the counts
    mask.save("mask.safetensors")                                                # FishMask.load(...)

`fishtune run` builds its masks through `from_fisher` (fishtune.selection.build_mask) and trains
through `attach` (fishtune.train.Trainer), so there is one implementation of both.

Candidates (`fishtune.candidates`). By default every trainable parameter except the classifier
head (recognised for transformers, PEFT and AdapterHub models; `head=` names others), or exactly
`params=`; so PEFT, AdapterHub and full fine-tuning all work. Families and zero-initialised factor
pairs are read from the library's modules.

Where the Fisher is taken (`fisher_at`). A zero-initialised factor (PEFT LoRA's B, AdapterHub
ParBn's up-projection) gives its partner exactly zero gradient, hence zero Fisher, at init.
`"warmup"`: `warmup_steps` dense AdamW steps (constant `warmup_lr`, no weight decay) on every
trainable parameter, the Fisher there, then every trainable parameter back to its value before the
warm-up. `"init"`: the Fisher at the current values. `"auto"` (default): warm-up exactly when a
candidate has such a partner (a declared pair whose up factor has an all-zero rank column). The
warm-up and the Fisher run inside `torch.random.fork_rng`: the global RNG streams (CPU and CUDA)
are left as they were; a DataLoader with its own `generator=` is advanced by the batches read from
it (pass `warmup_batches=` / a separate loader to keep its order). A model with a mask still
bound is refused: that mask turned requires_grad off where it selects nothing, and the new
candidates would silently leave those tensors out (`detach()` it first).

Batches. Dicts of tensors with a `labels` entry (what a transformers `Trainer` dataloader or
`DataCollatorWithPadding` yields), called as `model(**inputs).logits`: the exact estimators of
`fishtune.fisher` (auto | func | hooks | loop). Other batches or other losses: pass
`loss_fn(model, batch) -> Tensor` returning the per-example losses (negative log-likelihoods, shape
(n,)). Then the Fisher is the reference loop: each example is sliced out of its batch (every
tensor whose first dimension is the batch size, `v[i:i+1]`; a dict's trailing padding is cut by its
`attention_mask`) and `loss_fn` is called on that batch of one; the warm-up minimises
`loss_fn(model, batch).mean()`. `batches` must be re-iterable (a DataLoader, a list) when the
warm-up runs, unless `warmup_batches` is given; the warm-up cycles through it.

Hooks (`attach`). `Tensor.register_post_accumulate_grad_hook` masks each partially masked
parameter's gradient as soon as autograd has accumulated it, i.e. inside `backward()`, before any
clipping: `clip_grad_norm_` (yours, transformers' `max_grad_norm`) sees and returns the norm of the
masked gradients, and gradient accumulation sums masked gradients. `Optimizer.register_step_post_hook`
restores the frozen entries after every step that really ran (AMP's skipped steps included), so
weight decay and momentum cannot move them, whatever the torch optimizer. `attach` binds the mask
afresh each time: the frozen entries are held at the values they have when it is attached (so move,
convert or load the model first). Parameters with no selected entry get requires_grad off while the
mask is bound (attached, or `bind`: then an optimizer built afterwards leaves them out) and lose a
gradient left over from before; `detach()` removes the hooks and turns their requires_grad back on.
While torch.distributed is initialized they keep requiring grad and are held in place instead
(gradient zeroed, values restored after each step), because a DistributedDataParallel wrapper built
before the mask was bound expects their gradients (`fishtune.frozen`): DDP works with
find_unused_parameters=False, whether the mask was bound before or after the wrapping.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .candidates import candidates, structure, zero_factor
from .errors import ConfigError, first_line
from .frozen import EntryMask, check_mask, check_unbound
from .live import dead_entries, select_live
from .mask_stage import LossFn, _rng_forked, _warmup_source, dense_warmup, fisher_scores
from .masking import SCOPES, STRATEGIES, as_int, as_real, mask_stats, select_mask

log = logging.getLogger(__name__)

FISHER_AT = ("auto", "warmup", "init")
FORMAT = "fishtune.FishMask/2"
META_KEY = "fishtune.FishMask"  # the one metadata entry of a saved mask (format 2)
TIMING_KEYS = ("fisher_time_s", "warmup_time_s")  # in `info`; not part of what a mask is
ESTIMATE_KEYS = ("fisher_at", "warmup_steps", "num_samples", "labels", "estimator")  # in `info`: how the Fisher was made
__all__ = ["FishMask", "FISHER_AT", "LossFn", "budget", "candidates", "check_budget", "dense_warmup",
           "fisher_scores"]


class FishMask:
    """A fixed boolean mask per parameter (exactly `selected` True entries) and the hooks that
    enforce it in any training loop (module docstring)."""

    def __init__(self, mask: Mapping[str, Tensor], *, model: nn.Module | None = None,
                 families: Mapping[str, str] | None = None, pairs: Sequence = (),
                 scores: Mapping[str, Tensor] | None = None, info: Mapping[str, Any] | None = None):
        self.mask: dict[str, Tensor] = {n: _as_bool(n, m) for n, m in mask.items()}
        self.model = model
        self.families = dict(families) if families is not None else None
        self.pairs = list(pairs)
        self.scores = scores           # the Fisher scores the mask was selected from (None: random, loaded)
        self.info: dict[str, Any] = dict(info or {})
        self._starting: dict[str, Tensor] | None = None   # values where masked training starts (stats)
        self._engine: EntryMask | None = None
        self._snapshot = True          # what `attach` binds with (`bind(snapshot=)`)

    # --- building ---------------------------------------------------------------------------------

    @classmethod
    def from_fisher(cls, model: nn.Module, batches: Iterable | None = None, *, keep: int | None = None,
                    keep_ratio: float | None = None, strategy: str = "fish", live: bool = False,
                    scope: str = "global", num_samples: int = 1024, labels: str = "empirical",
                    estimator: str = "auto", loss_fn: LossFn | None = None, params: Sequence[str] | str | None = None,
                    head: Sequence[str] | str | None = None, fisher_at: str = "auto", warmup_steps: int = 50,
                    warmup_lr: float = 1e-3, warmup_batches: Iterable | None = None, seed: int = 0,
                    families: Mapping[str, str] | None = None, pairs: Sequence | None = None,
                    autocast: bool = False, fisher: Mapping[str, Tensor] | FishMask | None = None) -> FishMask:
        """Select exactly k entries of the candidates by the empirical Fisher (module docstring).

        keep / keep_ratio: k, or k = round(keep_ratio * candidate entries) (exactly one of them; any
        integer / real number, NumPy's and 0-d tensors included, but not a bool).
        strategy: fish (largest Fisher) | reverse (smallest) | random (seeded, no data needed);
        live: spend the budget only on entries that can move (`fishtune.live.select_live`);
        scope: global | per_tensor; labels: empirical | expected; estimator: auto | func | hooks |
        loop (`fishtune.fisher`); seed: the random strategy's. `families` ({parameter: family})
        overrides the detected family of the parameters it names, `pairs` replaces the detected
        pairs (fishtune's runner passes its method's); `autocast`: bf16 autocast during the
        warm-up (the Fisher is fp32 whatever it is). `fisher`: a Fisher already estimated, e.g. to take FISH
        and reverse masks or several budgets from one estimate: the warm-up and the estimate are skipped,
        `batches` is not read. Pass the mask it came from (`fisher=fish_mask`): `info` then records how
        that estimate was made; a bare {name: scores} is taken as estimated with this call's settings.
        """
        if not isinstance(model, nn.Module):
            raise ConfigError(f"from_fisher(model, batches, ...) takes the model (a torch nn.Module) first, "
                              f"got {type(model).__name__}")
        _check_choice("strategy", strategy, STRATEGIES)
        _check_choice("scope", scope, SCOPES)
        _check_choice("fisher_at", fisher_at, FISHER_AT)
        check_budget(keep, keep_ratio)
        check_unbound(model)
        fisher_from = fisher
        if isinstance(fisher, FishMask) and fisher.scores is None:
            raise ConfigError("fisher=: that FishMask holds no Fisher scores (a random or loaded mask)")
        if live and scope != "global":
            raise ConfigError("live=True needs scope='global'")
        if loss_fn is not None and (estimator not in ("auto", "loop") or labels != "empirical"):
            raise ConfigError("with loss_fn the Fisher is the per-example loop of your loss: leave estimator='auto' "
                              "(or 'loop') and labels='empirical'")
        steps, samples = as_int(warmup_steps), as_int(num_samples)
        if steps is None or steps < 0:
            raise ConfigError(f"warmup_steps must be an integer >= 0, got {warmup_steps!r}")
        if samples is None or samples < 1:
            raise ConfigError(f"num_samples must be a positive integer, got {num_samples!r}")
        warmup_steps, num_samples = steps, samples
        names = candidates(model, params=params, head=head)
        given = dict(families) if families is not None else {}
        if pairs is None or not set(names) <= set(given):
            detected_families, detected_pairs = structure(model, names)
            if not set(names) <= set(given):   # the given families win, the detected ones fill the gaps
                given = {**detected_families, **given}
            pairs = list(pairs) if pairs is not None else detected_pairs
        families = given
        named = dict(model.named_parameters())
        total = sum(named[n].numel() for n in names)
        k = budget(total, keep=keep, keep_ratio=keep_ratio)

        warm = strategy != "random" and (fisher_at == "warmup" or (fisher_at == "auto" and zero_factor(named, pairs)))
        warm = warm and warmup_steps > 0
        fisher_s = warmup_s = 0.0
        if strategy == "random":
            scores = {n: torch.zeros(named[n].shape) for n in names}  # shapes only
        elif fisher is not None:
            scores = _given_fisher(fisher_from.scores if isinstance(fisher_from, FishMask) else fisher,
                                   {n: named[n].shape for n in names})
        else:
            if batches is None:
                raise ConfigError(f"strategy {strategy!r} needs batches to estimate the Fisher from")
            initial = {n: p.detach().clone() for n, p in named.items() if p.requires_grad} if warm else {}
            # BatchNorm statistics and any other buffer: each put back as the very object it was
            buffers = [(m, n, b, b.detach().clone()) for m in model.modules() for n, b in m._buffers.items()
                       if b is not None] if warm else []
            try:
                with _rng_forked(model):
                    if warm:
                        start = time.perf_counter()
                        dense_warmup(model, _warmup_source(batches, warmup_batches), steps=warmup_steps,
                                     lr=warmup_lr, loss_fn=loss_fn, autocast=autocast)
                        warmup_s = time.perf_counter() - start
                    start = time.perf_counter()
                    scores = fisher_scores(model, batches, names=names, num_samples=num_samples, labels=labels,
                                           estimator=estimator, loss_fn=loss_fn)
                    fisher_s = time.perf_counter() - start
            finally:  # every trainable parameter and buffer back where it was, also when something above failed
                with torch.no_grad():
                    for n, value in initial.items():
                        named[n].copy_(value)
                    for module, n, original, value in buffers:
                        if (original.shape, original.dtype) == (value.shape, value.dtype):
                            original.copy_(value)
                        else:   # resized or converted in place
                            original = value
                        module._buffers[n] = original
            scores = {n: s.cpu() for n, s in scores.items()}
        starting = {n: named[n].detach().cpu() for n in names}  # where masked training starts
        if live:
            mask = select_live(scores, keep=k, strategy=strategy, seed=int(seed), pairs=pairs, initial=starting)
        else:
            mask = select_mask(scores, keep=k, strategy=strategy, seed=int(seed), scope=scope)
        info = {"strategy": strategy, "keep": k, "candidates": total, "live": bool(live), "scope": scope,
                "seed": int(seed), "fisher_at": "warmup" if warm else "init", "warmup_steps": warmup_steps if warm else 0,
                "fisher_time_s": round(fisher_s, 3), "warmup_time_s": round(warmup_s, 3)}
        if strategy != "random":
            info.update(num_samples=num_samples, labels=labels,
                        estimator="loop (loss_fn)" if loss_fn is not None else estimator)
            if isinstance(fisher_from, FishMask):   # how that estimate was made, not this call's defaults
                info.update({k: fisher_from.info[k] for k in ESTIMATE_KEYS if k in fisher_from.info})
        result = cls(mask, model=model, families=families, pairs=pairs,
                     scores=None if strategy == "random" else scores, info=info)
        result._starting = starting
        return result

    # --- what it holds ----------------------------------------------------------------------------

    @property
    def selected(self) -> int:
        return sum(int(m.sum()) for m in self.mask.values())

    @property
    def total(self) -> int:
        return sum(m.numel() for m in self.mask.values())

    @property
    def stats(self) -> dict:
        """`fishtune.masking.mask_stats` (share per family; with scores, ties at the threshold and
        zero-score selections) plus `dead_by_family` / `live_selected` (`fishtune.live`)."""
        from .selection import dead_stats

        stats = mask_stats(self.mask, self.scores, families=self.families)
        starting = self._starting
        if starting is None and self.model is not None:
            params = dict(self.model.named_parameters())
            starting = {n: params[n].detach().cpu() for n in self.mask if n in params}
        dead = dead_entries(self.mask, self.pairs, starting) if starting is not None else {}
        stats.update(dead_stats(dead, stats["selected"], self.families))
        return stats

    def __repr__(self) -> str:
        bound = self._engine is not None and self._engine.bound
        state = "attached" if self.attached else "bound" if bound else "unbound"
        return f"FishMask({self.selected:,} of {self.total:,} entries in {len(self.mask)} tensors, {state})"

    # --- training ---------------------------------------------------------------------------------

    def bind(self, model: nn.Module | None = None, *, snapshot: bool = True) -> FishMask:
        """Tie the mask to `model`'s parameters now (default: the model it was built on), undoing an
        earlier binding first (`detach`): tensors with nothing selected get requires_grad off (held
        instead under torch.distributed: module docstring) and lose a leftover gradient, a partially
        masked tensor's leftover gradient is masked, and the frozen entries' current values are the
        ones every step restores. `attach` binds afresh anyway: bind first to build an optimizer
        without the tensors that have nothing selected (as `fishtune run` does). `snapshot` keeps a
        CPU copy of the wholly frozen tensors for `verify` (later `attach`es keep this choice)."""
        model = model if model is not None else self.model
        if model is None:
            raise ConfigError("this mask has no model (it was loaded): pass model=, e.g. mask.attach(optimizer, model)")
        self.detach()
        self._engine = None   # stays None if the new binding fails
        self._engine = EntryMask(model, self.mask, snapshot=snapshot)
        self.model, self._snapshot = model, snapshot
        return self

    @property
    def attached(self) -> bool:
        return self._engine is not None and self._engine.attached

    def attach(self, optimizer: torch.optim.Optimizer, model: nn.Module | None = None) -> FishMask:
        """Mask every gradient after backward and restore frozen entries after every step of
        `optimizer`. Binds afresh (`bind`) to `model`, else to the model it was bound to or built
        on, so the frozen entries keep the values they have now: attach after moving, converting
        or loading the model (a Trainer's `on_train_begin` is such a point)."""
        self.bind(model, snapshot=self._snapshot)
        try:
            self._engine.attach(optimizer)
        except BaseException:   # e.g. an optimizer of another model: leave the model as it was, unbound
            self.detach()
            raise
        return self

    def detach(self) -> None:
        """Remove the hooks and turn requires_grad back on for the tensors binding switched off:
        training is then unmasked. `verify` still compares with the values held while attached."""
        if self._engine is not None:
            self._engine.unbind()

    def verify(self, model: nn.Module | None = None) -> dict[str, int]:
        """Raise a FishtuneError if any frozen entry's bits changed since the mask was last bound or
        attached (also after `detach`); return {"selected", "frozen", "frozen_changed": 0, "tensors"}."""
        from .errors import FishtuneError

        if self._engine is None or (model is not None and model is not self.model):
            raise ConfigError("verify() needs the model the mask is bound to (attach or bind it first)")
        changed = self._engine.frozen_changed()
        counts = {"selected": self.selected, "frozen": self.total - self.selected, "frozen_changed": changed,
                  "tensors": len(self.mask)}
        if changed:
            raise FishtuneError(f"{changed} of {counts['frozen']} frozen entries changed during training "
                                "(was the mask detached, or a parameter written outside the optimizer?)")
        return counts

    def storage_bytes(self) -> int:
        """Extra memory the bound mask costs during training (masks and frozen values)."""
        return self._engine.storage_bytes() if self._engine is not None else 0

    # --- files ------------------------------------------------------------------------------------

    def save(self, path: str | Path, *, timings: bool = True) -> None:
        """One safetensors file: a bool tensor per parameter name, families/pairs/info in its metadata.

        `timings=False` leaves the Fisher and warm-up times out of the stored info, so that the same
        mask always gives the same bytes (`fishtune run` keeps its times in the run record)."""
        from safetensors.torch import save_file

        from .atomic import atomic_write

        info = self.info if timings else {k: v for k, v in self.info.items() if k not in TIMING_KEYS}
        pairs = [asdict(p) if hasattr(p, "__dataclass_fields__") else _pair_dict(p) for p in self.pairs]
        # One metadata entry: safetensors writes its metadata map in a per-process random order, so
        # several entries would give the same mask different bytes in different processes.
        meta = {META_KEY: json.dumps({"format": FORMAT, "families": self.families, "info": info,
                                      "order": list(self.mask),  # safetensors sorts its keys; the stats keep this order
                                      "pairs": pairs})}
        tensors = {n: m.contiguous() for n, m in self.mask.items()}
        atomic_write(Path(path), lambda tmp: save_file(tensors, tmp, metadata=meta))

    @classmethod
    def load(cls, path: str | Path, model: nn.Module | None = None) -> FishMask:
        """A saved mask (also a `fishtune run` folder's mask.safetensors). With `model`, checked against
        it (names and shapes) and kept as the model `attach` binds to; nothing is bound yet."""
        from safetensors import safe_open

        from .methods import FactorPair

        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"no mask file {path}")
        mask: dict[str, Tensor] = {}
        try:
            with safe_open(str(path), framework="pt") as f:
                meta = _metadata(f.metadata() or {})
                for name in f.keys():
                    mask[name] = f.get_tensor(name)
        except Exception as err:   # not safetensors, truncated, metadata not JSON
            raise ConfigError(f"{path} is not a readable mask file ({first_line(err)}); a mask is what "
                              "FishMask.save writes, or a run folder's mask.safetensors") from None
        if meta.get("order"):
            mask = {n: mask[n] for n in meta["order"]}
        pairs = [FactorPair(**p) for p in meta.get("pairs", [])]
        if model is not None:
            check_mask(model, mask)
        return cls(mask, model=model, families=meta.get("families"), pairs=pairs, info=meta.get("info", {}))


def _as_bool(name: str, m: Tensor) -> Tensor:
    """A mask tensor as a CPU bool tensor: bool as it is, numbers only if every entry is 0 or 1 (the
    original FISH code's masks are float 0/1). Scores or trained weights (a run's
    peft_final.safetensors has the mask's names and shapes) are refused."""
    if not isinstance(m, Tensor):
        raise ConfigError(f"mask entry {name!r} is a {type(m).__name__}, not a tensor")
    if m.dtype != torch.bool and (m.is_complex() or bool(((m != 0) & (m != 1)).any())):
        raise ConfigError(f"mask entry {name!r} ({m.dtype}) has values other than 0 and 1: a mask is boolean, or "
                          "numbers that are all 0 or 1 (scores or weights? a run's mask is its mask.safetensors)")
    return m.detach().to("cpu", torch.bool)


def _given_fisher(fisher: Mapping[str, Tensor], shapes: Mapping[str, torch.Size]) -> dict[str, Tensor]:
    """`fisher` as float32 CPU tensors, checked against the candidates: the same names and shapes."""
    if set(fisher) != set(shapes):
        missing, extra = sorted(set(shapes) - set(fisher)), sorted(set(fisher) - set(shapes))
        raise ConfigError(f"the given Fisher does not cover the candidates: missing {missing[:3]}, "
                          f"not candidates {extra[:3]}")
    for name, shape in shapes.items():
        if tuple(fisher[name].shape) != tuple(shape):
            raise ConfigError(f"the given Fisher of {name} has shape {tuple(fisher[name].shape)}, "
                              f"the parameter {tuple(shape)}")
    return {n: fisher[n].detach().to("cpu", torch.float32) for n in shapes}


def _metadata(raw: dict[str, str]) -> dict[str, Any]:
    """A saved mask's metadata: format 2 (one JSON entry) or format 1 (one JSON string per key)."""
    if META_KEY in raw:
        return json.loads(raw[META_KEY])
    return {k: json.loads(raw[k]) for k in ("families", "info", "order", "pairs") if raw.get(k)}


def check_budget(keep: int | None, keep_ratio: float | None) -> tuple[int | None, float | None]:
    """`keep` as an int >= 1 or `keep_ratio` as a real in (0, 1] (exactly one; any integer / real but a
    bool), before the candidates are known; the other is None."""
    if (keep is None) == (keep_ratio is None):
        raise ConfigError("pass exactly one of keep= (entries) and keep_ratio= (share of the candidates)")
    if keep is not None:
        k = as_int(keep)
        if k is None or k < 1:
            raise ConfigError(f"keep must be a positive integer, got {keep!r}")
        return k, None
    ratio = as_real(keep_ratio)
    if ratio is None or not 0 < ratio <= 1:
        raise ConfigError(f"keep_ratio must be in (0, 1], got {keep_ratio!r}")
    return None, ratio


def budget(total: int, *, keep: int | None, keep_ratio: float | None) -> int:
    """k from `keep`, or k = round(keep_ratio * total) (`check_budget`), checked against the `total`
    candidate entries: 1 <= k <= total."""
    k, ratio = check_budget(keep, keep_ratio)
    if ratio is not None:
        k = round(ratio * total)
        if k < 1:
            raise ConfigError(f"keep_ratio {keep_ratio} of {total} candidate entries keeps none; raise it")
    if k > total:
        raise ConfigError(f"keep={k} is larger than the {total:,} candidate entries; lower keep or use keep_ratio")
    return k


def _check_choice(key: str, value: Any, options: Sequence[str]) -> None:
    if value not in options:
        raise ConfigError(f"{key} must be one of {', '.join(options)}, got {value!r}")


def _pair_dict(pair: Any) -> dict:
    return {k: getattr(pair, k) for k in ("down", "up", "down_bias", "down_transposed", "up_transposed")}
