"""Budget that can never move (a LoRA A row under an unselected, zero B column) and the live selection."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from conftest import records
from fishtune.live import dead_entries, select_live
from fishtune.masking import select_mask


@dataclass(frozen=True)
class Pair:
    down: str
    up: str
    down_bias: str | None = None
    down_transposed: bool = False
    up_transposed: bool = False


PAIR = Pair("A", "B", "a_bias")
INITIAL = {"A": torch.randn(3, 4), "a_bias": torch.randn(3), "B": torch.zeros(2, 3)}


def _scores(a: list[list[float]], bias: list[float], b: list[list[float]]) -> dict[str, torch.Tensor]:
    return {"A": torch.tensor(a), "a_bias": torch.tensor(bias), "B": torch.tensor(b)}


# A's rows score highest, B lowest: plain top-k fills A rows whose B columns stay unselected.
SCORES = _scores([[9, 9, 9, 9], [8, 8, 8, 8], [7, 7, 7, 7]], [6, 6, 6], [[1, 2, 3], [0.5, 0.4, 0.3]])


def test_dead_entries_are_rows_of_down_whose_zero_up_column_has_nothing_selected() -> None:
    mask = {"A": torch.zeros(3, 4, dtype=torch.bool), "a_bias": torch.zeros(3, dtype=torch.bool),
            "B": torch.zeros(2, 3, dtype=torch.bool)}
    mask["A"][0] = True
    mask["a_bias"][0] = mask["a_bias"][1] = True
    assert dead_entries(mask, [PAIR], INITIAL) == {"A": 4, "a_bias": 2}
    mask["B"][1, 0] = True  # column 0 can now move, so row 0 of A (and its bias) can too
    assert dead_entries(mask, [PAIR], INITIAL) == {"a_bias": 1}
    nonzero = {**INITIAL, "B": torch.ones(2, 3)}  # a non-zero up factor sets no trap
    assert dead_entries(mask, [PAIR], nonzero) == {}


def test_plain_top_k_spends_budget_on_dead_entries_the_live_selection_does_not() -> None:
    plain = select_mask(SCORES, keep=8, strategy="fish")
    assert sum(dead_entries(plain, [PAIR], INITIAL).values()) == 8  # all of A's rows 0 and 1: nothing moves
    live = select_live(SCORES, keep=8, strategy="fish", seed=0, pairs=[PAIR], initial=INITIAL)
    assert sum(int(m.sum()) for m in live.values()) == 8
    assert dead_entries(live, [PAIR], INITIAL) == {}
    # Down the ranking: B[0,2] (3) is the first up entry, then A row 2 + bias 2 come in at once (7, 6),
    # then B[0,1] (2) opens row 1, whose entries (8) fill the budget.
    assert live["B"].nonzero().tolist() == [[0, 1], [0, 2]]
    assert live["A"].sum(1).tolist() == [0, 1, 4] and live["a_bias"].tolist() == [False, False, True]


@pytest.mark.parametrize("strategy", ["fish", "reverse", "random"])
def test_live_selection_is_exact_k_and_never_dead(strategy: str) -> None:
    torch.manual_seed(0)
    pairs = [Pair(f"A{i}", f"B{i}") for i in range(3)]
    scores = {**{f"A{i}": torch.rand(4, 16) for i in range(3)}, **{f"B{i}": torch.rand(16, 4) / 10 for i in range(3)}}
    initial = {**{f"A{i}": torch.randn(4, 16) for i in range(3)}, **{f"B{i}": torch.zeros(16, 4) for i in range(3)}}
    for keep in (1, 5, 37, 200, 384):
        mask = select_live(scores, keep=keep, strategy=strategy, seed=3, pairs=pairs, initial=initial)
        assert sum(int(m.sum()) for m in mask.values()) == keep
        assert dead_entries(mask, pairs, initial) == {}


def test_without_pairs_live_equals_plain_top_k() -> None:
    torch.manual_seed(1)
    scores = {"x": torch.rand(5, 7), "y": torch.rand(11)}
    for strategy in ("fish", "reverse"):
        plain = select_mask(scores, keep=13, strategy=strategy)
        live = select_live(scores, keep=13, strategy=strategy, seed=0, pairs=[], initial={})
        assert all(torch.equal(plain[n], live[n]) for n in scores)


def test_transposed_layouts() -> None:
    pair = Pair("A", "B", down_transposed=True, up_transposed=True)  # A stored (in, r), B stored (r, out)
    mask = {"A": torch.zeros(4, 3, dtype=torch.bool), "B": torch.zeros(3, 2, dtype=torch.bool)}
    mask["A"][:, 1] = True
    initial = {"A": torch.randn(4, 3), "B": torch.zeros(3, 2)}
    assert dead_entries(mask, [pair], initial) == {"A": 4}
    mask["B"][1, 0] = True
    assert dead_entries(mask, [pair], initial) == {}


def test_runs_record_the_live_budget_and_live_selection_moves_every_selected_entry(run_cli, tmp_path: Path) -> None:
    """Reverse after the warm-up picks low-Fisher A entries whose B columns get nothing (NOTES §13);
    the live variant of the same ranking trains every entry it selects."""
    common = ("task=rte", "method.r=16", "mask=reverse", "mask.keep_ratio=0.05", "mask.num_samples=16",
              "mask.warmup_steps=2")
    assert run_cli(*common) == 0
    assert run_cli(*common, "mask.live=true") == 0
    by_tag = {r["mask_tag"]: r for r in records(tmp_path / "runs")}
    for rec in by_tag.values():
        t, stats = rec["trainable"], rec["mask_stats"]
        assert t["peft_live"] == stats["live_selected"] == t["peft_selected"] - sum(stats["dead_by_family"].values())
        assert set(stats["dead_by_family"]) <= {"lora_A"}  # only A rows can be gated by a zero B column
        assert t["peft_moved"] <= t["peft_live"]
    plain, live = by_tag["reverse-k0.05-warmup-w2-n16"], by_tag["reverse-live-k0.05-warmup-w2-n16"]
    assert plain["mask_stats"]["dead_by_family"]["lora_A"] > 0
    assert live["trainable"]["peft_live"] == live["trainable"]["peft_selected"] == plain["trainable"]["peft_selected"]
    assert live["trainable"]["peft_moved"] == live["trainable"]["peft_selected"]  # every selected entry trained
