"""`FishMask`: FISH masks in anyone's training loop.

    from fishtune import FishMask
    mask = FishMask.from_fisher(model, train_dataloader, keep=73_728, num_samples=1024)   # or keep_ratio=
    mask.attach(optimizer)     # grads masked after backward, frozen entries restored after each step
    ...                        # the user's own loop, unchanged
    mask.verify(model)         # raises if any frozen entry moved; returns the counts
    mask.save("mask.safetensors")                                                # FishMask.load(...)

`fishtune run` builds its masks through `from_fisher` (fishtune.selection.build_mask) and trains
through `attach` (fishtune.train.Trainer), so there is one implementation of both.

Candidates. By default every trainable parameter except the classifier head: the `classifier` /
`score` module of a transformers model (with PEFT, its trainable `modules_to_save` copy), any PEFT
`ModulesToSaveWrapper`, AdapterHub `heads.`; `head=` names others (parameter names or module
paths), `params=` lists the candidates outright. So PEFT, AdapterHub and full fine-tuning all
work. Families (for the stats) and zero-initialised factor pairs (for `live` and the dead-entry
stats, `fishtune.live`) are read from the library's modules: PEFT `LoraLayer`s (`lora_A`,
`lora_B`, `lora_magnitude`; each (A, B) a pair) and AdapterHub adapters (fishtune's method
groups); any other parameter's family is its name's last component, with no pair.

Where the Fisher is taken (`fisher_at`). A zero-initialised factor (PEFT LoRA's B, AdapterHub
ParBn's up-projection) gives its partner exactly zero gradient, hence zero Fisher, at init.
`"warmup"`: `warmup_steps` dense AdamW steps (constant `warmup_lr`, no weight decay) on every
trainable parameter, the Fisher there, then every trainable parameter back to its value before the
warm-up. `"init"`: the Fisher at the current values. `"auto"` (default): warm-up exactly when a
candidate has such a partner (a declared pair whose up factor has an all-zero rank column). The
warm-up and the Fisher run inside `torch.random.fork_rng`: the caller's RNG streams are left as
they were.

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
weight decay and momentum cannot move them, whatever the torch optimizer. Parameters with no
selected entry get requires_grad off when the mask is bound (attached, or `bind`): no gradient,
so no optimizer update or state.
"""

from __future__ import annotations

import itertools
import json
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .errors import ConfigError, DataError
from .frozen import EntryMask
from .live import dead_entries, select_live
from .masking import SCOPES, STRATEGIES, mask_stats, select_mask

log = logging.getLogger(__name__)

FISHER_AT = ("auto", "warmup", "init")
FORMAT = "fishtune.FishMask/1"
LossFn = Callable[[nn.Module, Any], Tensor]


