"""The public API: FishMask in any loop, FishCallback in transformers' Trainer, and the README's snippets."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from conftest import GLUE, REPO, records
from fishtune.errors import ConfigError, DataError, FishtuneError
from fishtune.frozen import count_changed

# --- tiny models, built in-process ---------------------------------------------------------------


def _bert(vocab: int = 100, hidden: int = 32, layers: int = 2, heads: int = 2, ffn: int = 64, seed: int = 0):
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)
    return BertForSequenceClassification(BertConfig(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers,
                                                    num_attention_heads=heads, intermediate_size=ffn,
                                                    max_position_embeddings=64, num_labels=2))


def _lora(model, r: int = 4):
    from peft import LoraConfig, get_peft_model

    return get_peft_model(model, LoraConfig(task_type="SEQ_CLS", r=r, lora_alpha=2 * r, lora_dropout=0.1,
                                            target_modules=["query", "value"]))


def _batches(n: int = 24, batch: int = 4, vocab: int = 100, seed: int = 1) -> list[dict[str, torch.Tensor]]:
    """Dict batches as a DataCollatorWithPadding leaves them (right padding, attention mask, labels)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for s in range(0, n, batch):
        lengths = torch.randint(3, 12, (batch,), generator=g)
        ids = torch.zeros(batch, int(lengths.max()), dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, length in enumerate(lengths.tolist()):
            ids[i, :length] = torch.randint(1, vocab, (length,), generator=g)
            mask[i, :length] = 1
        out.append({"input_ids": ids, "attention_mask": mask, "labels": torch.randint(0, 2, (batch,), generator=g)})
    return out


def _train(model, optimizer, batches, steps: int = 6, clip: float = 0.5) -> None:
    """A plain loop: forward, backward, clipping, step (nothing of fishtune in it)."""
    model.train()
    for batch in (batches * steps)[:steps]:
        model(**batch).loss.backward()
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], clip)
        optimizer.step()
        optimizer.zero_grad()


def _snapshot(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def _frozen_changed(model, initial, mask) -> int:
    """Entries outside the mask (of the masked tensors) whose bits changed (fishtune's run audit)."""
    return count_changed(model, {n: initial[n] for n in mask}, mask)


def _moved(model, initial, mask) -> int:
    params = dict(model.named_parameters())
    return sum(int((params[n] != initial[n])[mask[n]].sum()) for n in mask)


def _mrpc_48():
    """48 real MRPC training pairs: the MiniLM tokenizer, the examples, their encoding and a `Dataset`."""
    from datasets import Dataset
    from transformers import AutoTokenizer

    from fishtune.data import load_split
    from fishtune.models import MINILM_PACKAGE, package_model_dir
    from fishtune.tasks import get_task

    tokenizer = AutoTokenizer.from_pretrained(str(package_model_dir(MINILM_PACKAGE)))
    examples = load_split(get_task("mrpc"), "train", source="local", data_dir=GLUE, max_samples=48, seed=0)
    encoded = tokenizer([e.text_a for e in examples], [e.text_b for e in examples], truncation=True, max_length=64)
    return tokenizer, examples, encoded, Dataset.from_dict({**encoded, "label": [e.label for e in examples]})


def _half_lora_mask(vocab: int) -> dict[str, torch.Tensor]:
    """A fixed mask keeping half of the LoRA r=8 entries of `_bert(vocab)` (seeded random scores)."""
    from fishtune.masking import select_mask

    scores = {n: torch.rand(p.shape, generator=torch.Generator().manual_seed(i))
              for i, (n, p) in enumerate(_lora(_bert(vocab=vocab), r=8).named_parameters()) if "lora_" in n}
    return select_mask(scores, keep=sum(s.numel() for s in scores.values()) // 2, strategy="fish")


# --- the hooks -----------------------------------------------------------------------------------


def test_hooks_mask_accumulated_grads_before_clipping_and_restore_after_each_step() -> None:
    from fishtune import FishMask
    from fishtune.masking import select_mask

    model = _lora(_bert())
    params = dict(model.named_parameters())
    lora = [n for n in params if "lora_" in n]
    with torch.no_grad():
        for n in lora:
            params[n].normal_()   # every entry gets gradient
    mask = FishMask(select_mask({n: torch.rand(params[n].shape) for n in lora}, keep=300, strategy="fish"), model=model)
    initial = _snapshot(model)
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=1e-2, weight_decay=0.1)
    mask.attach(opt)
    batches = _batches(8)

    # Two micro-batches (gradient accumulation): the accumulated gradient is masked, and the norm
    # clip_grad_norm_ returns is that of the masked gradients (dropout off: both passes alike). The
    # LoRA tensors only: the unmasked head's gradient would dwarf the difference.
    model.eval()
    for batch in batches:
        model(**batch).loss.backward()
    hooked = {n: params[n].grad.clone() for n in lora}
    norm = torch.nn.utils.clip_grad_norm_([params[n] for n in lora], 1e9)
    mask.detach()
    opt.zero_grad()
    for batch in batches:   # the same two micro-batches, unhooked
        model(**batch).loss.backward()

    def lora_norm(masked: bool) -> torch.Tensor:
        return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(
            params[n].grad * mask.mask[n] if masked else params[n].grad) for n in lora]))

    assert torch.allclose(norm, lora_norm(masked=True)) and norm < 0.9 * lora_norm(masked=False)
    for n in lora:
        assert torch.equal(hooked[n], params[n].grad * mask.mask[n]), n
    opt.zero_grad()

    mask.attach(opt)
    _train(model, opt, batches)
    counts = mask.verify(model)
    assert counts["frozen_changed"] == 0 and counts["selected"] == 300 == mask.selected
    assert count_changed(model, {n: initial[n] for n in lora}, mask.mask) == 0
    assert _moved(model, initial, mask.mask) > 250

    mask.detach()   # without the hooks, weight decay moves the frozen entries, and verify says so
    _train(model, opt, batches, steps=1)
    with pytest.raises(FishtuneError, match="frozen entries changed"):
        mask.verify(model)


# --- FishMask on PEFT, AdapterHub, full fine-tuning ----------------------------------------------


@pytest.mark.parametrize("config", ["SeqBnConfig", "ParBnConfig"])
def test_fishmask_on_an_adapterhub_model(config: str) -> None:
    import adapters
    from fishtune import FishMask

    from fishtune.methods._adapterhub import _quiet_activation

    model = _bert()
    adapters.init(model)
    with _quiet_activation():
        model.add_adapter("a", config=getattr(adapters, config)(reduction_factor=4), set_active=True)
        model.train_adapter("a")
        model.set_active_adapters("a")
    batches = _batches()
    mask = FishMask.from_fisher(model, batches, keep_ratio=0.25, num_samples=16, warmup_steps=3)
    assert all(".adapters." in n for n in mask.mask) and not any(n.startswith("classifier") for n in mask.mask)
    assert set(mask.families.values()) == {"adapter_down", "adapter_up"}
    # ParBn's up-projection starts at zero: its down-projection has zero Fisher at init, so warm-up.
    assert mask.info["fisher_at"] == ("warmup" if config == "ParBnConfig" else "init")
    assert bool(mask.pairs) == (config == "ParBnConfig")
    initial = _snapshot(model)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.1)
    mask.attach(opt)
    _train(model, opt, batches)
    assert mask.verify(model)["frozen_changed"] == 0
    assert _frozen_changed(model, initial, mask.mask) == 0 < _moved(model, initial, mask.mask)
    assert mask.stats["by_family"]["adapter_up"]["selected"] > 0


