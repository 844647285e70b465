"""Every shipped pair (configs/pair/): the masked cells train exactly the vanilla cell's count."""

from __future__ import annotations

import copy

import pytest

from conftest import REPO, compose_run
from fishtune.config import config_digest, validate
from fishtune.methods import apply_method, method_config
from fishtune.models import load_model
from fishtune.selection import mask_budget, matched_budget
from fishtune.tasks import get_task

PAIRS = sorted(p.stem for p in (REPO / "configs" / "pair").glob("*.yaml"))
ARCHS = ("tiny-bert",)   # counts per architecture: tests/test_methods.py


def _valid(*overrides: str):
    cfg = compose_run(*overrides)
    validate(cfg)
    return cfg


@pytest.fixture(scope="module")
def bases() -> dict:
    models = {arch: compose_run(f"model={arch}").model for arch in ARCHS}
    return {arch: load_model(cfg, get_task("mrpc"), seed=1).model for arch, cfg in models.items()}


def test_there_is_a_pair_for_every_method() -> None:
    from fishtune.methods import REGISTRY

    assert set(PAIRS) == set(REGISTRY)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("pair", PAIRS)
def test_pair_counts_are_equal(bases, pair: str, arch: str) -> None:
    vanilla = _valid(f"+pair={pair}", f"model={arch}", "mask=none")
    masked = _valid(f"+pair={pair}", f"model={arch}", "mask=fish")
    # The vanilla cell is the plain method config (same run folder as `method=<pair>`)...
    assert config_digest(vanilla) == config_digest(_valid(f"method={pair}", f"model={arch}", "mask=none"))
    partner = method_config(masked.mask.keep_match)
    if pair != "full":   # ... and it is the config the masked cells match (full matches LoRA r=8)
        assert dict(partner) == dict(vanilla.method)

    v = apply_method(copy.deepcopy(bases[arch]), vanilla.method)
    m = apply_method(copy.deepcopy(bases[arch]), masked.method)
    matched = matched_budget(copy.deepcopy(bases[arch]), masked.mask, own_dense=m.count(m.dense))
    k = mask_budget(masked.mask, method_total=m.count(m.candidates), head_total=m.count(m.head), matched=matched)
    p = apply_method(copy.deepcopy(bases[arch]), partner)
    # Optimizer-updated entries: selected + dense + head, equal on both sides.
    assert k + m.count(m.dense) + m.count(m.head) == p.count(p.candidates) + p.count(p.dense) + p.count(p.head)
    if pair != "full":
        assert k == v.count(v.candidates) and m.count(m.dense) == v.count(v.dense)
    assert 1.5 * k < m.count(m.candidates) < 2.5 * k or pair == "full"   # the masked method is about twice as large


def test_the_full_pair_masks_with_the_fisher_at_init_and_its_own_rate() -> None:
    """The original FISH Mask on the backbone: Fisher at init (no dense warm-up) and lr 2e-3 for the
    masked cells (measured, configs/pair/full.yaml); the dense vanilla cell keeps full's 5e-5."""
    vanilla = _valid("+pair=full", "mask=none")
    for mask in ("fish", "random", "reverse"):
        masked = _valid("+pair=full", f"mask={mask}")
        assert masked.train.lr == 2e-3 and masked.mask.fisher_at == "init"
    assert vanilla.train.lr == vanilla.method.lr == 5e-5


def test_mask_keys_cannot_make_a_vanilla_cell_another_run() -> None:
    """Keys a pair sets for its masked cells do nothing without a mask: same run folder."""
    plain = config_digest(_valid("method=lora", "mask=none"))
    assert config_digest(_valid("method=lora", "mask=none", "+mask.fisher_at=init", "+mask.num_samples=8")) == plain
    assert config_digest(_valid("method=lora", "mask=fish")) != config_digest(_valid("method=lora", "mask=fish", "mask.fisher_at=init"))


@pytest.mark.parametrize("pair", PAIRS)
def test_the_masked_cells_know_their_vanilla_cell(pair: str) -> None:
    from fishtune.config import pair_vanilla_method

    vanilla = _valid(f"+pair={pair}", "mask=none")
    assert pair_vanilla_method(vanilla) is None
    for mask in ("fish", "random", "reverse"):
        found = pair_vanilla_method(_valid(f"+pair={pair}", f"mask={mask}"))
        if pair == "full":   # the same method on both sides (masked at LoRA r=8's count)
            assert found is None
        else:
            assert dict(found) == dict(vanilla.method)