class FishMask:
    """A fixed boolean mask per parameter (exactly `selected` True entries) and the hooks that
    enforce it in any training loop (module docstring)."""

    def __init__(self, mask: Mapping[str, Tensor], *, model: nn.Module | None = None,
                 families: Mapping[str, str] | None = None, pairs: Sequence = (),
                 scores: Mapping[str, Tensor] | None = None, info: Mapping[str, Any] | None = None):
        self.mask: dict[str, Tensor] = {n: m.detach().to("cpu", torch.bool) for n, m in mask.items()}
        self.model = model
        self.families = dict(families) if families is not None else None
        self.pairs = list(pairs)
        self.scores = scores           # the Fisher scores the mask was selected from (None: random, loaded)
        self.info: dict[str, Any] = dict(info or {})
        self._starting: dict[str, Tensor] | None = None   # values where masked training starts (stats)
        self._engine: EntryMask | None = None

    # --- building ---------------------------------------------------------------------------------

    @classmethod
    def from_fisher(cls, model: nn.Module, batches: Iterable | None = None, *, keep: int | None = None,
                    keep_ratio: float | None = None, strategy: str = "fish", live: bool = False,
                    scope: str = "global", num_samples: int = 1024, labels: str = "empirical",
                    estimator: str = "auto", loss_fn: LossFn | None = None, params: Sequence[str] | None = None,
                    head: Sequence[str] | None = None, fisher_at: str = "auto", warmup_steps: int = 50,
                    warmup_lr: float = 1e-3, warmup_batches: Iterable | None = None, seed: int = 0,
                    families: Mapping[str, str] | None = None, pairs: Sequence | None = None,
                    autocast: bool = False) -> FishMask:
        """Select exactly k entries of the candidates by the empirical Fisher (module docstring).

        keep / keep_ratio: k, or k = round(keep_ratio * candidate entries) (exactly one of them).
        strategy: fish (largest Fisher) | reverse (smallest) | random (seeded, no data needed);
        live: spend the budget only on entries that can move (`fishtune.live.select_live`);
        scope: global | per_tensor; labels: empirical | expected; estimator: auto | func | hooks |
        loop (`fishtune.fisher`); seed: the random strategy's. `families`, `pairs` override the
        detected ones (fishtune's runner passes its method's); `autocast`: bf16 autocast during the
        warm-up (the Fisher is fp32 whatever it is).
        """
        _check_choice("strategy", strategy, STRATEGIES)
        _check_choice("scope", scope, SCOPES)
        _check_choice("fisher_at", fisher_at, FISHER_AT)
        if live and scope != "global":
            raise ConfigError("live=True needs scope='global'")
        if loss_fn is not None and (estimator not in ("auto", "loop") or labels != "empirical"):
            raise ConfigError("with loss_fn the Fisher is the per-example loop of your loss: leave estimator='auto' "
                              "(or 'loop') and labels='empirical'")
        if isinstance(warmup_steps, bool) or not isinstance(warmup_steps, int) or warmup_steps < 0:
            raise ConfigError(f"warmup_steps must be an integer >= 0, got {warmup_steps!r}")
        names = candidates(model, params=params, head=head)
        if families is None or pairs is None:
            detected_families, detected_pairs = structure(model, names)
            families = dict(families) if families is not None else detected_families
            pairs = list(pairs) if pairs is not None else detected_pairs
        named = dict(model.named_parameters())
        total = sum(named[n].numel() for n in names)
        k = budget(total, keep=keep, keep_ratio=keep_ratio)

        warm = strategy != "random" and (fisher_at == "warmup" or (fisher_at == "auto" and zero_factor(named, pairs)))
        warm = warm and warmup_steps > 0
        fisher_s = warmup_s = 0.0
        if strategy == "random":
            scores = {n: torch.zeros(named[n].shape) for n in names}  # shapes only
        else:
            if batches is None:
                raise ConfigError(f"strategy {strategy!r} needs batches to estimate the Fisher from")
            initial = {n: p.detach().clone() for n, p in named.items() if p.requires_grad} if warm else {}
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
            finally:  # every trainable parameter back where it was, also when something above failed
                with torch.no_grad():
                    for n, value in initial.items():
                        named[n].copy_(value)
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
        state = "attached" if self.attached else "bound" if self._engine is not None else "unbound"
        return f"FishMask({self.selected:,} of {self.total:,} entries in {len(self.mask)} tensors, {state})"

    # --- training ---------------------------------------------------------------------------------

    def bind(self, model: nn.Module | None = None, *, snapshot: bool = True) -> FishMask:
        """Tie the mask to `model`'s parameters (default: the model it was built on): tensors with
        nothing selected get requires_grad off, and the frozen entries' current values are the ones
        every step restores. `snapshot` keeps a CPU copy of the wholly frozen tensors for `verify`."""
        model = model if model is not None else self.model
        if model is None:
            raise ConfigError("this mask has no model (it was loaded): pass model=, e.g. mask.attach(optimizer, model)")
        self.detach()
        self._engine = EntryMask(model, self.mask, snapshot=snapshot)
        self.model = model
        return self

    @property
    def attached(self) -> bool:
        return self._engine is not None and self._engine.attached

    def attach(self, optimizer: torch.optim.Optimizer, model: nn.Module | None = None) -> FishMask:
        """Mask every gradient after backward and restore frozen entries after every step of
        `optimizer` (binding to `model`, or the model the mask was built on, if not bound yet)."""
        if self._engine is None or (model is not None and model is not self.model):
            self.bind(model)
        self.detach()
        self._engine.attach(optimizer)
        return self

    def detach(self) -> None:
        """Remove the hooks (training with this optimizer is then unmasked)."""
        if self._engine is not None:
            self._engine.detach()

    def verify(self, model: nn.Module | None = None) -> dict[str, int]:
        """Raise a FishtuneError if any frozen entry's bits changed since the mask was bound; return
        {"selected", "frozen", "frozen_changed": 0, "tensors"}."""
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

    def save(self, path: str | Path) -> None:
        """One safetensors file: a bool tensor per parameter name, families/pairs/info in its metadata."""
        from safetensors.torch import save_file

        from .atomic import atomic_write

        meta = {"format": FORMAT, "families": json.dumps(self.families), "info": json.dumps(self.info),
                "order": json.dumps(list(self.mask)),   # safetensors sorts its keys; the stats keep this order
                "pairs": json.dumps([asdict(p) if hasattr(p, "__dataclass_fields__") else _pair_dict(p)
                                     for p in self.pairs])}
        tensors = {n: m.contiguous() for n, m in self.mask.items()}
        atomic_write(Path(path), lambda tmp: save_file(tensors, tmp, metadata=meta))

    @classmethod
    def load(cls, path: str | Path, model: nn.Module | None = None) -> FishMask:
        """A saved mask (also a `fishtune run` folder's mask.safetensors); with `model`, bound to it."""
        from safetensors import safe_open

        from .methods import FactorPair

        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"no mask file {path}")
        mask: dict[str, Tensor] = {}
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            for name in f.keys():
                mask[name] = f.get_tensor(name)
        if meta.get("order"):
            mask = {n: mask[n] for n in json.loads(meta["order"])}
        families = json.loads(meta["families"]) if meta.get("families") else None
        pairs = [FactorPair(**p) for p in json.loads(meta.get("pairs", "[]"))]
        loaded = cls(mask, families=families, pairs=pairs, info=json.loads(meta.get("info", "{}")))
        if model is not None:
            loaded.bind(model)
        return loaded