def test_fishmask_on_full_fine_tuning_and_the_save_load_round_trip(tmp_path: Path) -> None:
    from fishtune import FishMask

    model = _bert()
    batches = _batches()
    mask = FishMask.from_fisher(model, batches, keep=2_000, num_samples=16, strategy="fish")
    assert not any(n.startswith("classifier.") for n in mask.mask) and mask.selected == 2_000
    assert len(mask.mask) == len([n for n in dict(model.named_parameters()) if not n.startswith("classifier.")])
    assert mask.info["fisher_at"] == "init" and mask.stats["zero_score_selected"] == 0

    mask.save(tmp_path / "m.safetensors")
    loaded = FishMask.load(tmp_path / "m.safetensors")
    assert all(torch.equal(loaded.mask[n], mask.mask[n]) for n in mask.mask) and list(loaded.mask) == list(mask.mask)
    assert loaded.families == mask.families and loaded.info == mask.info
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)
    with pytest.raises(ConfigError, match="pass model="):
        loaded.attach(opt)
    initial = _snapshot(model)
    loaded.attach(opt, model)
    assert not all(p.requires_grad for p in model.parameters())   # tensors with nothing selected
    _train(model, opt, batches)
    assert loaded.verify(model) == {"selected": 2_000, "frozen": mask.total - 2_000, "frozen_changed": 0,
                                    "tensors": len(mask.mask)}
    assert _frozen_changed(model, initial, mask.mask) == 0 < _moved(model, initial, mask.mask)


def test_a_saved_mask_is_one_metadata_entry_and_format_1_files_still_load(tmp_path: Path) -> None:
    """safetensors writes its metadata map in a per-process random order: a mask keeps all of its
    metadata in one entry, so the same mask has the same bytes in every process."""
    from safetensors import safe_open

    from fishtune import FishMask

    mask = FishMask.from_fisher(_bert(), _batches(), keep=500, num_samples=8, strategy="fish")
    mask.save(tmp_path / "m.safetensors", timings=False)
    with safe_open(str(tmp_path / "m.safetensors"), framework="pt") as f:
        meta = f.metadata()
    assert list(meta) == ["fishtune.FishMask"]
    assert json.loads(meta["fishtune.FishMask"])["format"] == "fishtune.FishMask/2"
    assert "fisher_time_s" not in FishMask.load(tmp_path / "m.safetensors").info   # timings=False
    # format 1 (one JSON string per key), as committed under results/api
    old = FishMask.load(REPO / "results" / "api" / "trainer-callback-mrpc-seed2-fishtune-order-mask.safetensors")
    assert old.selected == 73_728 and old.total == 147_456
    assert set(old.families.values()) == {"lora_A", "lora_B"} and len(old.pairs) == 12
    assert old.info["fisher_at"] == "warmup"


def test_loss_fn_gives_the_same_fisher_as_labelled_batches() -> None:
    """The per-example loss contract: tuple batches and a loss_fn give the loop estimator's Fisher."""
    from fishtune import FishMask

    model = _bert()
    batches = _batches(12)
    tuples = [(b["input_ids"], b["attention_mask"], b["labels"]) for b in batches]

    def loss_fn(model, batch):
        ids, attention, labels = batch
        return F.cross_entropy(model(input_ids=ids, attention_mask=attention).logits, labels, reduction="none")

    by_labels = FishMask.from_fisher(model, batches, keep=500, num_samples=10, estimator="loop")
    by_loss = FishMask.from_fisher(model, tuples, keep=500, num_samples=10, loss_fn=loss_fn)
    for n in by_labels.scores:
        assert torch.allclose(by_labels.scores[n], by_loss.scores[n], rtol=1e-5, atol=1e-12), n
    assert all(torch.equal(by_labels.mask[n], by_loss.mask[n]) for n in by_labels.mask)


def test_a_given_fisher_skips_the_estimate_and_gives_the_same_masks() -> None:
    """One estimate, several masks: `fisher=` another mask's scores gives what a fresh estimate gives."""
    from fishtune import FishMask

    model = _lora(_bert())
    fish = FishMask.from_fisher(model, _batches(), keep=300, num_samples=16, warmup_steps=3)
    for strategy, keep in (("reverse", 300), ("fish", 120)):
        fresh = FishMask.from_fisher(model, _batches(), keep=keep, num_samples=16, warmup_steps=3, strategy=strategy)
        given = FishMask.from_fisher(model, None, keep=keep, strategy=strategy, fisher=fish.scores)
        assert all(torch.equal(fresh.mask[n], given.mask[n]) for n in fresh.mask)
        assert given.info["fisher_time_s"] == given.info["warmup_time_s"] == 0.0   # nothing estimated
    wrong = {n: s[:1] for n, s in fish.scores.items()}
    with pytest.raises(ConfigError, match="given Fisher of .* has shape"):
        FishMask.from_fisher(model, None, keep=10, fisher=wrong)
    with pytest.raises(ConfigError, match="does not cover the candidates"):
        FishMask.from_fisher(model, None, keep=10, fisher=dict(list(fish.scores.items())[1:]))


def test_wrong_inputs_give_one_clear_error() -> None:
    from fishtune import FishMask

    model = _lora(_bert())
    total = sum(p.numel() for n, p in model.named_parameters() if "lora_" in n)
    with pytest.raises(ConfigError, match=f"larger than the {total:,} candidate"):
        FishMask.from_fisher(model, _batches(), keep=total + 1)
    with pytest.raises(ConfigError, match="exactly one of keep"):
        FishMask.from_fisher(model, _batches())
    no_labels = [{k: v for k, v in b.items() if k != "labels"} for b in _batches()]
    with pytest.raises(DataError, match="no 'labels' entry.*loss_fn"):
        FishMask.from_fisher(model, no_labels, keep=10)   # LoRA: the warm-up meets it first
    with pytest.raises(DataError, match="no 'labels' entry.*loss_fn"):
        FishMask.from_fisher(model, no_labels, keep=10, fisher_at="init")
    frozen = _bert()
    frozen.requires_grad_(False)
    with pytest.raises(ConfigError, match="no trainable parameters"):
        FishMask.from_fisher(frozen, _batches(), keep=10)


