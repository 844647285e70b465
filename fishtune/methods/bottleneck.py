"""Bottleneck adapters through AdapterHub `adapters` (library defaults unless a key says otherwise).

- `adapter_pfeiffer` (SeqBnConfig): one bottleneck after each FFN output; reduction 16, relu.
- `adapter_houlsby` (DoubleSeqBnConfig): bottlenecks after the attention output and after the FFN
  output; reduction 16, swish.
- `adapter_parallel` (ParBnConfig): a bottleneck beside the FFN whose output is scaled by `scaling`;
  reduction 2, relu, scaling 4. Its up-projection starts at zero (`mam_adapter` init), so its
  (down, up) pairs are declared `FactorPair`s; the sequential adapters' `bert` init is not zero.

Candidates: `adapter_down` and `adapter_up` (weights and biases) of every adapter; head: the HF
classifier. The bottleneck size is hidden / reduction_factor.
"""

from __future__ import annotations

from omegaconf import DictConfig
from torch import nn

from ..keys import choice, number
from . import Method, MethodSetup, register
from ._adapterhub import ACTIVATIONS, attach, check_reduction, setup_from

_NOT_MERGEABLE = ("{name} cannot be merged into the base weights (its bottleneck is non-linear); "
                  "`fishtune export RUN_DIR` without --merge writes the AdapterHub adapter")
BOTTLENECK_KEYS = {"reduction_factor": number(0), "non_linearity": choice(*ACTIVATIONS)}


def _config(cfg: DictConfig):
    from adapters import DoubleSeqBnConfig, ParBnConfig, SeqBnConfig

    common = dict(reduction_factor=float(cfg.reduction_factor), non_linearity=str(cfg.non_linearity))
    if cfg.name == "adapter_pfeiffer":
        return SeqBnConfig(**common)
    if cfg.name == "adapter_houlsby":
        return DoubleSeqBnConfig(**common)
    return ParBnConfig(**common, scaling=float(cfg.scaling))


def apply_bottleneck(model: nn.Module, cfg: DictConfig) -> MethodSetup:
    check_reduction(float(cfg.reduction_factor), model)
    return setup_from(attach(model, _config(cfg)))


for _name, _keys in (("adapter_pfeiffer", BOTTLENECK_KEYS), ("adapter_houlsby", BOTTLENECK_KEYS),
                     ("adapter_parallel", {**BOTTLENECK_KEYS, "scaling": number(0)})):
    register(Method(_name, _keys, apply_bottleneck, merge=_NOT_MERGEABLE.format(name=_name)))