# --- candidates, families, pairs -----------------------------------------------------------------


def candidates(model: nn.Module, *, params: Sequence[str] | None = None, head: Sequence[str] | None = None) -> list[str]:
    """Mask candidates in `named_parameters()` order: `params` if given (each must be trainable),
    else the trainable parameters minus the head (`head`, or the recognised one: module docstring)."""
    named = dict(model.named_parameters())
    trainable = [n for n, p in named.items() if p.requires_grad]
    if params is not None:
        unknown = sorted(set(params) - set(named))
        frozen = sorted(set(params) - set(trainable) - set(unknown))
        if unknown or frozen:
            raise ConfigError(f"params: {'unknown' if unknown else 'not trainable'} parameter "
                              f"{(unknown or frozen)[0]!r} ({len(unknown) + len(frozen)} in all)")
        names = list(dict.fromkeys(params))   # the caller's order (the runner's: its method's)
    else:
        if not trainable:
            raise ConfigError("the model has no trainable parameters: make the ones to mask trainable first "
                              "(PEFT, AdapterHub's train_adapter, or requires_grad_(True))")
        heads = head_parameters(model, trainable) if head is None else _named_by(model, head, trainable)
        names = [n for n in trainable if n not in heads]
    if not names:
        raise ConfigError("no mask candidates: every trainable parameter is part of the head "
                          "(pass params= or head=[])")
    return names


def head_parameters(model: nn.Module, trainable: Sequence[str]) -> set[str]:
    """Trainable parameters of the recognised classifier head (module docstring)."""
    from transformers import PreTrainedModel

    heads: set[str] = set()
    for path, module in model.named_modules():
        prefix = f"{path}." if path else ""
        if isinstance(module, PreTrainedModel):
            for attr in ("classifier", "score"):
                sub = getattr(module, attr, None)
                if isinstance(sub, nn.Module):
                    heads.update(f"{prefix}{attr}.{n}" for n, _ in sub.named_parameters(remove_duplicate=False))
        if type(module).__name__ == "ModulesToSaveWrapper":  # PEFT's trainable copy of a module
            heads.update(f"{prefix}{n}" for n, _ in module.named_parameters(remove_duplicate=False))
    heads.update(n for n in trainable if n.startswith("heads."))  # AdapterHub prediction heads
    return heads & set(trainable)


def _named_by(model: nn.Module, names: Sequence[str], trainable: Sequence[str]) -> set[str]:
    """Parameters named by `names`: exact parameter names or module paths (their parameters)."""
    if isinstance(names, str):
        names = [names]
    chosen: set[str] = set()
    for name in names:
        hits = {n for n in trainable if n == name or n.startswith(name + ".")}
        if not hits and name not in dict(model.named_parameters()) and name not in dict(model.named_modules()):
            raise ConfigError(f"head: {name!r} is neither a parameter nor a module of the model")
        chosen |= hits
    return chosen