@pytest.mark.parametrize("call, message", [
    pytest.param(lambda FishMask, model, tmp: FishMask.from_fisher(model, keep=10, strategy="random", live=True,
                                                                   scope="per_tensor"),
                 "live=True needs scope='global'", id="live-per-tensor"),
    pytest.param(lambda FishMask, model, tmp: FishMask.from_fisher(model, keep=10, strategy="random", warmup_steps=-1),
                 "warmup_steps must be an integer >= 0, got -1", id="warmup-steps"),
    pytest.param(lambda FishMask, model, tmp: FishMask.from_fisher(model, keep=10, strategy="random", num_samples=0),
                 "num_samples must be a positive integer, got 0", id="num-samples"),
    pytest.param(lambda FishMask, model, tmp: FishMask.from_fisher(model, keep_ratio=1e-6, strategy="random"),
                 "keep_ratio 1e-06 of .* candidate entries keeps none", id="keeps-none"),
    pytest.param(lambda FishMask, model, tmp: FishMask.load(tmp / "nothing.safetensors"),
                 "no mask file .*nothing.safetensors", id="load-missing"),
    pytest.param(lambda FishMask, model, tmp: FishMask.from_fisher(model, keep=10, strategy="random").verify(),
                 r"verify\(\) needs the model the mask is bound to", id="verify-unbound"),
    pytest.param(lambda FishMask, model, tmp: FishMask.from_fisher(model, keep=10, strategy="random").bind()
                 .verify(_lora(_bert())), r"verify\(\) needs the model the mask is bound to", id="verify-other-model"),
])
def test_fishmask_refuses_bad_arguments_with_a_config_error(call, message: str, tmp_path: Path) -> None:
    from fishtune import FishMask

    with pytest.raises(ConfigError, match=message):
        call(FishMask, _lora(_bert()), tmp_path)


@pytest.mark.parametrize("params, message", [
    (["base_model.model.nosuch.weight"], "params: unknown parameter 'base_model.model.nosuch.weight' .1 in all."),
    (["base_model.model.bert.embeddings.word_embeddings.weight"],
     "params: not trainable parameter 'base_model.model.bert.embeddings.word_embeddings.weight'"),
], ids=["unknown", "frozen"])
def test_candidates_params_must_name_trainable_parameters(params: list[str], message: str) -> None:
    from fishtune.candidates import candidates

    with pytest.raises(ConfigError, match=message):
        candidates(_lora(_bert()), params=params)


def test_a_mask_is_boolean_and_a_batch_holds_tensors_only(tmp_path: Path) -> None:
    """Scores or trained weights (a run's peft_final.safetensors has the mask's names and shapes) are
    no mask: they would be read as nearly dense masks."""
    from safetensors.torch import save_file

    from fishtune import FishMask

    model = _lora(_bert())
    names = [n for n, _ in model.named_parameters() if "lora_" in n]
    weights = {n: p.detach().clone() for n, p in model.named_parameters() if n in names}
    with pytest.raises(ConfigError, match="has values other than 0 and 1: a mask is boolean"):
        FishMask(weights)
    save_file({n: torch.full(w.shape, 2, dtype=torch.int8) for n, w in weights.items()}, tmp_path / "twos.safetensors")
    with pytest.raises(ConfigError, match="torch.int8. has values other than 0 and 1"):
        FishMask.load(tmp_path / "twos.safetensors")
    for dtype in (torch.int64, torch.float32):   # 0/1 numbers are a mask (the original FISH code's are float)
        halves = FishMask({n: (torch.arange(w.numel()) % 2).to(dtype).view(w.shape) for n, w in weights.items()})
        assert halves.selected == sum(w.numel() for w in weights.values()) // 2
    with_ids = [dict(b, idx=list(range(len(b["labels"])))) for b in _batches()]
    with pytest.raises(DataError, match="batch entry 'idx' is a list, not a tensor"):
        FishMask.from_fisher(model, with_ids, keep=10, fisher_at="init")


def test_the_warm_up_restores_buffers_and_reads_the_task_as_the_fisher_does() -> None:
    """A BatchNorm's running statistics are the model's state too; and a regression model (num_labels=1)
    with integer targets is regression for the warm-up as for the Fisher (was: cross-entropy, IndexError)."""
    from fishtune import FishMask

    class Net(torch.nn.Module):
        def __init__(self, outputs: int) -> None:
            super().__init__()
            self.config = type("Config", (), {"num_labels": outputs, "problem_type": None})()
            self.emb, self.bn = torch.nn.Embedding(100, 8), torch.nn.BatchNorm1d(8)
            self.a, self.b = torch.nn.Linear(8, 4, bias=False), torch.nn.Linear(4, outputs, bias=False)

        def forward(self, input_ids, attention_mask):
            h = (self.emb(input_ids) * attention_mask[..., None]).mean(1)
            return type("Out", (), {"logits": self.b(self.a(self.bn(h)))})()

    torch.manual_seed(0)
    net = Net(outputs=1)
    before = {n: b.clone() for n, b in net.state_dict().items()}
    regression = [dict(b, labels=torch.randint(0, 5, b["labels"].shape)) for b in _batches()]
    FishMask.from_fisher(net, regression, keep=10, params=["a.weight", "b.weight"], fisher_at="warmup",
                         warmup_steps=3, num_samples=8)
    assert all(torch.equal(before[n], b) for n, b in net.state_dict().items())

    class Growing(Net):   # a cache re-registered larger in forward (as lazily grown rotary caches are)
        def forward(self, input_ids, attention_mask):
            self.register_buffer("cache", torch.zeros(input_ids.shape[1]))
            return super().forward(input_ids, attention_mask)

    grown = Growing(outputs=1)
    grown.register_buffer("cache", torch.ones(2))
    kept = grown.cache
    FishMask.from_fisher(grown, regression, keep=10, params=["a.weight", "b.weight"], fisher_at="warmup",
                         warmup_steps=2, num_samples=8)
    assert grown.cache is kept and torch.equal(kept, torch.ones(2))
    with pytest.raises(DataError, match="classification needs integer class labels"):
        FishMask.from_fisher(Net(outputs=2), [dict(b, labels=b["labels"].float()) for b in _batches()], keep=10,
                             params=["a.weight", "b.weight"], fisher_at="warmup", warmup_steps=3)


def test_the_warm_up_and_the_fisher_leave_the_torch_rng_as_it_was() -> None:
    # the warm-up trains with dropout (it draws from the RNG); the caller's stream must not move
    from fishtune import FishMask

    model = _lora(_bert())   # LoRA's zero B: fisher_at="auto" warms up
    torch.manual_seed(123)
    before = torch.get_rng_state()
    mask = FishMask.from_fisher(model, _batches(), keep=100, num_samples=8, warmup_steps=3)
    assert mask.info["fisher_at"] == "warmup" and mask.info["warmup_steps"] == 3
    assert torch.equal(torch.get_rng_state(), before)


