"""Checkpoints for resuming: trainable parameters, optimizer, scheduler, RNG, progress.

One file, `checkpoint.pt`, rewritten atomically at every epoch end (and every
`train.checkpoint_every` steps). The batch order of an epoch is a pure function of
(seed, epoch), so the saved step count is the sampler position.
"""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from .atomic import atomic_write
from .errors import FishtuneError

if TYPE_CHECKING:
    from .train import Progress


_COMPILED_PREFIX = "_orig_mod."


def plain_name(name: str) -> str:
    """A parameter's name without torch.compile's `_orig_mod.` wrapper prefix: checkpoints store
    the uncompiled names, so a run resumes whether or not `train.compile` was on before."""
    return name.replace(_COMPILED_PREFIX, "")


def save_checkpoint(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler,
                    progress: "Progress") -> None:
    state = {
        "trainable": {plain_name(n): p.detach().cpu() for n, p in model.named_parameters() if p.requires_grad},
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "progress": dataclasses.asdict(progress),
        "rng": {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
            "python": random.getstate(),
            "numpy": np.random.get_state(),
        },
    }
    atomic_write(path, lambda tmp: torch.save(state, tmp))


def load_checkpoint(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler) -> "Progress":
    from .train import Progress

    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # a foreign or damaged file: say which, don't guess
        raise FishtuneError(f"cannot read checkpoint {path}: {err}; delete it or run with train.resume=false") from err
    params = {plain_name(n): p for n, p in model.named_parameters()}
    trainable = {n for n, p in params.items() if p.requires_grad}
    # Both ways: a trainable tensor the checkpoint lacks would resume from its initial values.
    unmatched = sorted(set(state["trainable"]) ^ trainable) or \
        sorted(n for n, v in state["trainable"].items() if tuple(v.shape) != tuple(params[n].shape))
    if unmatched:
        raise FishtuneError(f"checkpoint {path} does not match the model's trainable parameters (e.g. "
                            f"{unmatched[0]!r}); delete it or run with train.resume=false")
    with torch.no_grad():
        for name, value in state["trainable"].items():
            params[name].copy_(value)
    try:
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
    except (ValueError, KeyError, RuntimeError) as err:
        raise FishtuneError(f"checkpoint {path}: its optimizer or scheduler state does not fit this run ({err}); "
                            "delete it or run with train.resume=false") from err
    rng = state["rng"]
    torch.set_rng_state(rng["torch"])
    if rng["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    random.setstate(rng["python"])
    np.random.set_state(rng["numpy"])
    return Progress(**state["progress"])
