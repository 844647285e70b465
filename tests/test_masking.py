"""select_mask keeps exactly k entries whatever the ties; mask_stats makes a mask auditable."""

from __future__ import annotations

import logging

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor

from fishtune.errors import ConfigError
from fishtune.masking import mask_stats, select_mask


def count(mask: dict[str, Tensor]) -> int:
    return sum(int(m.sum()) for m in mask.values())


def flat(d: dict[str, Tensor]) -> Tensor:
    return torch.cat([d[n].reshape(-1) for n in sorted(d)])


def same(a: dict[str, Tensor], b: dict[str, Tensor]) -> bool:
    return set(a) == set(b) and all(torch.equal(a[n], b[n]) for n in a)


def heavy_ties() -> dict[str, Tensor]:
    """200 entries, 90% exactly zero (as LoRA's A at init), the 20 others distinct and positive."""
    gen = torch.Generator().manual_seed(0)
    a, b = torch.zeros(10, 10), torch.zeros(100)
    b[torch.randperm(100, generator=gen)[:20]] = torch.rand(20, generator=gen) + 0.1
    return {"x.lora_A.weight": a, "x.lora_B.weight": b}


@pytest.mark.parametrize("keep", [1, 10, 20, 21, 50, 199, 200])
@pytest.mark.parametrize("strategy", ["fish", "reverse", "random"])
@pytest.mark.parametrize("scope", ["global", "per_tensor"])
def test_exactly_k_with_heavy_ties(keep: int, strategy: str, scope: str) -> None:
    scores = heavy_ties()
    mask = select_mask(scores, keep=keep, strategy=strategy, scope=scope)
    assert count(mask) == keep
    assert list(mask) == list(scores)
    for name, m in mask.items():
        assert m.dtype == torch.bool and m.device.type == "cpu" and m.shape == scores[name].shape


def test_fish_keeps_largest_and_reverse_smallest() -> None:
    scores = {"a": torch.tensor([5.0, 1.0, 3.0]), "b": torch.tensor([[4.0, 0.0], [2.0, 6.0]])}
    fish = select_mask(scores, keep=3, strategy="fish")
    assert fish["a"].tolist() == [True, False, False] and fish["b"].tolist() == [[True, False], [False, True]]
    reverse = select_mask(scores, keep=2, strategy="reverse")
    assert reverse["a"].tolist() == [False, True, False] and reverse["b"].tolist() == [[False, True], [False, False]]
    # the kept scores dominate the others
    s, f = flat(scores), flat(fish)
    assert s[f].min() >= s[~f].max()


def test_ties_are_broken_by_flat_index_in_name_order() -> None:
    scores = {"b": torch.zeros(3), "a": torch.zeros(3)}  # "a" comes first once keys are sorted
    fish = select_mask(scores, keep=3, strategy="fish")  # fish: lower flat indices first
    assert fish["a"].tolist() == [True, True, True] and fish["b"].tolist() == [False, False, False]
    reverse = select_mask(scores, keep=4, strategy="reverse")  # reverse: the same ranking, from the end
    assert reverse["a"].tolist() == [False, False, True] and reverse["b"].tolist() == [True, True, True]


def test_fish_and_reverse_are_disjoint_when_2k_le_n() -> None:
    scores = heavy_ties()
    for keep in (10, 50, 100):
        fish, reverse = (flat(select_mask(scores, keep=keep, strategy=s)) for s in ("fish", "reverse"))
        assert not (fish & reverse).any()


def test_random_is_seeded_and_ignores_score_values() -> None:
    scores = heavy_ties()
    other = {n: torch.randn(t.shape) for n, t in scores.items()}
    first = select_mask(scores, keep=30, strategy="random", seed=3)
    assert same(first, select_mask(scores, keep=30, strategy="random", seed=3))
    assert same(first, select_mask(other, keep=30, strategy="random", seed=3))
    assert not same(first, select_mask(scores, keep=30, strategy="random", seed=4))


def test_per_tensor_budgets_are_proportional_and_sum_to_k() -> None:
    scores = {"a": torch.rand(10), "b": torch.rand(20), "c": torch.rand(30)}
    mask = select_mask(scores, keep=7, strategy="fish", scope="per_tensor")
    # 7 * (10, 20, 30) / 60 = (1.17, 2.33, 3.5): floors (1, 2, 3), the spare one to the largest remainder
    assert [int(mask[n].sum()) for n in "abc"] == [1, 2, 4]
    for name in "abc":  # within each tensor, the largest scores
        s, m = scores[name], mask[name]
        assert s[m].min() > s[~m].max()


def test_result_does_not_depend_on_key_order() -> None:
    scores = heavy_ties()
    reordered = dict(reversed(list(scores.items())))
    for strategy in ("fish", "reverse", "random"):
        for scope in ("global", "per_tensor"):
            a = select_mask(scores, keep=37, strategy=strategy, scope=scope)
            b = select_mask(reordered, keep=37, strategy=strategy, scope=scope)
            assert same(a, b) and list(b) == list(reordered)