# --- binding: requires_grad, leftover gradients, the model changing, DDP ---------------------------


def test_attach_refuses_an_optimizer_of_another_model_and_verify_a_replaced_parameter() -> None:
    """The hooks sit on the tensors the mask is bound to: an optimizer over a copy would train with
    none of them, and a parameter replaced since binding (load_state_dict(assign=True)) is no longer
    the one whose frozen values were recorded. Both used to pass with `frozen_changed: 0`."""
    import copy

    from fishtune import FishMask

    model = _lora(_bert(), r=8)
    mask = FishMask(_half_lora_mask(100), model=model)
    with pytest.raises(ConfigError, match="the optimizer does not update .*partially masked tensors"):
        mask.attach(torch.optim.AdamW(copy.deepcopy(model).parameters()))
    mask.attach(torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], weight_decay=0.1))
    _train(model, torch.optim.AdamW([p for p in model.parameters() if p.requires_grad]), _batches(), steps=0)
    model.load_state_dict({n: t.clone() + 1 for n, t in model.state_dict().items()}, assign=True)
    with pytest.raises(ConfigError, match="was replaced by another tensor since the mask was bound"):
        mask.verify()


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_a_model_converted_after_attach_stops_at_the_next_step_before_any_write(dtype) -> None:
    """The stored frozen bits are of the old dtype: restoring them into the new one wrote NaNs and
    huge values into the frozen entries (fp32 -> bf16: 4.4e29), silently."""
    from fishtune import FishMask

    model = _lora(_bert(), r=8)
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    FishMask(_half_lora_mask(100), model=model).attach(optimizer)
    model.to(dtype)
    batch = dict(_batches()[0])
    with pytest.raises(ConfigError, match=f"is {dtype} on cpu now, torch.float32 on cpu when the mask was bound"):
        model(**batch).loss.backward()
        optimizer.step()


def _requires_grad(model) -> dict[str, bool]:
    return {n: p.requires_grad for n, p in model.named_parameters()}


def test_detach_gives_requires_grad_back_so_a_second_mask_sees_every_candidate() -> None:
    """Binding switches requires_grad off where nothing is selected; detach (and a rebind) undoes
    it, so a second mask on the model, `fisher=` reuse and another binding all see every candidate."""
    from fishtune import FishMask
    from fishtune.masking import select_mask

    model = _bert()   # full fine-tuning: with keep=200 most tensors have nothing selected
    flags = _requires_grad(model)
    first = FishMask.from_fisher(model, _batches(), keep=200, num_samples=8)
    first.bind(model).bind(model)   # a rebind undoes the first binding before making its own
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    first.attach(opt)
    assert sum(not p.requires_grad for p in model.parameters()) > 20
    params = dict(model.named_parameters())
    other = FishMask(select_mask({n: torch.rand(params[n].shape) for n in first.mask}, keep=5_000,
                                 strategy="fish"), model=model)
    with pytest.raises(ConfigError, match="does not require grad.*detach"):
        other.attach(opt)   # the first mask still holds those tensors; nothing was changed
    assert first.attached and not all(_requires_grad(model).values())
    first.detach()
    assert _requires_grad(model) == flags
    again = FishMask.from_fisher(model, _batches(), keep=200, num_samples=8)
    assert list(again.mask) == list(first.mask) and again.total == first.total
    FishMask.from_fisher(model, None, keep=200, strategy="reverse", fisher=first.scores)
    other.attach(opt)
    _train(model, opt, _batches(), steps=2)
    assert other.verify(model)["frozen_changed"] == 0
    other.detach()
    assert _requires_grad(model) == flags


def test_a_leftover_gradient_is_not_applied_to_frozen_entries() -> None:
    """A gradient from before binding (a sanity-check backward, accumulation) is dropped where
    nothing is selected and masked elsewhere, so the next step cannot move a frozen entry."""
    from fishtune import FishMask

    model = _bert()
    model(**_batches()[0]).loss.backward()
    mask = FishMask.from_fisher(model, keep=200, strategy="random")
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    mask.attach(opt)
    params = dict(model.named_parameters())
    assert all(params[n].grad is None for n, m in mask.mask.items() if not m.any())
    assert all(not params[n].grad[~m].any() for n, m in mask.mask.items() if m.any())
    opt.step()
    assert mask.verify(model)["frozen_changed"] == 0


def test_attach_holds_the_values_the_model_has_when_attached(tmp_path: Path) -> None:
    """A mask loaded for a model (or bound to it) and then attached after the model was loaded or
    converted in place holds the frozen entries at the new values; converting after attaching is
    reported, not audited wrongly."""
    from fishtune import FishMask

    model = _lora(_bert())
    FishMask.from_fisher(model, keep_ratio=0.5, strategy="random").save(tmp_path / "m.safetensors")
    mask = FishMask.load(tmp_path / "m.safetensors", model)
    mask.bind(model)
    g = torch.Generator().manual_seed(5)
    state = {n: torch.randn(p.shape, generator=g) for n, p in model.named_parameters() if "lora_" in n}
    model.load_state_dict(state, strict=False)   # in place: the same Parameter objects
    batches = _batches(8)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.1)
    mask.attach(opt)
    _train(model, opt, batches, steps=3)
    assert _frozen_changed(model, state, mask.mask) == 0 < _moved(model, state, mask.mask)
    assert mask.verify(model)["frozen_changed"] == 0

    mask.detach()
    model.to(torch.float64)
    values = _snapshot(model)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.1)
    mask.attach(opt)
    _train(model, opt, batches, steps=2)
    assert mask.verify(model)["frozen_changed"] == 0 == _frozen_changed(model, values, mask.mask)
    model.to(torch.float32)
    with pytest.raises(ConfigError, match="float32 on cpu now, torch.float64.*before attaching"):
        mask.verify(model)
    with pytest.raises(ConfigError, match="names parameters the model does not have"):
        FishMask.load(tmp_path / "m.safetensors", _bert())


def test_ddp_without_find_unused_parameters(tmp_path: Path) -> None:
    """DistributedDataParallel (gloo, one process) wrapped before the mask is attached, as
    transformers' Trainer does, with find_unused_parameters=False: the tensors with nothing
    selected keep requiring grad (DDP expects their gradients) and are held in place."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from fishtune import FishMask

    dist.init_process_group("gloo", store=dist.FileStore(str(tmp_path / "store"), 1), rank=0, world_size=1)
    try:
        model = _bert()
        mask = FishMask.from_fisher(model, keep=200, strategy="random")
        initial = _snapshot(model)
        ddp = DistributedDataParallel(model, find_unused_parameters=False)
        opt = torch.optim.AdamW(ddp.parameters(), lr=1e-2, weight_decay=0.1)
        mask.attach(opt, model)
        _train(ddp, opt, _batches(), steps=3)   # DDP's reducer fails at the second step if a tensor left training
        assert all(p.requires_grad for p in model.parameters())
        assert mask.verify(model)["frozen_changed"] == 0
        assert _frozen_changed(model, initial, mask.mask) == 0 < _moved(model, initial, mask.mask)
        mask.detach()
    finally:
        dist.destroy_process_group()


def _with_one_tensor_unselected(model) -> tuple[dict[str, torch.Tensor], str]:
    """A mask of `model`'s LoRA tensors keeping every other entry, with nothing selected in the
    first tensor; and that tensor's name."""
    mask = {n: (torch.arange(p.numel()) % 2 == 0).view(p.shape) for n, p in model.named_parameters() if "lora_" in n}
    empty = next(iter(mask))
    return {**mask, empty: torch.zeros_like(mask[empty])}, empty


