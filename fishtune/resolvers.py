"""OmegaConf resolvers the configs use (registered when `fishtune` is imported).

- `${fishtune.scaled:${.scale},${.r}}`: LoRA's alpha = scale * r, so alpha follows r (alpha/r stays
  `scale`, 2 by default) unless `method.alpha=` is given explicitly.
- `${fishtune.lora_tag:${.name},${.r},${.alpha},${.target_modules}}`: the method tag, which shows every
  knob that changes the trainable count or the LoRA scale when it differs from the default, so runs
  of different scale never share a table row by tag.
- `${fishtune.tag:<base>,<label>,<value>,<default>,...}`: the same rule for the other methods' tags.
- `${fishtune.paired:${mask.name},<vanilla>,<masked>}`: one value per side of a pair (configs/pair/).
- `${fishtune.budget:${.keep_ratio},${.keep_match}}`: `k0.5`, or `match.<matched method tag>`.
- `${fishtune.by_name:${method.name},<default>,<name>,<value>,...}`: a per-method value in an
  experiment file (the paper-scale LoRA/DoRA learning rate).
"""

from __future__ import annotations

from collections.abc import Sequence

from omegaconf import OmegaConf

DEFAULT_LORA_SCALE = 2          # alpha / r
DEFAULT_LORA_TARGETS = ("query", "value")


def scaled(scale: float, r: int) -> float:
    """alpha = scale * r (an int when it is one, so tags and configs read naturally)."""
    alpha = float(scale) * int(r)
    return int(alpha) if alpha.is_integer() else alpha


def lora_tag(name: str, r: int, alpha: float, targets: Sequence[str]) -> str:
    """`lora-r16`; `-a16` when alpha != 2r; `-t.key.query` when the targets differ from query,value."""
    tag = f"{name}-r{r}"
    if float(alpha) != DEFAULT_LORA_SCALE * int(r):
        tag += f"-a{scaled(alpha, 1)}"
    if sorted(targets) != sorted(DEFAULT_LORA_TARGETS):
        tag += "-t." + ".".join(sorted(str(t) for t in targets))
    return tag


def live_suffix(live: bool) -> str:
    """`-live` in a mask tag when `mask.live=true`."""
    return "-live" if live else ""


def _fmt(value: object) -> str:
    """16.0 -> `16`, 0.5 -> `0.5`, True -> `` (a flag shows its label only)."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return "" if value is True else str(value)


def knob_tag(base: str, *knobs: object) -> str:
    """`${fishtune.tag:pfeiffer-rf${.reduction_factor},s,${.scaling},4}`: `base`, then `-<label><value>`
    for each (label, value, default) triple whose value differs from its default (method tags)."""
    if len(knobs) % 3:
        raise ValueError("fishtune.tag takes a base and (label, value, default) triples")
    tag = str(base)
    for label, value, default in zip(knobs[0::3], knobs[1::3], knobs[2::3]):
        if value != default and not (isinstance(value, (int, float)) and isinstance(default, (int, float))
                                     and float(value) == float(default)):
            tag += f"-{label}{_fmt(value)}"
    return tag


def paired(mask_name: str, vanilla: object, masked: object) -> object:
    """`${fishtune.paired:${mask.name},<vanilla value>,<masked value>}`: a pair config's value for
    the vanilla cell (mask=none) or for its masked cells (configs/pair/)."""
    return vanilla if mask_name == "none" else masked


def by_name(name: str, default: object, *pairs: object) -> object:
    """`${fishtune.by_name:${method.name},<default>,lora,5e-4,dora,5e-4}`: the value paired with
    `name`, else `default` (an experiment's per-method setting, e.g. a learning rate at paper scale)."""
    if len(pairs) % 2:
        raise ValueError("fishtune.by_name takes a name, a default and (name, value) pairs")
    return dict(zip(map(str, pairs[0::2]), pairs[1::2])).get(str(name), default)


def budget_tag(keep_ratio: float, keep_match: object = None, keep: object = None) -> str:
    """The budget part of a mask tag: `k0.5`, `n147` (an absolute count, `mask.keep`), or
    `match.<tag of the matched method config>`."""
    if keep is not None:
        return f"n{_fmt(keep)}"
    if keep_match is None:
        return f"k{_fmt(keep_ratio)}"
    from .methods import method_config

    return f"match.{method_config(keep_match).tag}"


def register_resolvers() -> None:
    for name, fn in (("fishtune.scaled", scaled), ("fishtune.lora_tag", lora_tag), ("fishtune.live_suffix", live_suffix),
                     ("fishtune.tag", knob_tag), ("fishtune.paired", paired), ("fishtune.budget", budget_tag),
                     ("fishtune.by_name", by_name)):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn)