def structure(model: nn.Module, names: Sequence[str]) -> tuple[dict[str, str], list]:
    """(families, zero-init factor pairs) of the candidates `names`, read from PEFT LoRA layers and
    AdapterHub adapters; any other parameter's family is its name's last component."""
    from .methods import FactorPair

    wanted = set(names)
    families = {n: n.rsplit(".", 1)[-1] for n in names}
    pairs: list = []
    if hasattr(model, "peft_config"):
        try:
            from peft.tuners.lora import LoraLayer
        except ImportError:  # pragma: no cover - peft is a dependency
            LoraLayer = ()
        for path, module in model.named_modules():
            if not isinstance(module, LoraLayer):
                continue
            for adapter in module.lora_A:
                a, b = f"{path}.lora_A.{adapter}.weight", f"{path}.lora_B.{adapter}.weight"
                m = f"{path}.lora_magnitude_vector.{adapter}.weight"
                for name, family in ((a, "lora_A"), (b, "lora_B"), (m, "lora_magnitude")):
                    if name in wanted:
                        families[name] = family
                if a in wanted and b in wanted:
                    pairs.append(FactorPair(down=a, up=b))
    if hasattr(model, "adapters_config"):
        from .methods._adapterhub import _groups

        groups = _groups(model, dense_gates=False)
        families.update({n: f for n, f in groups.candidates.items() if n in wanted})
        pairs.extend(p for p in groups.pairs if p.down in wanted and p.up in wanted)
    return families, pairs


def zero_factor(named: Mapping[str, Tensor], pairs: Sequence) -> bool:
    """Whether some declared pair's up factor has an all-zero rank column (its partner's Fisher is 0)."""
    for pair in pairs:
        up = named[pair.up].detach()
        up = up if pair.up_transposed else up.T     # rank axis first
        if bool((up == 0).all(1).any()):
            return True
    return False


def budget(total: int, *, keep: int | None, keep_ratio: float | None) -> int:
    """k from `keep` or `keep_ratio` (exactly one), checked against the candidates."""
    if (keep is None) == (keep_ratio is None):
        raise ConfigError("pass exactly one of keep= (entries) and keep_ratio= (share of the candidates)")
    if keep is not None:
        if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
            raise ConfigError(f"keep must be a positive integer, got {keep!r}")
        k = keep
    else:
        if isinstance(keep_ratio, bool) or not isinstance(keep_ratio, (int, float)) or not 0 < keep_ratio <= 1:
            raise ConfigError(f"keep_ratio must be in (0, 1], got {keep_ratio!r}")
        k = round(float(keep_ratio) * total)
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


# --- warm-up and Fisher --------------------------------------------------------------------------


def dense_warmup(model: nn.Module, batches: Iterator, *, steps: int, lr: float, loss_fn: LossFn | None = None,
                 autocast: bool = False) -> None:
    """`steps` plain AdamW steps (constant lr, no weight decay) on every trainable parameter, one per
    batch of `batches`; the optimizer is discarded, gradients the caller had are put back."""
    from .train import make_optimizer, model_inputs, task_loss

    device = _device(model)
    trainable = [p for p in model.parameters() if p.requires_grad]
    kept_grads = [p.grad for p in trainable]
    for p in trainable:
        p.grad = None
    optimizer = make_optimizer(trainable, lr=lr, weight_decay=0.0, device=device)
    modes = {m: m.training for m in model.modules()}
    model.train()
    done = 0
    try:
        for batch in itertools.islice(batches, steps):   # pulls exactly `steps` batches
            batch = _to_device(batch, device)
            if loss_fn is not None:
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
                    loss = loss_fn(model, batch).float().mean()
            else:
                _require_labels(batch)
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
                    logits = model(**model_inputs(batch)).logits
                loss = task_loss(logits, batch["labels"])
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            done += 1
    finally:
        for m, training in modes.items():
            m.training = training
        for p, g in zip(trainable, kept_grads):
            p.grad = g
    if done < steps:
        raise DataError(f"the warm-up ran out of batches after {done} of {steps} steps")
    log.info("dense warm-up: %d steps before the Fisher (parameters restored afterwards)", steps)


def fisher_scores(model: nn.Module, batches: Iterable, *, names: Sequence[str], num_samples: int,
                  labels: str = "empirical", estimator: str = "auto", loss_fn: LossFn | None = None) -> dict[str, Tensor]:
    """The empirical Fisher of `names` over the first `num_samples` examples of `batches`."""
    from .fisher import empirical_fisher

    if loss_fn is None:
        return empirical_fisher(model, _labelled(batches), num_samples=num_samples, estimator=estimator,
                                labels=labels, param_names=names)
    return _loss_fn_fisher(model, batches, loss_fn, names=names, num_samples=num_samples)