def _nudge(param: torch.Tensor) -> None:
    """Move one entry by one ulp, outside any optimizer."""
    with torch.no_grad():
        param.view(-1)[0] = torch.nextafter(param.view(-1)[0], torch.tensor(float("inf")))


def test_verify_sees_a_write_to_a_tensor_with_nothing_selected() -> None:
    # snapshot=True (bind's default) keeps a CPU copy of such a tensor; a write to it is caught
    from fishtune import FishMask

    model = _lora(_bert(), r=8)
    entries, empty = _with_one_tensor_unselected(model)
    mask = FishMask(entries, model=model).bind(model)
    param = dict(model.named_parameters())[empty]
    assert not param.requires_grad and mask.verify(model)["frozen_changed"] == 0
    _nudge(param)
    with pytest.raises(FishtuneError, match="^1 of .* frozen entries changed"):
        mask.verify(model)


def test_verify_sees_a_write_to_a_held_tensor_under_torch_distributed(tmp_path: Path) -> None:
    # under torch.distributed such a tensor is held (still requires grad): its copy is what verify compares
    import torch.distributed as dist

    from fishtune import FishMask

    dist.init_process_group("gloo", store=dist.FileStore(str(tmp_path / "store"), 1), rank=0, world_size=1)
    try:
        model = _lora(_bert(), r=8)
        entries, empty = _with_one_tensor_unselected(model)
        mask = FishMask(entries, model=model).bind(model, snapshot=False)
        param = dict(model.named_parameters())[empty]
        assert param.requires_grad and mask.verify(model)["frozen_changed"] == 0
        _nudge(param)
        with pytest.raises(FishtuneError, match="^1 of .* frozen entries changed"):
            mask.verify(model)
        mask.detach()
    finally:
        dist.destroy_process_group()


def test_trainer_train_twice_keeps_the_mask_of_the_first_call(tmp_path: Path) -> None:
    """A second `trainer.train()` (not a resume) keeps the callback's mask over every candidate,
    and leaves the saved file and the model's requires_grad flags as they were."""
    from datasets import Dataset
    from transformers import Trainer, TrainingArguments

    from fishtune import FishCallback

    g = torch.Generator().manual_seed(0)
    dataset = Dataset.from_dict({"input_ids": torch.randint(1, 100, (16, 10), generator=g).tolist(),
                                 "attention_mask": [[1] * 10] * 16,
                                 "labels": torch.randint(0, 2, (16,), generator=g).tolist()})
    model = _bert()
    flags = _requires_grad(model)
    args = TrainingArguments(output_dir=str(tmp_path), per_device_train_batch_size=4, max_steps=2, learning_rate=1e-3,
                             report_to=[], use_cpu=True, save_strategy="no", disable_tqdm=True)
    callback = FishCallback(keep_ratio=0.01, num_samples=8)
    trainer = Trainer(model=model, args=args, train_dataset=dataset, callbacks=[callback],
                      data_collator=lambda rows: {k: torch.tensor([r[k] for r in rows]) for k in rows[0]})
    trainer.train()
    first, saved = callback.mask, (tmp_path / "fish_mask.safetensors").read_bytes()
    assert _requires_grad(model) == flags
    trainer.train()
    assert callback.mask is first and first.total == sum(p.numel() for n, p in model.named_parameters()
                                                         if not n.startswith("classifier."))
    assert (tmp_path / "fish_mask.safetensors").read_bytes() == saved
    assert callback.audit["frozen_changed"] == 0 and _requires_grad(model) == flags


# --- inputs ----------------------------------------------------------------------------------------


