"""The empirical Fisher estimators agree with each other and with autograd done by hand.

Tiny fixed-seed models only (built from configs, nothing from the Hub): 2-layer BERT/RoBERTa with
32 hidden units and 4 heads, bare, with PEFT LoRA/DoRA or with AdapterHub adapters, and hand-made
toy models whose per-example gradients are checked here or that trip the estimators' checks.
"""

from __future__ import annotations

import logging

import adapters
import peft
import pytest
import torch
import torch.nn.functional as F
import transformers
from torch import Tensor, nn

from fishtune.errors import ConfigError, FishtuneError
from fishtune.fisher import empirical_fisher
from fishtune.fisher_hooks import hook_modules
from fishtune.masking import select_mask

SEQ_LEN = 12
BATCH = 4


_TINY = dict(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
             max_position_embeddings=64)


def tiny_bert(num_labels: int = 2, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return transformers.BertForSequenceClassification(transformers.BertConfig(**_TINY, num_labels=num_labels))


def tiny_roberta(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    config = transformers.RobertaConfig(**_TINY, type_vocab_size=1, pad_token_id=1, num_labels=2)
    return transformers.RobertaForSequenceClassification(config)


def tiny_lora(randomise_b: bool = True, seed: int = 0) -> nn.Module:
    """PEFT LoRA on query/value; B drawn at random so that A gets a nonzero Fisher."""
    config = peft.LoraConfig(
        task_type="SEQ_CLS", r=4, lora_alpha=8, target_modules=["query", "value"], lora_dropout=0.1
    )
    model = peft.get_peft_model(tiny_bert(seed=seed), config)
    if randomise_b:
        torch.manual_seed(seed + 1)
        for name, p in model.named_parameters():
            if "lora_B" in name:
                nn.init.normal_(p, std=0.5)
    return model


def padded_batches(n_batches: int = 3, regression: bool = False, seed: int = 0) -> list[dict[str, Tensor]]:
    """Batches of varying true lengths, right-padded with zeros (attention_mask 0 at the end)."""
    gen = torch.Generator().manual_seed(seed)
    batches = []
    for _ in range(n_batches):
        lengths = torch.randint(3, SEQ_LEN + 1, (BATCH,), generator=gen)
        lengths[0] = 3  # at least one heavily padded example in every batch
        mask = (torch.arange(SEQ_LEN)[None, :] < lengths[:, None]).long()
        ids = torch.randint(1, 100, (BATCH, SEQ_LEN), generator=gen) * mask
        labels = torch.randn(BATCH, generator=gen) if regression else torch.randint(0, 2, (BATCH,), generator=gen)
        batches.append(
            {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids), "labels": labels}
        )
    return batches


def rel_err(a: Tensor, ref: Tensor) -> float:
    """max |a - ref| / max |ref| (exact equality required where ref is all zeros)."""
    scale = ref.abs().max().item()
    diff = (a - ref).abs().max().item()
    return diff / scale if scale > 0 else diff


def assert_close(a: dict[str, Tensor], ref: dict[str, Tensor], tol: float = 1e-5, zero: float = 0.0) -> None:
    """Relative error < tol per tensor and overall; a tensor whose reference is below ``zero``
    everywhere is analytically zero (rounding noise only) and must be below ``zero`` in ``a`` too."""
    assert list(a) == list(ref)
    for name in ref:
        assert a[name].dtype == torch.float32 and a[name].shape == ref[name].shape
        if ref[name].abs().max() < zero:
            assert a[name].abs().max() < zero, name
        else:
            assert rel_err(a[name], ref[name]) < tol, name
    flat_a = torch.cat([t.reshape(-1) for t in a.values()])
    flat_ref = torch.cat([t.reshape(-1) for t in ref.values()])
    assert rel_err(flat_a, flat_ref) < tol


def same_masks(a: dict[str, Tensor], b: dict[str, Tensor]) -> bool:
    return list(a) == list(b) and all(torch.equal(a[n], b[n]) for n in a)


def fisher(model: nn.Module, batches, estimator: str, **kw) -> dict[str, Tensor]:
    kw.setdefault("num_samples", 10_000)
    return empirical_fisher(model, batches, estimator=estimator, **kw)


@pytest.fixture(scope="module")
def lora() -> nn.Module:
    return tiny_lora()


@pytest.fixture(scope="module")
def lora_loop(lora) -> dict[str, Tensor]:
    return fisher(lora, padded_batches(), "loop")


def test_hooks_match_loop_on_lora_with_padding(lora, lora_loop) -> None:
    hooks = fisher(lora, padded_batches(), "hooks")
    trainable = [n for n, p in lora.named_parameters() if p.requires_grad]
    assert list(hooks) == trainable
    assert any("modules_to_save" in n for n in hooks)  # the PEFT SEQ_CLS head is scored too
    assert all(t.abs().max() > 0 for t in lora_loop.values())
    assert_close(hooks, lora_loop)
    keep = sum(t.numel() for t in hooks.values()) // 2
    assert same_masks(select_mask(hooks, keep=keep, strategy="fish"), select_mask(lora_loop, keep=keep, strategy="fish"))


def test_auto_matches_loop_on_lora(lora, lora_loop) -> None:
    assert_close(fisher(lora, padded_batches(), "auto"), lora_loop)


def randomised(model: nn.Module, keys: tuple[str, ...], std: float = 0.3, seed: int = 1) -> nn.Module:
    """Trainable tensors whose name contains one of ``keys`` drawn at random: the zero inits (LoRA B,
    ParBn's up, AdapterHub LoRA's B) would otherwise give the parameters before them zero Fisher."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.requires_grad and any(k in name for k in keys):
                p.normal_(std=std)
    return model


def peft_model(base: nn.Module, dora: bool = False) -> nn.Module:
    config = peft.LoraConfig(task_type="SEQ_CLS", r=4, lora_alpha=8, target_modules=["query", "value"], use_dora=dora)
    return randomised(peft.get_peft_model(base, config), ("lora_B",))


def adapterhub_model(config) -> nn.Module:
    """AdapterHub on a tiny BERT, HF classifier kept (train_adapter leaves it trainable)."""
    model = tiny_bert()
    adapters.init(model)
    model.add_adapter("a", config=config)
    model.train_adapter("a")
    return randomised(model, ("lora_B", "adapter_up"))


def roberta_batches(batches: list[dict[str, Tensor]]) -> list[dict[str, Tensor]]:
    """RoBERTa inputs: pad id 1 at the padded positions (positions are counted from it), no segments."""
    return [{"input_ids": torch.where(b["attention_mask"].bool(), b["input_ids"].clamp_min(2), 1),
             "attention_mask": b["attention_mask"], "labels": b["labels"]} for b in batches]


def unpadded_batches() -> list[dict[str, Tensor]]:
    batches = padded_batches(n_batches=2)
    return [{**b, "attention_mask": torch.ones_like(b["attention_mask"]), "input_ids": b["input_ids"].clamp_min(1)}
            for b in batches]


CASES = {
    "bert-lora": lambda: (peft_model(tiny_bert()), padded_batches(n_batches=2)),
    "roberta-lora": lambda: (peft_model(tiny_roberta()), roberta_batches(padded_batches(n_batches=2))),
    "bert-dora": lambda: (peft_model(tiny_bert(), dora=True), padded_batches(n_batches=2)),
    "roberta-dora": lambda: (peft_model(tiny_roberta(), dora=True), roberta_batches(padded_batches(n_batches=2))),
    "bert-full": lambda: (tiny_bert(), padded_batches(n_batches=2)),
    "roberta-full": lambda: (tiny_roberta(), roberta_batches(padded_batches(n_batches=2))),
    "hub-seqbn": lambda: (adapterhub_model(adapters.SeqBnConfig()), padded_batches(n_batches=2)),
    "hub-parbn": lambda: (adapterhub_model(adapters.ParBnConfig()), padded_batches(n_batches=2)),
    "hub-prefix": lambda: (adapterhub_model(adapters.PrefixTuningConfig(prefix_length=5, bottleneck_size=16)),
                           padded_batches(n_batches=2)),
    # UniPELT's gates average over every position, padding included, so a padded example's output
    # differs from that of the example alone (which the loop runs): compare without padding.
    "hub-unipelt": lambda: (adapterhub_model(adapters.UniPELTConfig()), unpadded_batches()),
    "hub-lora": lambda: (adapterhub_model(adapters.LoRAConfig(r=4)), padded_batches(n_batches=2)),
}


@pytest.mark.parametrize("case", list(CASES))
def test_func_and_auto_match_loop(case: str) -> None:
    model, batches = CASES[case]()
    state = [(n, p, p.detach().clone(), p.requires_grad) for n, p in model.named_parameters()]
    loop = fisher(model, batches, "loop")
    # Attention scores are invariant to the key bias (softmax shift), so its Fisher is exactly 0 in
    # exact arithmetic; the estimators return rounding noise (~1e-24) there, hence the floor.
    assert all(t.abs().max() > 0 for n, t in loop.items() if not n.endswith("key.bias"))
    func = fisher(model, batches, "func")
    assert_close(func, loop, zero=1e-18)
    assert_close(fisher(model, batches, "auto"), loop, zero=1e-18)
    keep = sum(t.numel() for t in loop.values()) // 2
    assert same_masks(select_mask(func, keep=keep, strategy="fish"), select_mask(loop, keep=keep, strategy="fish"))
    # the model is left as it was: same Parameter objects and values, flags, attention settings
    after = list(model.named_parameters())
    assert [n for n, *_ in state] == [n for n, _ in after]
    for (_, p, value, flag), (_, q) in zip(state, after):
        assert q is p and torch.equal(q.detach(), value) and q.requires_grad == flag
    switched = [m.attn_implementation for m in model.modules() if "attn_implementation" in m.__dict__]
    assert switched and all(impl == "sdpa" for impl in switched)  # func ran them as "eager" for the estimate
    assert torch.backends.cuda.flash_sdp_enabled()


def test_func_keeps_no_graph_when_a_trainable_head_is_left_out() -> None:
    """Candidates without the (trainable) head, as `fishtune run` asks: the per-example gradients then
    depend on a parameter that requires grad, and without no_grad around the transforms every
    batch's whole vmap(jacrev) graph hung off the Fisher (+0.5 GB per batch on MiniLM: DoRA-FISH
    was killed at 22 GB)."""
    model, batches = CASES["bert-dora"]()
    names = [n for n, p in model.named_parameters() if p.requires_grad and "classifier" not in n]
    assert len(names) < sum(p.requires_grad for p in model.parameters())
    func = fisher(model, batches, "func", param_names=names)
    assert all(t.grad_fn is None and not t.requires_grad for t in func.values())
    assert_close(func, fisher(model, batches, "loop", param_names=names), zero=1e-18)


def test_hooks_take_exact_linears_only() -> None:
    """PEFT's lora_A/lora_B and head copy and AdapterHub's bottleneck are exact nn.Linear: hooks."""

    def hooked_and_not(model: nn.Module) -> tuple[set[str], set[str]]:
        wanted = {n: p for n, p in model.named_parameters() if p.requires_grad}
        hooked = {n for roles in hook_modules(model, wanted).values() for n in roles.values()}
        return hooked, set(wanted) - hooked

    hooked, rest = hooked_and_not(peft_model(tiny_bert()))
    assert not rest and any("modules_to_save" in n for n in hooked)
    hooked, rest = hooked_and_not(adapterhub_model(adapters.SeqBnConfig()))
    assert not rest and any("adapter_down" in n for n in hooked) and any("adapter_up" in n for n in hooked)
    hooked, rest = hooked_and_not(peft_model(tiny_bert(), dora=True))
    assert rest and all("lora_magnitude" in n for n in rest) and any("lora_A" in n for n in hooked)


def test_hooks_refuse_parameters_outside_plain_linears() -> None:
    with pytest.raises(ConfigError, match="word_embeddings.*'func'"):
        fisher(tiny_bert(), padded_batches(n_batches=1), "hooks")


def test_lora_at_peft_init_gives_zero_fisher_to_every_a() -> None:
    """The trap of NOTES §3: with B = 0 no gradient reaches A, so a mask at init ranks only B."""
    result = fisher(tiny_lora(randomise_b=False), padded_batches(n_batches=1), "auto")
    a = [t for n, t in result.items() if "lora_A" in n]
    b = [t for n, t in result.items() if "lora_B" in n]
    assert a and b
    assert all(torch.count_nonzero(t) == 0 for t in a)
    assert all(t.abs().max() > 0 for t in b)


def test_expected_labels_hooks_match_loop(lora, lora_loop) -> None:
    loop = fisher(lora, padded_batches(), "loop", labels="expected")
    assert_close(fisher(lora, padded_batches(), "hooks", labels="expected"), loop)


def test_regression_hooks_match_loop_and_use_squared_error() -> None:
    model = tiny_bert(num_labels=1)
    batches = padded_batches(n_batches=2, regression=True)
    loop = fisher(model, batches, "loop", param_names=["classifier.weight", "classifier.bias"])
    head = fisher(model, batches, "hooks", param_names=["classifier.weight", "classifier.bias"])
    assert_close(head, loop)
    # The bias gradient of (f(x) - y)^2 is 2 (f(x) - y): checkable from the predictions.
    model.eval()
    with torch.no_grad():
        residual = torch.cat([model(**{k: v for k, v in b.items() if k != "labels"}).logits[:, 0] - b["labels"]
                              for b in batches])
    assert torch.allclose(head["classifier.bias"], (4 * residual**2).sum().reshape(1), rtol=1e-5)
    # expected labels, y ~ N(f(x), 1): 4 E[(f - y)^2] (df/db)^2 = 4 per example for the bias
    n = sum(len(b["labels"]) for b in batches)
    for estimator in ("loop", "hooks", "func"):
        expected = fisher(model, batches, estimator, labels="expected", param_names=["classifier.bias"])
        assert torch.allclose(expected["classifier.bias"], torch.tensor([4.0 * n]), rtol=1e-5), estimator
    names = ["classifier.weight", "bert.encoder.layer.0.attention.self.query.weight"]
    loop = fisher(model, batches, "loop", labels="expected", param_names=names)
    assert_close(fisher(model, batches, "auto", labels="expected", param_names=names), loop)
    assert not torch.allclose(loop["classifier.weight"], head["classifier.weight"])  # not the empirical score


def test_model_mode_grads_and_values_are_restored() -> None:
    model = tiny_lora()
    model.train()
    model.base_model.model.bert.encoder.layer[0].eval()  # a mixed state must survive too
    modes = {n: m.training for n, m in model.named_modules()}
    params = [p for p in model.parameters() if p.requires_grad]
    params[0].grad = torch.full_like(params[0], 7.0)
    grads = [None if p.grad is None else p.grad.clone() for p in model.parameters()]
    values = [p.detach().clone() for p in model.parameters()]
    flags = [p.requires_grad for p in model.parameters()]
    with torch.no_grad():  # estimation turns gradients on by itself
        fisher(model, padded_batches(n_batches=1), "auto")
    assert {n: m.training for n, m in model.named_modules()} == modes
    for p, g, v, f in zip(model.parameters(), grads, values, flags):
        assert (p.grad is None) if g is None else torch.equal(p.grad, g)
        assert torch.equal(p.detach(), v) and p.requires_grad == f


def test_num_samples_truncates_the_last_batch_and_stops_iterating(lora) -> None:
    batches = padded_batches(n_batches=3)
    pulled = []

    def stream():
        for b in batches:
            pulled.append(b)
            yield b

    five = fisher(lora, stream(), "hooks", num_samples=5)
    assert len(pulled) == 2
    first_five = [{k: v[i % BATCH : i % BATCH + 1] for k, v in batches[i // BATCH].items()} for i in range(5)]
    assert_close(five, fisher(lora, first_five, "loop"))


def test_running_out_of_batches_warns(lora, lora_loop, caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="fishtune.fisher"):
        result = fisher(lora, padded_batches(), "loop", num_samples=1000)
    assert "ran out after 12 of 1000" in caplog.text
    assert all(torch.equal(result[n], lora_loop[n]) for n in result)


def test_invalid_arguments_raise_config_error(lora) -> None:
    with pytest.raises(ConfigError):
        fisher(lora, padded_batches(), "vmap")
    with pytest.raises(ConfigError):
        fisher(lora, padded_batches(), "loop", labels="true")
    with pytest.raises(ConfigError):
        fisher(lora, padded_batches(), "loop", num_samples=0)
    with pytest.raises(ConfigError, match="precision"):
        fisher(lora, padded_batches(), "loop", precision="fp16")
    with pytest.raises(ConfigError, match="chunk_size"):
        fisher(lora, padded_batches(), "func", chunk_size=0)
    with pytest.raises(ConfigError, match="not trainable"):
        fisher(lora, padded_batches(), "loop", param_names=["base_model.model.bert.embeddings.word_embeddings.weight"])


class HandClassifier(nn.Module):
    """features (batch, tokens, 5) -> 3 logits; `mix` is called twice, `temperature` is no Linear."""

    def __init__(self) -> None:
        super().__init__()
        self.inp = nn.Linear(5, 4)
        self.mix = nn.Linear(4, 4)
        self.out = nn.Linear(4, 3)
        self.temperature = nn.Parameter(torch.tensor(1.5))

    def forward(self, features: Tensor) -> Tensor:
        h = torch.tanh(self.inp(features))
        h = torch.tanh(self.mix(h))
        h = torch.tanh(self.mix(h)).mean(dim=1)
        return self.out(h) * self.temperature


def explicit_fisher(model: nn.Module, features: Tensor, labels: Tensor, expected: bool = False) -> dict[str, Tensor]:
    """sum_n (d/dtheta CE(f(x_n), y_n))^2, or sum_n sum_c p(c|x_n) (d/dtheta CE(f(x_n), c))^2,
    with one torch.autograd.grad call per example (and class)."""
    names, params = zip(*model.named_parameters())
    total = [torch.zeros_like(p) for p in params]
    for n in range(features.shape[0]):
        logits = model(features[n : n + 1])
        p = logits.softmax(-1)[0].detach()
        weighted_classes = [(c, p[c]) for c in range(3)] if expected else [(int(labels[n]), 1.0)]
        for c, weight in weighted_classes:
            loss = F.cross_entropy(logits, torch.tensor([c]))
            for acc, g in zip(total, torch.autograd.grad(loss, params, retain_graph=True)):
                acc += weight * g**2
    return dict(zip(names, total))


@pytest.mark.parametrize("labels", ["empirical", "expected"])
def test_estimators_match_explicit_per_example_autograd(labels: str) -> None:
    torch.manual_seed(0)
    model = HandClassifier()
    features, targets = torch.randn(6, 7, 5), torch.randint(0, 3, (6,))
    batches = [{"features": features[:4], "labels": targets[:4]}, {"features": features[4:], "labels": targets[4:]}]
    reference = explicit_fisher(model, features, targets, expected=labels == "expected")
    assert_close(fisher(model, batches, "loop", labels=labels), reference, tol=1e-6)
    assert_close(fisher(model, batches, "auto", labels=labels), reference, tol=1e-6)
    assert_close(fisher(model, batches, "func", labels=labels), reference, tol=1e-6)
    assert_close(fisher(model, batches, "func", labels=labels, chunk_size=1), reference, tol=1e-6)
    linear = [n for n in reference if n != "temperature"]
    hooks = fisher(model, batches, "hooks", labels=labels, param_names=linear)
    assert_close(hooks, {n: reference[n] for n in linear}, tol=1e-6)
    with pytest.raises(ConfigError, match="temperature"):
        fisher(model, batches, "hooks", labels=labels)


def test_expected_labels_func_matches_loop() -> None:
    model, batches = CASES["bert-dora"]()
    loop = fisher(model, batches, "loop", labels="expected")
    assert_close(fisher(model, batches, "func", labels="expected", chunk_size=3), loop)


def test_fp32_whatever_the_callers_autocast() -> None:
    """The mask stage calls the estimator inside bf16 autocast; the Fisher must still be fp32."""
    model, batches = CASES["bert-dora"]()
    reference = {est: fisher(model, batches, est) for est in ("auto", "loop")}
    with torch.autocast("cpu", dtype=torch.bfloat16):
        for est in ("auto", "func", "hooks", "loop"):
            names = [n for n in reference["auto"] if "magnitude" not in n] if est == "hooks" else None
            result = fisher(model, batches, est, param_names=names)
            assert_close(result, {n: reference["auto"][n] for n in result})
        bf16 = fisher(model, batches, "auto", precision="bf16")  # the opt-in: autocast is on
    errors = [rel_err(bf16[n], reference["auto"][n]) for n in bf16]
    assert 1e-5 < max(errors) < 0.3


class _Toy(nn.Module):
    """5 features -> ``lin`` -> ``hidden`` -> ``out`` -> 3 classes; each subclass misuses ``lin`` its own way."""

    def __init__(self, hidden: int = 5) -> None:
        super().__init__()
        self.lin = nn.Linear(5, hidden)
        self.out = nn.Linear(hidden, 3)


class SharedWeight(_Toy):
    """``lin``'s weight is used by ``lin`` and again through F.linear, outside ``lin``'s forward."""

    def forward(self, features: Tensor) -> Tensor:
        h = torch.tanh(self.lin(features))
        h = torch.tanh(F.linear(h, self.lin.weight))
        return self.out(h.mean(dim=1))


class WeightOnly(_Toy):
    """``lin`` is never called: its parameters are used through F.linear only."""

    def forward(self, features: Tensor) -> Tensor:
        return self.out(torch.tanh(F.linear(features, self.lin.weight, self.lin.bias)).mean(dim=1))


class TokensFirst(_Toy):
    """``lin`` sees (tokens, batch, features): with as many tokens as examples the shape looks right."""

    def __init__(self) -> None:
        super().__init__(hidden=4)

    def forward(self, features: Tensor) -> Tensor:
        h = torch.tanh(self.lin(features.transpose(0, 1))).transpose(0, 1)
        return self.out(h.mean(dim=1))


def toy_batches(tokens: int = 7, seed: int = 0) -> list[dict[str, Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    features, targets = torch.randn(8, tokens, 5, generator=gen), torch.randint(0, 3, (8,), generator=gen)
    return [{"features": features[:4], "labels": targets[:4]}, {"features": features[4:], "labels": targets[4:]}]


@pytest.mark.parametrize(("toy", "reason"), [(SharedWeight, "add up to its batch gradient"),
                                             (WeightOnly, "add up to its batch gradient"),
                                             (TokensFirst, "run alone")])
def test_hooks_refuse_what_they_would_get_wrong_and_auto_moves_it_to_func(toy, reason, caplog) -> None:
    torch.manual_seed(0)
    model, batches = toy(), toy_batches(tokens=4)  # tokens == batch size: TokensFirst passes the shape check
    loop = fisher(model, batches, "loop")
    assert loop["lin.weight"].abs().max() > 0
    with pytest.raises(FishtuneError, match=f"lin.weight.*{reason}.*'func' or 'loop'"):
        fisher(model, batches, "hooks")
    with caplog.at_level(logging.INFO, logger="fishtune.fisher"):
        auto = fisher(model, batches, "auto")
    assert "torch.func scores them" in caplog.text
    assert_close(auto, loop)
    assert_close(fisher(model, batches, "func"), loop)


class ItemCall(nn.Module):
    """Calls .item() (vmap cannot) from its ``fail_from``-th forward on; eager autograd is fine."""

    def __init__(self, fail_from: int = 1) -> None:
        super().__init__()
        self.lin = nn.Linear(5, 3)
        self.scale = nn.Parameter(torch.tensor(1.3))
        self.calls, self.fail_from = 0, fail_from

    def forward(self, features: Tensor) -> Tensor:
        self.calls += 1
        scale = self.scale * (1.0 + 0.0 * features.max().item()) if self.calls >= self.fail_from else self.scale
        return self.lin(features).mean(dim=1) * scale


@pytest.mark.parametrize("fail_from", [1, 3])
def test_auto_falls_back_to_the_loop_where_vmap_fails(fail_from: int, caplog) -> None:
    """fail_from=3: the first chunk (forward 1) and its check (2) pass, the second chunk fails, so the
    loop must take over from the batch's third example exactly."""
    torch.manual_seed(0)
    batches = toy_batches()
    loop = fisher(ItemCall(), batches, "loop")
    torch.manual_seed(0)
    model = ItemCall(fail_from)
    with caplog.at_level(logging.WARNING, logger="fishtune.fisher"):
        auto = fisher(model, batches, "auto", chunk_size=2)
    assert "torch.func could not run the model" in caplog.text and "scale" in caplog.text
    assert_close(auto, loop)
    with pytest.raises(FishtuneError, match="'func'.*could not run the model.*'loop'"):
        fisher(ItemCall(), batches, "func")