def _loss_fn_fisher(model: nn.Module, batches: Iterable, loss_fn: LossFn, *, names: Sequence[str],
                    num_samples: int) -> dict[str, Tensor]:
    """sum_n (d loss_fn(model, example_n) / d theta)^2 with one forward/backward per example."""
    from .fisher import _cut_trailing_padding, _eval_mode, _precision

    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        raise ConfigError(f"num_samples must be a positive integer, got {num_samples!r}")
    device = _device(model)
    named = dict(model.named_parameters())
    tensors = [named[n] for n in names]
    fisher = {n: torch.zeros(named[n].shape, dtype=torch.float32, device=device) for n in names}
    seen = 0
    with _eval_mode(model), torch.enable_grad(), _precision(device.type, "fp32"):
        for batch in batches:
            batch = _to_device(batch, device)
            size = _batch_size(batch)
            for i in range(min(size, num_samples - seen)):
                example = _slice(batch, i, size)
                if isinstance(example, Mapping):
                    example = _cut_trailing_padding(dict(example))
                loss = loss_fn(model, example)
                if not isinstance(loss, Tensor) or loss.numel() != 1:
                    raise DataError("loss_fn(model, batch) must return one loss per example (shape (n,)); on a batch "
                                    f"of one it returned {type(loss).__name__} of shape "
                                    f"{tuple(loss.shape) if isinstance(loss, Tensor) else '?'}")
                grads = torch.autograd.grad(loss.float().sum(), tensors, allow_unused=True)
                for n, g in zip(names, grads):
                    if g is not None:
                        fisher[n] += g.float() ** 2
            seen += min(size, num_samples - seen)
            if seen >= num_samples:
                break
    if seen == 0:
        raise DataError("fisher: the batches held no examples")
    if seen < num_samples:
        log.warning("fisher: batches ran out after %d of %d requested examples", seen, num_samples)
    return fisher


def _labelled(batches: Iterable) -> Iterator:
    for batch in batches:
        _require_labels(batch)
        yield batch


def _require_labels(batch: Any) -> None:
    if not isinstance(batch, Mapping):
        raise DataError(f"batches must be dicts of tensors with a 'labels' entry (got {type(batch).__name__}); "
                        "for other batches pass loss_fn(model, batch) -> per-example losses")
    if "labels" not in batch:
        raise DataError(f"a batch has no 'labels' entry (keys: {', '.join(map(str, batch))}); pass batches with "
                        "labels (as a transformers Trainer's dataloader yields) or loss_fn(model, batch)")


def _warmup_source(batches: Iterable, warmup_batches: Iterable | None) -> Iterator:
    """The warm-up's batches: `warmup_batches` as given, else `batches` cycled (re-iterated)."""
    if warmup_batches is not None:
        return iter(warmup_batches)
    if isinstance(batches, Iterator):
        raise ConfigError("the warm-up and the Fisher both read `batches`: pass a re-iterable (a DataLoader, a list), "
                          "or warmup_batches=, or fisher_at='init'")

    def cycle() -> Iterator:
        while True:
            empty = True
            for batch in batches:
                empty = False
                yield batch
            if empty:
                return

    return cycle()


def _batch_size(batch: Any) -> int:
    if isinstance(batch, Tensor):
        return batch.shape[0]
    values = list(batch.values()) if isinstance(batch, Mapping) else list(batch) if isinstance(batch, (list, tuple)) else []
    if isinstance(batch, Mapping) and isinstance(batch.get("labels"), Tensor):
        return batch["labels"].shape[0]
    for v in values:
        if isinstance(v, Tensor) and v.dim() > 0:
            return v.shape[0]
    raise DataError(f"cannot tell the batch size of a {type(batch).__name__}: it holds no tensor")


def _slice(batch: Any, i: int, size: int) -> Any:
    def cut(v: Any) -> Any:
        return v[i: i + 1] if isinstance(v, Tensor) and v.dim() > 0 and v.shape[0] == size else v

    if isinstance(batch, Tensor):
        return cut(batch)
    if isinstance(batch, Mapping):
        return {k: cut(v) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(cut(v) for v in batch) if type(batch) in (list, tuple) else [cut(v) for v in batch]
    return batch


def _to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, Tensor):
        return batch.to(device)
    if isinstance(batch, Mapping):
        return {k: v.to(device) if isinstance(v, Tensor) else v for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(v.to(device) if isinstance(v, Tensor) else v for v in batch) \
            if type(batch) in (list, tuple) else batch
    return batch


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


@contextmanager
def _rng_forked(model: nn.Module) -> Iterator[None]:
    """The caller's RNG state (CPU, and the model's CUDA device) is back on exit."""
    device = _device(model)
    devices = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        yield

