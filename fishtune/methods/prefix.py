"""Prefix tuning through AdapterHub `adapters` (`method=prefix`, PrefixTuningConfig defaults:
30 prefix positions, a 512-wide tanh MLP).

During training the prefix keys/values of every layer come from a shared embedding `wte`
(prefix_length x hidden, family `prefix_embedding`) through a 2-layer MLP `control_trans`
(family `prefix_mlp`); both are mask candidates. At inference the MLP can be folded away
(AdapterHub's `eject_prefix_tuning`), leaving prefix_length x layers x 2 x hidden entries:
`MethodSetup.inference_count`, recorded as `trainable.inference`.
"""

from __future__ import annotations

from omegaconf import DictConfig
from torch import nn

from ..keys import choice, integer, number
from . import Method, MethodSetup, register
from ._adapterhub import ACTIVATIONS, attach, setup_from

PREFIX_KEYS = {"prefix_length": integer(1), "bottleneck_size": integer(1), "non_linearity": choice(*ACTIVATIONS),
               "dropout": number(0, inclusive=True, high=1)}


def apply_prefix(model: nn.Module, cfg: DictConfig) -> MethodSetup:
    from adapters import PrefixTuningConfig

    config = PrefixTuningConfig(prefix_length=int(cfg.prefix_length), bottleneck_size=int(cfg.bottleneck_size),
                                non_linearity=str(cfg.non_linearity), dropout=float(cfg.dropout))
    return setup_from(attach(model, config))


register(Method("prefix", PREFIX_KEYS, apply_prefix,
                merge="prefix tuning cannot be merged into the base weights (it adds attention positions); "
                      "`fishtune export RUN_DIR` without --merge writes the AdapterHub adapter"))
