"""UniPELT through AdapterHub `adapters` (`method=unipelt`; Mao et al. 2022, UniPELTConfig defaults):
gated LoRA (r=8 on query/value), gated prefix tuning (10 positions, 512-wide MLP) and a gated
sequential bottleneck (reduction 16, relu).

Candidates: LoRA A/B (raw Parameters, A (r, in), B (out, r) zero-initialised: declared factor
pairs, no transpose), prefix embedding and MLP, bottleneck down/up, and the gates, unless
`method.dense_gates=true` moves every gate to the dense group (trained densely, counted as
`trainable.dense`). With gating the LoRA output is multiplied by its gate instead of alpha/r,
so LoRA's alpha has no effect and is not a key.

Padding: each gate is sigmoid(Linear(h)) averaged over *every* position, padding included, so
UniPELT's outputs depend on how much padding a batch has (`MethodSetup.padding_sensitive`,
recorded as `padding_sensitive: true`); fishtune keeps the library's gate as it is.
"""

from __future__ import annotations

from omegaconf import DictConfig
from torch import nn

from ..keys import choice, flag, integer, number
from . import Method, MethodSetup, check_rank, register
from ._adapterhub import ACTIVATIONS, attach, check_reduction, setup_from

UNIPELT_KEYS = {"r": integer(1), "prefix_length": integer(1), "bottleneck_size": integer(1),
                "reduction_factor": number(0), "non_linearity": choice(*ACTIVATIONS), "dense_gates": flag()}


def apply_unipelt(model: nn.Module, cfg: DictConfig) -> MethodSetup:
    from adapters import LoRAConfig, PrefixTuningConfig, SeqBnConfig, UniPELTConfig

    check_rank(int(cfg.r), model, lambda path: path.endswith((".query", ".value")))   # AdapterHub's LoRA: self-attention q, v (BERT names)
    check_reduction(float(cfg.reduction_factor), model)
    config = UniPELTConfig(
        prefix_tuning=PrefixTuningConfig(prefix_length=int(cfg.prefix_length), bottleneck_size=int(cfg.bottleneck_size)),
        adapter=SeqBnConfig(reduction_factor=float(cfg.reduction_factor), non_linearity=str(cfg.non_linearity)),
        lora=LoRAConfig(r=int(cfg.r), alpha=2),   # the library's alpha (unused under gating)
    )
    return setup_from(attach(model, config), dense_gates=bool(cfg.dense_gates))


register(Method("unipelt", UNIPELT_KEYS, apply_unipelt,
                merge="UniPELT cannot be merged into the base weights (prefix, bottleneck and input-dependent "
                      "gates); `fishtune export RUN_DIR` without --merge writes the AdapterHub adapter"))
