"""The data-driven steps of `FishMask.from_fisher`: the dense warm-up and the Fisher over the
caller's batches (dicts with `labels`, or any batch with a `loss_fn`; `fishtune.fishmask` says how
each is read), run inside `_rng_forked` so the caller's RNG streams are left as they were.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn

from .errors import ConfigError, DataError
# At import, not at the first mask: the source hash of the records and of the Fisher cache's key is
# read when fishtune is imported (`provenance`), so code loaded hours later could differ from it.
from .fisher import _cut_trailing_padding, _eval_mode, _is_regression, _precision, empirical_fisher

log = logging.getLogger(__name__)

LossFn = Callable[[nn.Module, Any], Tensor]


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
                loss = task_loss(logits, _task_labels(model, batch["labels"]))
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
    if loss_fn is None:
        return empirical_fisher(model, _labelled(batches), num_samples=num_samples, estimator=estimator,
                                labels=labels, param_names=names)
    return _loss_fn_fisher(model, batches, loss_fn, names=names, num_samples=num_samples)


def _loss_fn_fisher(model: nn.Module, batches: Iterable, loss_fn: LossFn, *, names: Sequence[str],
                    num_samples: int) -> dict[str, Tensor]:
    """sum_n (d loss_fn(model, example_n) / d theta)^2 with one forward/backward per example."""
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


def _task_labels(model: nn.Module, labels: Tensor) -> Tensor:
    """The labels as the warm-up's loss needs them, by the Fisher's rule for regression vs
    classification (the config's problem_type / num_labels): the two never disagree on the task."""
    if _is_regression(model, labels):
        return labels.float()
    if labels.is_floating_point():
        raise DataError("the warm-up: classification needs integer class labels, got floats")
    return labels


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