def test_a_method_override_on_a_pair_moves_the_matched_count_with_the_vanilla_cell(bases) -> None:
    # `method.target_modules=...` changes both sides; the masks must match the vanilla cell as run,
    # not the default lora config (which would give k = r=8 on query/value only)
    from fishtune.config import pair_vanilla_method

    qkv = "method.target_modules=[query,key,value]"
    vanilla, masked = (_valid("+pair=lora", "model=tiny-bert", qkv, f"mask={m}") for m in ("none", "fish"))
    v = apply_method(copy.deepcopy(bases["tiny-bert"]), vanilla.method)
    m = apply_method(copy.deepcopy(bases["tiny-bert"]), masked.method)
    k = matched_budget(copy.deepcopy(bases["tiny-bert"]), masked.mask, own_dense=m.count(m.dense),
                       vanilla=pair_vanilla_method(masked))
    assert k == v.count(v.candidates) and m.count(m.candidates) == 2 * k


def test_a_pair_with_a_fixed_alpha_is_refused_for_its_lora_scales() -> None:
    from fishtune.errors import ConfigError
    from fishtune.config import pair_vanilla_method

    with pytest.raises(ConfigError, match=r"alpha/r 2 vanilla, 1 masked.*set method.scale=2 instead"):
        pair_vanilla_method(compose_run("+pair=lora", "method.alpha=16", "mask=fish"))
    with pytest.raises(ConfigError, match=r"alpha/r 2 vanilla, 1 masked"):  # before any cell of a sweep runs
        _valid("+pair=lora", "method.alpha=16", "mask=fish")
    assert pair_vanilla_method(_valid("+pair=lora", "method.scale=1", "mask=fish")).alpha == 8   # the way to do it


@pytest.mark.parametrize(("pair", "key"), [("lora", "method.r=32"), ("adapter_pfeiffer", "method.reduction_factor=4"),
                                           ("adapter_houlsby", "method.reduction_factor=32"), ("dora", "method.r=4")])
def test_a_command_line_value_for_a_key_a_pair_sets_per_side_is_refused(pair: str, key: str) -> None:
    """Both sides would be one method, and the masks would match the packaged config, not the vanilla
    cell (with +pair=lora method.r=32: FISH at r=8's count inside r=32, against vanilla r=32)."""
    from fishtune.errors import ConfigError

    _valid(f"+pair={pair}", key, "mask=none")  # the vanilla cell alone is a plain run
    with pytest.raises(ConfigError, match=r"the pair's method keys are set on the command line.*configs/pair/"):
        _valid(f"+pair={pair}", key, "mask=fish")
    _valid(f"method={pair}", key, "mask=fish", f"mask.keep_match={pair}")  # the same, said explicitly: allowed


def test_a_pair_whose_other_key_still_differs_holds() -> None:
    """prefix sets two keys per side: overriding one leaves a pair (40 / 512 vanilla, 40 / 1024 masked)."""
    from fishtune.config import pair_vanilla_method

    found = pair_vanilla_method(_valid("+pair=prefix", "method.prefix_length=40", "mask=fish"))
    assert (found.prefix_length, found.bottleneck_size) == (40, 512)


def test_an_explicit_keep_match_on_a_pairs_masked_cell_is_honoured(bases) -> None:
    """Only the pair's own keep_match is replaced by its vanilla cell's method, not one the command line set."""
    from fishtune.config import pair_vanilla_method

    masked = _valid("+pair=lora", "model=tiny-bert", "mask=fish", "mask.keep_match={config:lora,r:4}")
    m = apply_method(copy.deepcopy(bases["tiny-bert"]), method_config("lora"))
    r8 = m.count(m.candidates)
    k = matched_budget(copy.deepcopy(bases["tiny-bert"]), masked.mask, own_dense=0,
                       vanilla=pair_vanilla_method(masked))
    assert k == r8 // 2 and "lora-r4" in masked.mask.tag


def test_head_in_budget_with_keep_match_is_refused() -> None:
    """keep_match counts the same model's method entries; the flag would only rename the run folder."""
    from fishtune.errors import ConfigError

    with pytest.raises(ConfigError, match="mask.head_in_budget has no effect with mask.keep_match"):
        _valid("method=lora", "method.r=16", "mask=fish", "mask.keep_match=lora", "mask.head_in_budget=true")
    _valid("method=lora", "mask=fish", "mask.head_in_budget=true")
