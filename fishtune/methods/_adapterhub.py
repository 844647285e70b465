"""What the AdapterHub methods share: attach one adapter to an HF classifier, then read its
parameter groups from the library's module structure (never from name substrings).

`adapters.init(model)` keeps the HF `BertForSequenceClassification` / `RobertaForSequenceClassification`
class (extended with AdapterHub mixins), so `model(**inputs).logits` and the HF `classifier` stay;
`train_adapter` freezes the base model and leaves that classifier trainable (checked: it is the
head, and no AdapterHub `heads.` module is ever created). The adapter is activated explicitly,
since `add_adapter` alone leaves it inactive ("There are adapters available but none are
activated for the forward pass").

Modules (adapters 1.3.0) and the families of their parameters:

- bottleneck `Adapter` / `ParallelAdapter`: `adapter_down` (its Linear, plus an optional
  LayerNorm -> `adapter_norm`), `adapter_up`, optional `gate`;
- `LoRA`: raw Parameters `lora_A` (r, in) and `lora_B` (out, r), B zero-initialised; optional `gate`;
- `PrefixTuning` (one pool shared by all layers): `wte` -> `prefix_embedding`,
  `control_trans` (the training-time MLP) -> `prefix_mlp`; `PrefixTuningLayer.prefix_gates` -> `gate`.

Factor pairs are declared exactly where `up` starts at zero: AdapterHub LoRA's B, and bottleneck
adapters whose up-projection is zero at init (ParBn's `mam_adapter` init; SeqBn's `bert` init is not).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..errors import ConfigError
from . import FactorPair, MethodSetup, head_names

ADAPTER = "fishtune"   # the adapter's name inside the model (and in the saved folder)
ACTIVATIONS = ("relu", "gelu", "gelu_new", "swish", "silu", "tanh", "leakyrelu")


def check_reduction(reduction_factor: float, model: nn.Module) -> None:
    """AdapterHub's bottleneck has hidden_size // reduction_factor units, silently raised to 1 when
    that is 0: a factor above the hidden size would train a 1-unit bottleneck under the name of
    another config, so it is a ConfigError."""
    hidden = getattr(getattr(model, "config", None), "hidden_size", None)
    if isinstance(hidden, int) and reduction_factor > hidden:
        raise ConfigError(f"reduction_factor={reduction_factor:g} leaves a bottleneck of "
                          f"{hidden}/{reduction_factor:g} < 1 unit (hidden size {hidden}), which AdapterHub "
                          f"would silently widen to 1; choose a reduction_factor ≤ {hidden}")


def attach(model: nn.Module, config) -> nn.Module:
    """`adapters.init(model)`, add the adapter `ADAPTER`, train it (rest frozen), activate it."""
    import adapters

    adapters.init(model)
    with _quiet_activation():
        model.add_adapter(ADAPTER, config=config, set_active=True)
        model.train_adapter(ADAPTER)
        model.set_active_adapters(ADAPTER)
    if hasattr(model, "heads") and len(model.heads):
        raise RuntimeError("AdapterHub added a prediction head; fishtune trains the HF classifier")
    return model


@contextmanager
def _quiet_activation() -> Iterator[None]:
    """Activating a new adapter passes through a moment with none active, and the library warns
    "There are adapters available but none are activated" although the adapter ends up active (the
    tests check that changing its parameters changes the output): silenced here, and only here."""
    library_log = logging.getLogger("adapters.model_mixin")
    level = library_log.level
    library_log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        library_log.setLevel(level)


@dataclass
class Groups:
    candidates: dict[str, str] = field(default_factory=dict)
    dense: dict[str, str] = field(default_factory=dict)
    pairs: list[FactorPair] = field(default_factory=list)
    prefix_entries: int = 0    # wte + MLP entries (replaced by `folded` at inference)
    folded: int = 0            # entries of the prefix after the MLP is folded away
    gated: bool = False


def setup_from(model: nn.Module, *, dense_gates: bool = False) -> MethodSetup:
    """The `MethodSetup` of an attached AdapterHub adapter (see the module docstring)."""
    g = _groups(model, dense_gates=dense_gates)
    setup = MethodSetup(model, g.candidates, head_names(model), dense=g.dense, factor_pairs=g.pairs,
                        padding_sensitive=g.gated)
    if g.prefix_entries:
        setup.inference_count = setup.count(g.candidates) + setup.count(g.dense) - g.prefix_entries + g.folded
    return setup


def _groups(model: nn.Module, *, dense_gates: bool) -> Groups:
    from adapters.methods.lora import LoRA
    from adapters.methods.modeling import Adapter
    from adapters.methods.prefix_tuning import PrefixTuning, PrefixTuningLayer

    g = Groups()
    seen: set[int] = set()   # a module reachable twice (e.g. a LayerNorm also inside adapter_down) counts once

    def add(path: str, module: nn.Module, family: str) -> None:
        target = g.dense if family == "gate" and dense_gates else g.candidates
        for n, p in module.named_parameters():
            if id(p) not in seen:
                seen.add(id(p))
                target[f"{path}.{n}"] = family

    for path, module in model.named_modules():
        if isinstance(module, Adapter):
            _bottleneck(path, module, g, add)
        elif isinstance(module, LoRA):
            g.candidates.update({f"{path}.lora_A": "lora_A", f"{path}.lora_B": "lora_B"})
            if getattr(module, "use_dora", False):
                add(f"{path}.m", module.m, "lora_magnitude")
            if module.use_gating:
                add(f"{path}.gate", module.gate, "gate")
                g.gated = True
            if bool(torch.all(module.lora_B == 0)):
                g.pairs.append(FactorPair(down=f"{path}.lora_A", up=f"{path}.lora_B"))
        elif isinstance(module, PrefixTuning):
            add(f"{path}.wte", module.wte, "prefix_embedding")
            add(f"{path}.control_trans", module.control_trans, "prefix_mlp")
            g.prefix_entries += sum(p.numel() for p in module.parameters())
            g.folded += module.config.prefix_length * module.control_trans[-1].out_features
        elif isinstance(module, PrefixTuningLayer):
            for key, gate in module.prefix_gates.items():
                add(f"{path}.prefix_gates.{key}", gate, "gate")
                g.gated = True
    return g


def _bottleneck(path: str, module: nn.Module, g: Groups, add) -> None:
    """A bottleneck adapter: down (Linear, maybe after a LayerNorm), up, optional gate and norms."""
    for child_name, child in module.named_children():
        if child_name == "adapter_down":
            for i, sub in child.named_children():
                family = "adapter_down" if isinstance(sub, nn.Linear) else "adapter_norm"
                add(f"{path}.adapter_down.{i}", sub, family)
        elif child_name == "adapter_up":
            add(f"{path}.adapter_up", child, "adapter_up")
        elif child_name == "gate":
            add(f"{path}.gate", child, "gate")
            g.gated = True
        elif child_name.startswith("adapter_norm"):
            add(f"{path}.{child_name}", child, "adapter_norm")
        elif any(True for _ in child.parameters()):
            raise RuntimeError(f"unexpected trainable module {path}.{child_name} in a bottleneck adapter")
    down = next((i, m) for i, m in module.adapter_down.named_children() if isinstance(m, nn.Linear))
    up = module.adapter_up
    if isinstance(up, nn.Linear) and bool(torch.all(up.weight == 0)):
        g.pairs.append(FactorPair(down=f"{path}.adapter_down.{down[0]}.weight", up=f"{path}.adapter_up.weight",
                                  down_bias=f"{path}.adapter_down.{down[0]}.bias" if down[1].bias is not None else None))


def save(model: nn.Module, folder: Path) -> None:
    """The adapter and the HF head in AdapterHub's own format (`model.load_adapter(folder)` reads it)."""
    model.save_adapter(str(folder), ADAPTER, with_head=True)


def load(model: nn.Module, folder: Path) -> nn.Module:
    """A saved adapter (and head) into a fresh HF classifier of the same base weights, activated."""
    import adapters

    adapters.init(model)
    with _quiet_activation():
        name = model.load_adapter(str(folder), load_as=ADAPTER, with_head=True, set_active=True)
        model.set_active_adapters(name)
    model.eval()
    return model
