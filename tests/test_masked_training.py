"""Masked training: frozen entries stay bit-identical; warm-up restores; the CLI writes the audit files."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from safetensors.torch import load_file

from conftest import records
from fishtune.errors import ConfigError
from fishtune.batching import Encoded
from fishtune.frozen import EntryMask, count_changed
from fishtune.masking import select_mask
from fishtune.selection import build_mask, mask_budget
from fishtune.train import task_loss


def _tiny_lora(seed: int = 0):
    from peft import LoraConfig, get_peft_model
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)
    config = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=32, num_labels=2)
    model = get_peft_model(BertForSequenceClassification(config),
                           LoraConfig(task_type="SEQ_CLS", r=4, lora_alpha=8, target_modules=["query", "value"]))
    lora = [n for n, _ in model.named_parameters() if "lora_" in n]
    return model, lora


def _data(n: int = 24) -> Encoded:
    g = torch.Generator().manual_seed(1)
    ids = [torch.randint(1, 50, (int(torch.randint(4, 12, (1,), generator=g)),), generator=g).tolist() for _ in range(n)]
    return Encoded(ids, None, torch.randint(0, 2, (n,), generator=g))


def test_frozen_entries_bit_identical_after_many_adamw_steps_with_weight_decay() -> None:
    model, lora = _tiny_lora()
    params = dict(model.named_parameters())
    with torch.no_grad():
        for n in lora:
            params[n].normal_()  # non-zero B so every entry gets gradient
    scores = {n: torch.rand(params[n].shape) for n in lora}
    mask = select_mask(scores, keep=sum(s.numel() for s in scores.values()) // 3, strategy="fish")
    initial = {n: params[n].detach().clone() for n in lora}
    entry_mask = EntryMask(model, mask)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.1)
    x = torch.randint(1, 50, (8, 10))
    y = torch.randint(0, 2, (8,))
    for _ in range(60):
        task_loss(model(input_ids=x).logits, y).backward()
        entry_mask.mask_grads()
        opt.step()
        opt.zero_grad()
        entry_mask.restore_frozen()
    assert count_changed(model, initial, mask) == 0
    moved = sum(int((params[n] != initial[n])[mask[n]].sum()) for n in lora)
    assert moved > 0.9 * sum(int(m.sum()) for m in mask.values())  # the selected entries did train


def test_without_the_restore_weight_decay_moves_frozen_entries() -> None:
    """The pitfall the restore exists for: masking gradients alone is not enough under AdamW decay."""
    model, lora = _tiny_lora()
    params = dict(model.named_parameters())
    mask = select_mask({n: torch.rand(params[n].shape) for n in lora}, keep=10, strategy="fish")
    initial = {n: params[n].detach().clone() for n in lora}
    entry_mask = EntryMask(model, mask)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.1)
    task_loss(model(input_ids=torch.randint(1, 50, (4, 6))).logits, torch.tensor([0, 1, 0, 1])).backward()
    entry_mask.mask_grads()
    opt.step()
    assert count_changed(model, initial, mask) > 0


def test_count_changed_sees_a_single_flipped_bit() -> None:
    model, lora = _tiny_lora()
    params = dict(model.named_parameters())
    initial = {n: params[n].detach().clone() for n in lora}
    mask = {n: torch.zeros_like(params[n], dtype=torch.bool) for n in lora}
    with torch.no_grad():
        params[lora[0]].view(-1)[3] = torch.nextafter(params[lora[0]].view(-1)[3], torch.tensor(1.0))
    assert count_changed(model, initial, mask) == 1


def test_warmup_path_restores_initial_values_and_puts_mask_in_A() -> None:
    model, lora = _tiny_lora()
    params = dict(model.named_parameters())
    trainable = [n for n, p in params.items() if p.requires_grad]
    before = {n: params[n].detach().clone() for n in trainable}
    cfg = OmegaConf.create({"strategy": "fish", "fisher_at": "warmup", "warmup_steps": 5, "fisher_batch_size": 8,
                            "num_samples": 24, "estimator": "auto", "labels": "empirical", "seed": 0,
                            "scope": "global", "keep": None, "keep_ratio": 0.5, "head_in_budget": False})
    total = sum(params[n].numel() for n in lora)
    keep = mask_budget(cfg, method_total=total, head_total=34)
    families = {n: n.split(".")[-3] for n in lora}  # `...query.lora_A.default.weight` -> lora_A
    result = build_mask(model, lora, cfg, _data(), keep=keep, lr=1e-2, seed=0, pad_id=0,
                        device=torch.device("cpu"), autocast=False, families=families)
    for n in trainable:
        assert torch.equal(params[n], before[n]), n
    assert sum(int(m.sum()) for m in result.mask.values()) == keep == total // 2
    assert result.stats["by_family"]["lora_A"]["selected"] > 0  # at init, A would have zero Fisher

    at_init = build_mask(model, lora, OmegaConf.merge(cfg, {"fisher_at": "init"}), _data(), keep=keep, lr=1e-2,
                         seed=0, pad_id=0, device=torch.device("cpu"), autocast=False, families=families)
    assert at_init.stats["by_family"]["lora_A"]["selected"] == 0  # the zero-B trap, made visible


def test_budget_accounting() -> None:
    cfg = OmegaConf.create({"keep": None, "keep_ratio": 0.5, "head_in_budget": False})
    assert mask_budget(cfg, method_total=1000, head_total=100) == 500
    assert mask_budget(OmegaConf.merge(cfg, {"head_in_budget": True}), method_total=1000, head_total=100) == 450
    assert mask_budget(OmegaConf.merge(cfg, {"keep": 7}), method_total=1000, head_total=100) == 7


@pytest.mark.parametrize("overrides, matched, message", [
    ({"keep_match": "lora"}, 1001, "mask.keep_match=lora trains 1001 entries, more than this method's 1000 candidates"),
    ({"keep": 1001}, None, "mask.keep=1001 is larger than the method's 1000 parameters"),
    ({"keep_ratio": 0.0004}, None, r"the mask budget is 0 entries \(keep_ratio 0.0004 of 1000\); raise"),
    ({"keep_ratio": 0.05, "head_in_budget": True}, None, "the mask budget is -45 entries .* minus the head"),
    ({"keep_match": "prefix"}, 0, "mask.keep_match=prefix leaves a budget of 0 entries .* match a larger config"),
], ids=["keep-match-too-large", "keep-too-large", "below-one", "below-one-with-the-head", "keep-match-below-one"])
def test_budget_errors(overrides: dict, matched: int | None, message: str) -> None:
    # 1000 method entries, a head of 100: round(0.05 * 1100) - 100 = -45
    cfg = OmegaConf.create({"keep": None, "keep_ratio": 0.5, "head_in_budget": False, "keep_match": None, **overrides})
    with pytest.raises(ConfigError, match=message):
        mask_budget(cfg, method_total=1000, head_total=100, matched=matched)


def test_entry_mask_refuses_a_second_attach_and_a_mask_of_another_shape() -> None:
    model, lora = _tiny_lora()
    params = dict(model.named_parameters())
    mask = {n: torch.rand(params[n].shape) < 0.5 for n in lora}
    entry_mask = EntryMask(model, mask)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad])
    entry_mask.attach(opt)
    with pytest.raises(RuntimeError, match="already attached to an optimizer; detach"):
        entry_mask.attach(opt)
    entry_mask.unbind()
    wrong = {**mask, lora[0]: mask[lora[0]].T}   # (4, 16) -> (16, 4)
    with pytest.raises(ConfigError, match=rf"mask shape \(16, 4\) does not match parameter '{lora[0]}' \(4, 16\)"):
        EntryMask(model, wrong)


def test_cli_fish_run_writes_audit_files(run_cli, tmp_path: Path) -> None:
    assert run_cli("mask=fish", "method.r=16", "mask.num_samples=16", "mask.warmup_steps=3",
                   "train.weight_decay=0.1", "train.epochs=2") == 0
    (rec,) = records(tmp_path / "runs")
    folder = Path(rec["output_dir"])
    mask = load_file(str(folder / "mask.safetensors"))
    init, final = load_file(str(folder / "peft_init.safetensors")), load_file(str(folder / "peft_final.safetensors"))
    assert set(mask) == set(init) == set(final) and all("lora_" in n for n in mask)
    assert rec["frozen_changed"] == 0 and rec["status"] == "complete"
    selected = sum(int(m.sum()) for m in mask.values())
    assert selected == rec["trainable"]["peft_selected"] == rec["trainable"]["peft_total"] // 2
    assert 0 < rec["trainable"]["peft_moved"] <= selected
    for n in mask:
        assert torch.equal(init[n][~mask[n]], final[n][~mask[n]])
    assert any(not torch.equal(init[n][mask[n]], final[n][mask[n]]) for n in mask)
    assert set(rec["mask_stats"]["by_family"]) == {"lora_A", "lora_B"}
    assert "threshold_ties" in rec["mask_stats"] and rec["time_s"]["fisher"] >= 0

    # The adapter exported in PEFT's format loads onto the same base model and holds the final values.
    from peft import PeftModel

    from fishtune.models import load_model
    from fishtune.tasks import get_task

    base = load_model(OmegaConf.load(folder / "config.yaml").model, get_task("mrpc"), seed=1).model
    loaded = dict(PeftModel.from_pretrained(base, str(folder / "adapter")).named_parameters())
    for n in final:
        assert torch.equal(loaded[n], final[n]), n


def test_dora_fish_run_masks_the_magnitudes_too(run_cli, tmp_path: Path) -> None:
    assert run_cli("method=dora", "mask=fish", "method.r=16", "mask.num_samples=1000", "mask.warmup_steps=3",
                   "train.weight_decay=0.1") == 0
    (rec,) = records(tmp_path / "runs")
    assert rec["method"] == "dora" and rec["frozen_changed"] == 0
    assert rec["mask_stats"]["fisher_examples"] == 48   # 1000 asked for, the training subset's 48 used
    assert set(rec["mask_stats"]["by_family"]) == {"lora_A", "lora_B", "lora_magnitude"}
    assert rec["trainable"]["peft_selected"] == rec["trainable"]["peft_total"] // 2


@pytest.mark.slow
def test_compiled_masked_run_keeps_frozen_entries(run_cli, tmp_path: Path) -> None:
    """train.compile=true (inductor; ~1 min on CPU) through the same masked path."""
    assert run_cli("train.compile=true", "mask=fish", "method.r=16", "mask.num_samples=16",
                   "mask.warmup_steps=2", "train.weight_decay=0.1") == 0
    (rec,) = records(tmp_path / "runs")
    assert rec["status"] == "complete" and rec["frozen_changed"] == 0


def _one_tensor_module(values: list[float]) -> tuple[torch.nn.Module, torch.nn.Parameter]:
    module = torch.nn.Module()
    module.w = torch.nn.Parameter(torch.tensor(values))
    return module, module.w


def test_a_frozen_minus_zero_comes_back_as_minus_zero() -> None:
    # momentum from dense steps before the mask was bound moves the frozen entry; the restore is a
    # selection, so it gives back -0.0 itself (a multiply-add gives +0.0: +0.0 + -0.0 = +0.0)
    module, w = _one_tensor_module([-0.0, 1.0])
    opt = torch.optim.Adam([w], lr=0.1)
    (-w.sum()).backward()
    opt.step()
    opt.zero_grad()
    with torch.no_grad():
        w.copy_(torch.tensor([-0.0, 1.0]))
    entry_mask = EntryMask(module, {"w": torch.tensor([False, True])}).attach(opt)
    (-w.sum()).backward()
    opt.step()
    assert torch.signbit(w[0]) and w[0] == 0 and w[1] != 1.0
    assert entry_mask.frozen_changed() == 0


def test_an_inf_gradient_on_a_frozen_entry_neither_moves_it_nor_poisons_the_optimizer() -> None:
    module, w = _one_tensor_module([0.5, 1.0])
    opt = torch.optim.Adam([w], lr=0.1)
    entry_mask = EntryMask(module, {"w": torch.tensor([False, True])}).attach(opt)
    (w * torch.tensor([float("inf"), 1.0])).sum().backward()
    assert w.grad.tolist() == [0.0, 1.0]      # inf * 0 would be NaN
    opt.step()
    assert w[0].item() == 0.5 and torch.isfinite(opt.state[w]["exp_avg"]).all()
    assert entry_mask.frozen_changed() == 0


def test_a_run_whose_frozen_entries_moved_is_recorded_failed(run_cli, tmp_path: Path, monkeypatch, capsys) -> None:
    # The run's own audit, against a broken restore: weight decay then moves the frozen entries.
    monkeypatch.setattr(EntryMask, "restore_frozen", lambda self: None)
    assert run_cli("mask=random", "method.r=4", "train.weight_decay=0.1") == 1
    (rec,) = records(tmp_path / "runs")
    assert rec["status"] == "failed" and rec["frozen_changed"] > 0
    assert f"{rec['frozen_changed']} entries outside the mask changed during training" in rec["error"]
    assert "entries outside the mask changed during training" in capsys.readouterr().err
    assert (Path(rec["output_dir"]) / "traceback.txt").is_file()


@pytest.mark.parametrize("num_samples", [10, 100])   # below and above the 24 examples
def test_fisher_examples_is_the_number_of_distinct_examples_the_fisher_batches_hold(num_samples: int) -> None:
    from fishtune.selection import _fisher_batches

    g = torch.Generator().manual_seed(2)
    # example i starts with token i + 1: a batch row names its example
    ids = [[i + 1] + torch.randint(1, 50, (int(torch.randint(2, 10, (1,), generator=g)),), generator=g).tolist()
           for i in range(24)]
    data = Encoded(ids, None, torch.randint(0, 2, (24,), generator=g))
    cfg = OmegaConf.create({"strategy": "fish", "fisher_at": "init", "warmup_steps": 0, "fisher_batch_size": 4,
                            "num_samples": num_samples, "estimator": "auto", "labels": "empirical", "seed": 0,
                            "scope": "global"})
    rows = [int(first) for batch in _fisher_batches(data, cfg, seed=0, pad_id=0, device=torch.device("cpu"))
            for first in batch["input_ids"][:, 0]]
    assert len(rows) == len(set(rows)) == min(num_samples, len(data))
    model, lora = _tiny_lora()
    result = build_mask(model, lora, cfg, data, keep=10, lr=1e-2, seed=0, pad_id=0, device=torch.device("cpu"),
                        autocast=False)
    assert result.stats["fisher_examples"] == len(rows)