def test_numpy_and_tensor_numbers_and_a_single_parameter_name() -> None:
    import numpy as np

    from fishtune import FishMask
    from fishtune.live import select_live
    from fishtune.masking import select_mask

    model = _lora(_bert())
    lora = [n for n, _ in model.named_parameters() if "lora_" in n]
    total = sum(p.numel() for n, p in model.named_parameters() if n in lora)
    for keep, keep_ratio, k in ((np.int64(512), None, 512), (torch.tensor(100), None, 100),
                                (None, np.float32(0.5), total // 2), (None, torch.tensor(0.25), total // 4)):
        mask = FishMask.from_fisher(model, keep=keep, keep_ratio=keep_ratio, strategy="random",
                                    warmup_steps=np.int64(3), num_samples=np.int32(8))
        assert mask.selected == k and type(mask.info["keep"]) is int
    for keep in (True, np.True_, torch.tensor(True), 2.0, torch.tensor(3.0)):
        with pytest.raises(ConfigError, match="keep must be a positive integer"):
            FishMask.from_fisher(model, keep=keep, strategy="random")
    with pytest.raises(ConfigError, match="keep_ratio must be in"):
        FishMask.from_fisher(model, keep_ratio=True, strategy="random")
    scores = {n: torch.rand(p.shape) for n, p in model.named_parameters() if n in lora}
    assert sum(int(m.sum()) for m in select_mask(scores, keep=np.int64(7), strategy="fish").values()) == 7
    assert sum(int(m.sum()) for m in select_live(scores, keep=np.int64(7), strategy="fish", seed=0, pairs=[],
                                                 initial=scores).values()) == 7

    one = FishMask.from_fisher(model, keep=10, strategy="random", params=lora[0])   # one name, not its letters
    assert list(one.mask) == [lora[0]]


def test_partial_families_override_the_detected_ones() -> None:
    from fishtune import FishMask

    model = _lora(_bert())
    lora = [n for n, _ in model.named_parameters() if "lora_" in n]
    mask = FishMask.from_fisher(model, keep=10, strategy="random", families={lora[0]: "mine"})
    assert mask.families[lora[0]] == "mine" and mask.families[lora[1]] == "lora_B"
    assert mask.stats["by_family"]["mine"]["total"] == mask.mask[lora[0]].numel()
    with pytest.raises(ConfigError, match="no family for"):
        FishMask(mask.mask, families={lora[0]: "mine"}).stats


# --- the same mask as `fishtune run` --------------------------------------------------------------


def test_fishmask_equals_the_mask_fishtune_run_builds(run_cli, tmp_path: Path) -> None:
    """A tiny-bert LoRA run's mask.safetensors == FishMask.from_fisher on the same model and batches,
    with the candidates, families, pairs and the warm-up found by the API itself (no method config)."""
    from fishtune import FishMask
    from fishtune.batching import encode
    from fishtune.methods import apply_method
    from fishtune.models import load_model, uses_token_type_ids
    from fishtune.runner import _load_data
    from fishtune.selection import _fisher_batches, _warmup_batches
    from fishtune.tasks import get_task

    assert run_cli("mask=fish", "method.r=16", "mask.num_samples=16", "mask.warmup_steps=3",
                   "train.max_train_samples=32", "train.max_eval_samples=8") == 0
    (rec,) = records(tmp_path / "runs")
    folder = Path(rec["output_dir"])
    cfg = OmegaConf.load(folder / "config.yaml")
    task = get_task(cfg.task.name)
    train_ex, _ = _load_data(cfg, task)
    loaded = load_model(cfg.model, task, seed=cfg.seed)    # the run's model, LoRA init and all
    setup = apply_method(loaded.model, cfg.method)
    model, cpu, pad = setup.model, torch.device("cpu"), loaded.tokenizer.pad_token_id
    data = encode(train_ex, tokenizer=loaded.tokenizer, max_length=cfg.train.max_seq_length,
                  token_type_ids=uses_token_type_ids(model), regression=task.is_regression)
    mask = FishMask.from_fisher(
        model, _fisher_batches(data, cfg.mask, seed=cfg.seed, pad_id=pad, device=cpu),
        keep=rec["trainable"]["peft_selected"], num_samples=cfg.mask.num_samples, seed=cfg.mask.seed,
        warmup_steps=cfg.mask.warmup_steps, warmup_lr=cfg.train.lr,
        warmup_batches=_warmup_batches(data, batch_size=cfg.mask.fisher_batch_size, seed=cfg.seed, pad_id=pad,
                                       device=cpu))
    assert mask.info["fisher_at"] == "warmup"   # found by itself: LoRA's B starts at zero
    assert mask.families == setup.candidates and mask.pairs == setup.factor_pairs
    saved = FishMask.load(folder / "mask.safetensors", model)
    assert list(saved.mask) == list(mask.mask)
    assert all(torch.equal(saved.mask[n], mask.mask[n]) for n in mask.mask)
    # the run's file carries the mask's families, pairs and info, but no timings (they are in the record)
    assert saved.families == mask.families and saved.pairs == mask.pairs
    timeless = {k: v for k, v in mask.info.items() if not k.endswith("_time_s")}
    assert saved.info == timeless and timeless["fisher_at"] == "warmup"


# --- the README's two snippets --------------------------------------------------------------------


def _readme_blocks() -> list[str]:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text.split("## Use FISH in your own code", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


@pytest.mark.slow  # an 18-layer model through warm-up, Fisher and training (~8 s)
def test_readme_own_loop_snippet_runs(tmp_path: Path, monkeypatch) -> None:
    """The first block, verbatim but for its `...` line, which becomes a real training loop."""
    (block, _) = _readme_blocks()
    loop_line = [line for line in block.splitlines() if line.startswith("...")]
    assert len(loop_line) == 1
    code = block.replace(loop_line[0], "_user_loop(model, optimizer, train_dataloader)")
    # As many LoRA r=16 candidates as MiniLM's (147,456: keep=73_728 is half), on 18 layers of
    # hidden size 128 with a tiny vocabulary and FFN.
    model = _lora(_bert(hidden=128, layers=18, heads=2, ffn=32), r=16)
    initial = _snapshot(model)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.1)
    train_dataloader = torch.utils.data.DataLoader(_batches(16), batch_size=None)
    monkeypatch.chdir(tmp_path)
    scope = {"model": model, "optimizer": optimizer, "train_dataloader": train_dataloader,
             "_user_loop": lambda m, o, d: _train(m, o, list(d), steps=4)}
    exec(compile(code, "README.md", "exec"), scope)
    mask = scope["mask"]
    assert mask.selected == 73_728 and mask.total == 147_456 and mask.info["fisher_at"] == "warmup"
    assert (tmp_path / "mask.safetensors").is_file()
    assert _frozen_changed(model, initial, mask.mask) == 0 < _moved(model, initial, mask.mask)


@pytest.mark.slow  # two transformers Trainer runs on MiniLM (~4 s)
def test_readme_trainer_snippet_keeps_frozen_entries_bit_identical(tmp_path: Path) -> None:
    """The second block with transformers' Trainer + PEFT LoRA, AdamW with weight decay, gradient
    accumulation 2 and clipping: every frozen entry is bit-identical afterwards."""
    from datasets import Dataset
    from transformers import AutoTokenizer, DataCollatorWithPadding, TrainingArguments

    from fishtune.data import load_split
    from fishtune.models import MINILM_PACKAGE, package_model_dir
    from fishtune.tasks import get_task

    (_, block) = _readme_blocks()
    tokenizer = AutoTokenizer.from_pretrained(str(package_model_dir(MINILM_PACKAGE)))
    examples = load_split(get_task("mrpc"), "train", source="local", data_dir=GLUE, max_samples=24, seed=0)
    encoded = tokenizer([e.text_a for e in examples], [e.text_b for e in examples], truncation=True, max_length=64)
    train_dataset = Dataset.from_dict({**encoded, "label": [e.label for e in examples]})
    model = _lora(_bert(vocab=tokenizer.vocab_size), r=8)
    args = TrainingArguments(output_dir=str(tmp_path / "out"), per_device_train_batch_size=4,
                             gradient_accumulation_steps=2, max_steps=3, learning_rate=1e-2, weight_decay=0.1,
                             max_grad_norm=0.5, report_to=[], use_cpu=True, save_strategy="no", seed=1,
                             disable_tqdm=True, logging_steps=1)
    initial = _snapshot(model)
    scope = {"model": model, "args": args, "train_dataset": train_dataset,
             "collator": DataCollatorWithPadding(tokenizer)}
    exec(compile(block, "README.md", "exec"), scope)

    from fishtune import FishCallback

    (callback,) = [c for c in scope["trainer"].callback_handler.callbacks if isinstance(c, FishCallback)]
    mask = callback.mask.mask
    assert callback.audit["frozen_changed"] == 0 and callback.mask.info["fisher_at"] == "warmup"
    assert set(callback.mask.families.values()) == {"lora_A", "lora_B"}
    assert all("lora_" in n for n in mask) and callback.mask.selected == callback.mask.total // 2
    assert _frozen_changed(model, initial, mask) == 0 < _moved(model, initial, mask)
    head = [n for n in initial if "modules_to_save" in n and "classifier" in n]
    assert head and all(not torch.equal(dict(model.named_parameters())[n], initial[n]) for n in head)  # trained
    assert (tmp_path / "out" / "fish_mask.safetensors").is_file()
    assert not callback.mask.attached


def test_trainer_resume_reuses_the_saved_mask(tmp_path: Path) -> None:
    """Resuming from a Trainer checkpoint reloads <output_dir>/fish_mask.safetensors (no new Fisher)
    and ends bit-identical to the uninterrupted run."""
    from datasets import Dataset
    from transformers import AutoTokenizer, DataCollatorWithPadding, Trainer, TrainingArguments

    from fishtune import FishCallback
    from fishtune.data import load_split
    from fishtune.models import MINILM_PACKAGE, package_model_dir
    from fishtune.tasks import get_task

    tokenizer = AutoTokenizer.from_pretrained(str(package_model_dir(MINILM_PACKAGE)))
    examples = load_split(get_task("mrpc"), "train", source="local", data_dir=GLUE, max_samples=24, seed=0)
    encoded = tokenizer([e.text_a for e in examples], [e.text_b for e in examples], truncation=True, max_length=64)
    dataset = Dataset.from_dict({**encoded, "label": [e.label for e in examples]})

    def train(resume: str | None) -> tuple[FishCallback, dict[str, torch.Tensor]]:
        model = _lora(_bert(vocab=tokenizer.vocab_size), r=4)
        args = TrainingArguments(output_dir=str(tmp_path), per_device_train_batch_size=4, max_steps=4,
                                 learning_rate=1e-2, weight_decay=0.1, report_to=[], use_cpu=True,
                                 save_strategy="steps", save_steps=2, seed=1, disable_tqdm=True)
        callback = FishCallback(keep_ratio=0.5, num_samples=8, warmup_steps=2)
        Trainer(model=model, args=args, train_dataset=dataset, data_collator=DataCollatorWithPadding(tokenizer),
                callbacks=[callback]).train(resume_from_checkpoint=resume)
        return callback, _snapshot(model)

    first, uninterrupted = train(None)
    again, resumed = train(str(tmp_path / "checkpoint-2"))
    assert again.mask.scores is None is not first.mask.scores   # loaded, not recomputed
    assert again.audit["frozen_changed"] == 0 and again.mask.info == first.mask.info
    assert all(torch.equal(first.mask.mask[n], again.mask.mask[n]) for n in first.mask.mask)
    assert all(torch.equal(uninterrupted[n], resumed[n]) for n in uninterrupted)


def test_trainer_with_fishcallback_equals_a_reference_masking_callback(tmp_path: Path) -> None:
    """Inside transformers' Trainer, `FishCallback(mask=...)` trains exactly as the plainest masking
    one could write (zero the frozen gradients before the step, put the frozen entries back after
    it): bit-identical parameters after two epochs of length-grouped batches with dropout. Clipping
    is off, because the two differ there by design (the hooks mask before the Trainer's clipping)."""
    from transformers import DataCollatorWithPadding, Trainer, TrainerCallback, TrainingArguments

    from fishtune import FishCallback, FishMask

    tokenizer, _, _, dataset = _mrpc_48()

    class Reference(TrainerCallback):
        def __init__(self, mask):
            self.mask = mask

        def on_train_begin(self, args, state, control, model=None, **kwargs):
            self.params = dict(model.named_parameters())
            self.start = {n: self.params[n].detach().clone() for n in self.mask}

        def on_pre_optimizer_step(self, args, state, control, **kwargs):
            for n, m in self.mask.items():
                self.params[n].grad.mul_(m)

        def on_optimizer_step(self, args, state, control, **kwargs):
            with torch.no_grad():
                for n, m in self.mask.items():
                    self.params[n].copy_(torch.where(m, self.params[n], self.start[n]))

    mask = _half_lora_mask(tokenizer.vocab_size)

    def train(callback) -> dict[str, torch.Tensor]:
        model = _lora(_bert(vocab=tokenizer.vocab_size), r=8)
        args = TrainingArguments(output_dir=str(tmp_path), per_device_train_batch_size=8, num_train_epochs=2,
                                 learning_rate=1e-2, weight_decay=0.1, max_grad_norm=None, group_by_length=True,
                                 report_to=[], use_cpu=True, save_strategy="no", seed=1, disable_tqdm=True)
        Trainer(model=model, args=args, train_dataset=dataset, data_collator=DataCollatorWithPadding(tokenizer),
                callbacks=[callback]).train()
        return _snapshot(model)

    initial = _snapshot(_lora(_bert(vocab=tokenizer.vocab_size), r=8))
    ours, reference = train(FishCallback(mask=FishMask(mask), save=False)), train(Reference(mask))
    assert all(torch.equal(ours[n], reference[n]) for n in ours)
    moved = sum(int((ours[n] != initial[n])[mask[n]].sum()) for n in mask)
    assert moved > 0.9 * sum(int(m.sum()) for m in mask.values())   # the selected entries did train


def test_trainer_on_fishtune_batches_trains_exactly_as_fishtune(tmp_path: Path) -> None:
    """transformers' Trainer with fishtune's batches and schedule (`fishtune.trainer_batches`) and
    `FishCallback(mask=...)` gives the weights of fishtune's own `Trainer.fit` with the same mask, bit
    for bit: two epochs of length-grouped MRPC batches, dropout on, clipping at 1.0. So the two loops
    are one masked training, and a score gap between them is the batch order or the mask's draw."""
    from transformers import DataCollatorWithPadding, Trainer, TrainingArguments

    from fishtune import FishCallback, FishMask
    from fishtune.batching import encode
    from fishtune.train import Trainer as FishtuneTrainer
    from fishtune.trainer_batches import fishtune_batches_trainer

    tokenizer, examples, encoded, dataset = _mrpc_48()
    data = encode(examples, tokenizer, max_length=64, token_type_ids=True, regression=False)
    mask = _half_lora_mask(tokenizer.vocab_size)
    seed, batch_size, epochs, lr = 1, 8, 2, 1e-2

    model = _lora(_bert(vocab=tokenizer.vocab_size), r=8)
    cfg = OmegaConf.create(dict(epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=0.0, warmup_ratio=0.06,
                                grad_clip=1.0, max_steps=None, group_by_length=True, pad_to_multiple_of=8,
                                log_every=20, checkpoint_every=None, progress=False))
    FishtuneTrainer(model, cfg, device=torch.device("cpu"), autocast=False, seed=seed, pad_id=tokenizer.pad_token_id,
                    evaluate=lambda: {"score": 0.0},
                    entry_mask=FishMask(mask).bind(model, snapshot=False)).fit(data, resume=False)
    ours = _snapshot(model)

    model = _lora(_bert(vocab=tokenizer.vocab_size), r=8)
    args = TrainingArguments(output_dir=str(tmp_path), per_device_train_batch_size=batch_size, num_train_epochs=epochs,
                             learning_rate=lr, weight_decay=0.0, warmup_ratio=0.06, max_grad_norm=1.0,
                             optim="adamw_torch",
                             report_to=[], use_cpu=True, save_strategy="no", seed=seed, disable_tqdm=True)
    trainer_cls = fishtune_batches_trainer(Trainer, [len(ids) for ids in encoded["input_ids"]],
                                           batch_size=batch_size, seed=seed)
    collator = DataCollatorWithPadding(tokenizer, pad_to_multiple_of=8)
    trainer_cls(model=model, args=args, train_dataset=dataset, data_collator=collator,
                callbacks=[FishCallback(mask=FishMask(mask), save=False)]).train()
    theirs = _snapshot(model)

    initial = _snapshot(_lora(_bert(vocab=tokenizer.vocab_size), r=8))
    assert all(torch.equal(ours[n], theirs[n]) for n in ours)
    selected = sum(int(m.sum()) for m in mask.values())
    assert sum(int((ours[n] != initial[n])[mask[n]].sum()) for n in mask) > 0.9 * selected
    assert _frozen_changed(model, initial, mask) == 0


RANK0_MASK = """
import sys, torch, torch.distributed as dist
from fishtune import FishMask
from fishtune.callback import rank0_mask
rank = int(sys.argv[2])
dist.init_process_group("gloo", store=dist.FileStore(sys.argv[1], 2), rank=rank, world_size=2)
model = torch.nn.Linear(4, 3)
own = {"weight": torch.arange(12).reshape(3, 4) % (2 + rank) == 0, "bias": torch.tensor([True, rank == 1, False])}
mask = rank0_mask(FishMask(own, model=model), model)
print(mask.mask["weight"].flatten().int().tolist(), mask.mask["bias"].int().tolist(), flush=True)
dist.destroy_process_group()
"""


@pytest.mark.slow  # two real processes (each imports torch and fishtune)
def test_every_rank_trains_with_rank_0s_mask(tmp_path: Path) -> None:
    # masks computed apart can differ on a near-tie (a non-deterministic kernel); DDP replicas with
    # different masks would drift apart, so the callback gives every rank rank 0's
    import subprocess
    import sys

    procs = [subprocess.Popen([sys.executable, "-c", RANK0_MASK, str(tmp_path / "store"), str(rank)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for rank in (0, 1)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    rank0 = [int(i % 2 == 0) for i in range(12)], [1, 0, 0]
    assert [o[0].strip() for o in outs] == [f"{rank0[0]} {rank0[1]}"] * 2
    assert "rank 1's own mask differed from rank 0's in 7 entries" in outs[1][1]


def test_lora_on_an_embedding_is_a_zero_factor_pair() -> None:
    # PEFT starts an embedding's lora_embedding_A at zero (a Linear's lora_B): B's Fisher is 0 there
    from peft import LoraConfig, get_peft_model

    from fishtune import FishMask
    from fishtune.candidates import candidates, structure, zero_factor

    model = get_peft_model(_bert(), LoraConfig(task_type="SEQ_CLS", r=4, target_modules=["word_embeddings", "query"]))
    prefix = "base_model.model.bert.embeddings.word_embeddings"
    a, b = f"{prefix}.lora_embedding_A.default", f"{prefix}.lora_embedding_B.default"
    families, pairs = structure(model, candidates(model))
    assert (families[a], families[b]) == ("lora_embedding_A", "lora_embedding_B")
    (pair,) = [p for p in pairs if p.up == a]
    assert pair.down == b and zero_factor(dict(model.named_parameters()), [pair])
    live = FishMask.from_fisher(model, _batches(), keep=100, fisher_at="init", live=True)
    assert not live.mask[b].any() and live.selected == 100   # the budget goes to entries that can move


def test_a_failed_attach_leaves_the_model_unbound_and_a_bound_model_is_refused_a_second_mask() -> None:
    """A mask still bound has switched requires_grad off where it selects nothing: a second
    `from_fisher` on that model took fewer candidates (256 of 1024) and said nothing."""
    import copy

    from fishtune import FishMask

    model = _lora(_bert(), r=8)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    first = FishMask.from_fisher(model, _batches(), keep=10, fisher_at="init", num_samples=8)
    with pytest.raises(ConfigError, match="the optimizer does not update"):
        first.attach(torch.optim.AdamW(copy.deepcopy(model).parameters()))
    assert [n for n, p in model.named_parameters() if p.requires_grad] == trainable and not first.attached
    again = FishMask.from_fisher(model, _batches(), keep=10, fisher_at="init", num_samples=8)
    assert again.total == first.total

    first.attach(torch.optim.AdamW([p for p in model.parameters() if p.requires_grad]))
    with pytest.raises(ConfigError, match="a FishMask is still bound to this model: .*detach\\(\\) that mask"):
        FishMask.from_fisher(model, _batches(), keep=10, fisher_at="init", num_samples=8)
    first.detach()
    assert FishMask.from_fisher(model, _batches(), keep=10, fisher_at="init", num_samples=8).total == first.total


def test_the_api_refuses_a_wrong_model_a_foreign_file_and_an_ignored_budget_in_one_line(tmp_path: Path) -> None:
    from fishtune import FishCallback, FishMask

    model = _lora(_bert(), r=4)
    for wrong in (None, "bert-base-uncased", _batches()):
        with pytest.raises(ConfigError, match="takes the model \\(a torch nn.Module\\) first"):
            FishMask.from_fisher(wrong, model, keep=10)
    foreign = tmp_path / "notes.safetensors"
    foreign.write_text("not a mask at all")
    with pytest.raises(ConfigError, match="is not a readable mask file"):
        FishMask.load(foreign)
    for kwargs, words in (({"keep": 0}, "keep must be a positive integer"), ({"keep_ratio": 2}, "keep_ratio must be"),
                          ({}, "exactly one of keep"), ({"keep": 5, "mask": FishMask({})}, "would be ignored")):
        with pytest.raises(ConfigError, match=f"FishCallback: .*{words}"):
            FishCallback(**kwargs)


def test_a_mask_from_another_masks_fisher_records_how_that_estimate_was_made() -> None:
    from fishtune import FishMask

    model = _lora(_bert(), r=4)
    fish = FishMask.from_fisher(model, _batches(), keep=50, fisher_at="init", num_samples=8, labels="expected")
    reverse = FishMask.from_fisher(model, keep=50, strategy="reverse", fisher=fish)   # not this call's defaults
    assert {k: reverse.info[k] for k in ("num_samples", "labels", "fisher_at")} == \
        {"num_samples": 8, "labels": "expected", "fisher_at": "init"}
    assert torch.equal(torch.cat([m.flatten() for m in reverse.mask.values()]),
                       torch.cat([m.flatten() for m in FishMask.from_fisher(
                           model, keep=50, strategy="reverse", fisher=fish.scores).mask.values()]))
    with pytest.raises(ConfigError, match="holds no Fisher scores"):
        FishMask.from_fisher(model, keep=50, fisher=FishMask.from_fisher(model, keep=50, strategy="random"))