class HiddenParameter(nn.Module):
    """Reads ``scale`` through a plain list, which functional_call does not see."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(5, 3)
        self.scale = nn.Parameter(torch.tensor(1.3))
        self.held = [self.scale]

    def forward(self, features: Tensor) -> Tensor:
        return self.lin(features).mean(dim=1) * self.held[0]


def test_func_check_catches_a_parameter_it_cannot_substitute(caplog) -> None:
    torch.manual_seed(0)
    model, batches = HiddenParameter(), toy_batches()
    loop = fisher(model, batches, "loop")
    assert loop["scale"].abs().max() > 0
    with pytest.raises(FishtuneError, match="do not add up.*scale; use estimator 'loop'"):
        fisher(model, batches, "func")
    with caplog.at_level(logging.WARNING, logger="fishtune.fisher"):
        assert_close(fisher(model, batches, "auto"), loop)
    assert "batch-1 loop scores scale" in caplog.text


def test_a_bf16_model_is_checked_at_bf16_rounding_and_keeps_the_fast_estimator(caplog) -> None:
    # fp32's 1e-4 check tolerance would send every bf16 LoRA factor to the batch-1 loop
    model = tiny_lora().to(torch.bfloat16)
    with caplog.at_level(logging.INFO, logger="fishtune.fisher"):   # hooks -> func is logged at INFO
        scores = fisher(model, padded_batches(), "auto")
    assert not [r for r in caplog.records if "do not add up" in r.getMessage()]
    assert "hooks cannot score" not in caplog.text and "batch-1 loop scores" not in caplog.text
    assert all(s.dtype == torch.float32 and bool(s.isfinite().all()) for s in scores.values())
