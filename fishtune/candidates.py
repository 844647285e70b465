"""Which parameters a FISH mask may select, and how they pair up.

Candidates. By default every trainable parameter except the classifier head: the `classifier` /
`score` module of a transformers model and the new layer some add (DistilBERT's `pre_classifier`,
DeBERTa's `pooler`: `methods.EXTRA_HEAD_MODULES`; with PEFT, their trainable `modules_to_save` copies), any PEFT
`ModulesToSaveWrapper`, AdapterHub `heads.`; `head=` names others (parameter names or module
paths), `params=` lists the candidates outright (for both, a single string is one name). Families
(for the stats) and zero-initialised factor pairs (for `live` and the dead-entry stats,
`fishtune.live`) are read from the library's modules: PEFT `LoraLayer`s (`lora_A`, `lora_B`,
`lora_magnitude`; each (A, B) a pair) and AdapterHub adapters (fishtune's method groups); any other
parameter's family is its name's last component, with no pair. Used by
`fishtune.FishMask.from_fisher`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from torch import Tensor, nn

from .errors import ConfigError


def candidates(model: nn.Module, *, params: Sequence[str] | str | None = None,
               head: Sequence[str] | str | None = None) -> list[str]:
    """Mask candidates in `named_parameters()` order: `params` if given (each must be trainable),
    else the trainable parameters minus the head (`head`, or the recognised one: module docstring).
    A single string for `params` or `head` is one name."""
    named = dict(model.named_parameters())
    trainable = [n for n, p in named.items() if p.requires_grad]
    if isinstance(params, str):
        params = [params]
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

    from .methods import extra_head_modules

    heads: set[str] = set()
    for path, module in model.named_modules():
        prefix = f"{path}." if path else ""
        if isinstance(module, PreTrainedModel):
            for attr in ("classifier", "score", *extra_head_modules(module)):
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
            # LoRA on an embedding: A (r, vocab) starts at zero and B (out, r) gets its gradient
            # through A's rows, so A is the zero factor ("up") and B the one it silences ("down").
            for adapter in getattr(module, "lora_embedding_A", {}):
                a, b = f"{path}.lora_embedding_A.{adapter}", f"{path}.lora_embedding_B.{adapter}"
                for name, family in ((a, "lora_embedding_A"), (b, "lora_embedding_B")):
                    if name in wanted:
                        families[name] = family
                if a in wanted and b in wanted:
                    pairs.append(FactorPair(down=b, up=a, down_transposed=True, up_transposed=True))
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