@pytest.mark.parametrize("keep", [0, -1, 201, 2.5, True])
def test_invalid_keep_raises(keep) -> None:
    with pytest.raises(ConfigError):
        select_mask(heavy_ties(), keep=keep, strategy="fish")


def test_invalid_strategy_scope_and_scores_raise() -> None:
    with pytest.raises(ConfigError):
        select_mask(heavy_ties(), keep=5, strategy="top")
    with pytest.raises(ConfigError):
        select_mask(heavy_ties(), keep=5, strategy="fish", scope="layer")
    with pytest.raises(ConfigError):
        select_mask({"a": torch.tensor([1.0, float("nan")])}, keep=1, strategy="fish")


def test_boundary_ties_are_logged(caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="fishtune.masking"):
        select_mask(heavy_ties(), keep=25, strategy="fish")  # 20 nonzero, then 5 of the 180 zeros
    assert "180 entries tie" in caplog.text and "5 kept, 175 left out" in caplog.text
    assert "broken by flat index" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="fishtune.masking"):
        select_mask({"a": torch.zeros(6)}, keep=3, strategy="reverse")
    assert "6 entries tie" in caplog.text and "3 kept, 3 left out" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="fishtune.masking"):
        select_mask(heavy_ties(), keep=20, strategy="fish")  # cut falls between 20 nonzeros and the zeros
        select_mask(heavy_ties(), keep=25, strategy="random")
    assert caplog.text == ""


def test_mask_stats_on_a_hand_made_example() -> None:
    scores = {
        "m.lora_A.default.weight": torch.tensor([[0.0, 0.0], [0.0, 0.0]]),
        "m.lora_B.default.weight": torch.tensor([3.0, 2.0, 1.0, 1.0]),
        "classifier.bias": torch.tensor([1.0, 0.5]),
    }
    # 3, 2 and two of the three 1.0: the head's (first in name order) and lora_B's first one
    mask = select_mask(scores, keep=4, strategy="fish")
    assert mask["m.lora_B.default.weight"].tolist() == [True, True, True, False]
    # families come from the method's declaration, never from the names (these are made up on purpose)
    families = {"m.lora_A.default.weight": "down", "m.lora_B.default.weight": "up", "classifier.bias": "head"}
    stats = mask_stats(mask, scores, families=families)
    assert stats["selected"] == 4 and stats["total"] == 10
    assert stats["by_family"] == {
        "down": {"selected": 0, "total": 4, "share_of_mask": 0.0},
        "up": {"selected": 3, "total": 4, "share_of_mask": 0.75},
        "head": {"selected": 1, "total": 2, "share_of_mask": 0.25},
    }
    assert mask_stats(mask)["by_family"] == {"all": {"selected": 4, "total": 10, "share_of_mask": 1.0}}
    assert stats["threshold_ties"] == 1 and stats["zero_score_selected"] == 0
    # the reverse mask: the four zeros of A, with no tie left outside, all of them zero-score
    reverse = select_mask(scores, keep=4, strategy="reverse")
    assert mask_stats(reverse, scores)["threshold_ties"] == 0
    assert mask_stats(reverse, scores)["zero_score_selected"] == 4
    # keep=2 reverse: two of the four zeros, two zeros tied outside
    assert mask_stats(select_mask(scores, keep=2, strategy="reverse"), scores)["threshold_ties"] == 2
    assert "threshold_ties" not in mask_stats(mask)


score_sets = st.lists(
    st.tuples(st.integers(1, 4), st.integers(1, 5), st.integers(0, 3)), min_size=1, max_size=4
).flatmap(
    lambda dims: st.tuples(
        st.just(dims),
        st.lists(st.integers(0, 2**31 - 1), min_size=len(dims), max_size=len(dims)),
    )
)


def build_scores(dims: list[tuple[int, int, int]], seeds: list[int]) -> dict[str, Tensor]:
    """Tensors of the given shapes; values from few levels (so many ties) or continuous."""
    scores = {}
    for i, ((rows, cols, levels), seed) in enumerate(zip(dims, seeds)):
        gen = torch.Generator().manual_seed(seed)
        values = torch.rand(rows, cols, generator=gen)
        scores[f"p{i}.weight"] = (values * levels).floor() if levels else values
    return scores


@settings(max_examples=50, deadline=None)
@given(data=score_sets, keep_fraction=st.floats(0.0, 1.0), seed=st.integers(0, 1000),
       scope=st.sampled_from(["global", "per_tensor"]))
def test_select_mask_properties(data, keep_fraction: float, seed: int, scope: str) -> None:
    scores = build_scores(*data)
    n = sum(t.numel() for t in scores.values())
    keep = max(1, min(n, round(keep_fraction * n)))
    masks = {}
    for strategy in ("fish", "reverse", "random"):
        masks[strategy] = select_mask(scores, keep=keep, strategy=strategy, seed=seed, scope=scope)
        assert count(masks[strategy]) == keep
        assert same(masks[strategy], select_mask(scores, keep=keep, strategy=strategy, seed=seed, scope=scope))
    if 2 * keep <= n and scope == "global":  # per-tensor quotas round up, so 2 q_t may exceed n_t
        assert not (flat(masks["fish"]) & flat(masks["reverse"])).any()
