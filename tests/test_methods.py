"""Every registered method on tiny-bert and tiny-roberta: groups, counts, outputs, CLI runs, bad keys."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from conftest import REPO, compose_run, records
from fishtune.config import validate
from fishtune.errors import ConfigError
from fishtune.methods import REGISTRY, apply_method, method_config
from fishtune.models import load_model
from fishtune.tasks import get_task

METHODS = ("lora", "dora", "full", "adapter_pfeiffer", "adapter_houlsby", "adapter_parallel", "prefix", "unipelt")
ARCHS = ("tiny-bert", "tiny-roberta")
D, L = 32, 2   # hidden size and layers of the tiny models (configs/model/tiny-*.yaml)


def _gate(n: int = 1) -> int:
    return n * (D + 1)   # a gate is Linear(hidden, 1)


def _bottleneck(rf: int) -> int:
    b = D // rf
    return (b * D + b) + (D * b + D)   # down (weight, bias) + up (weight, bias)


def _prefix(length: int, width: int = 512) -> int:
    return length * D + (D * width + width) + (width * 2 * L * D + 2 * L * D)   # wte + 2-layer MLP


# method -> (candidates per family, inference count or None, number of factor pairs)
EXPECTED = {
    "lora": ({"lora_A": 2 * L * 8 * D, "lora_B": 2 * L * D * 8}, None, 2 * L),
    "dora": ({"lora_A": 2 * L * 8 * D, "lora_B": 2 * L * D * 8, "lora_magnitude": 2 * L * D}, None, 2 * L),
    "adapter_pfeiffer": ({"adapter_down": L * (2 * D + 2), "adapter_up": L * (D * 2 + D)}, None, 0),
    "adapter_houlsby": ({"adapter_down": 2 * L * (2 * D + 2), "adapter_up": 2 * L * (D * 2 + D)}, None, 0),
    "adapter_parallel": ({"adapter_down": L * (16 * D + 16), "adapter_up": L * (D * 16 + D)}, None, L),
    "prefix": ({"prefix_embedding": 30 * D, "prefix_mlp": _prefix(30) - 30 * D}, 30 * 2 * L * D, 0),
    "unipelt": ({"lora_A": 2 * L * 8 * D, "lora_B": 2 * L * D * 8, "gate": _gate(2 * L + L + L),
                 "prefix_embedding": 10 * D, "prefix_mlp": _prefix(10) - 10 * D,
                 "adapter_down": L * (2 * D + 2), "adapter_up": L * (D * 2 + D)}, None, 2 * L),
}
EXPECTED["unipelt"] = (EXPECTED["unipelt"][0], sum(EXPECTED["unipelt"][0].values()) - _prefix(10) + 10 * 2 * L * D,
                       2 * L)
HEAD = {"tiny-bert": D * 2 + 2, "tiny-roberta": (D * D + D) + (D * 2 + 2)}   # BERT Linear; RoBERTa dense + out_proj


@pytest.fixture(scope="module")
def bases() -> dict:
    task = get_task("mrpc")
    return {arch: load_model(OmegaConf.load(REPO / "configs" / "model" / f"{arch}.yaml"), task, seed=1).model
            for arch in ARCHS}


def _setup(bases: dict, arch: str, method, **overrides):
    cfg = method_config({"config": method, **overrides}) if overrides else method_config(method)
    return apply_method(copy.deepcopy(bases[arch]), cfg)


def _logits(model, ids: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    model.eval()
    return model(input_ids=ids, attention_mask=torch.ones_like(ids) if mask is None else mask).logits


def test_registry_has_every_method_and_a_config_each() -> None:
    assert set(REGISTRY) == set(METHODS)
    for name in METHODS:
        path = REPO / "configs" / "method" / f"{name}.yaml"
        assert path.read_text().startswith("# fishtune run"), path
        cfg = method_config(name)
        assert cfg.name == name and float(cfg.lr) > 0 and cfg.tag


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("method", METHODS)
def test_groups_cover_the_trainable_set_with_the_expected_counts(bases, arch: str, method: str) -> None:
    setup = _setup(bases, arch, method)
    params = dict(setup.model.named_parameters())
    trainable = {n for n, p in params.items() if p.requires_grad}
    assert trainable == set(setup.candidates) | set(setup.head) | set(setup.dense)
    assert not set(setup.candidates) & set(setup.head) and not setup.dense
    assert setup.count(setup.head) == HEAD[arch] and not any(n.startswith("heads.") for n in trainable)
    by_family: dict[str, int] = {}
    for name, family in setup.candidates.items():
        by_family[family] = by_family.get(family, 0) + params[name].numel()
    if method == "full":
        frozen_free = sum(p.numel() for p in params.values()) - HEAD[arch]
        assert by_family == {"backbone": frozen_free} and not setup.factor_pairs
        return
    families, inference, pairs = EXPECTED[method]
    assert by_family == families
    assert setup.inference_count == inference
    assert len(setup.factor_pairs) == pairs
    for pair in setup.factor_pairs:   # declared exactly where `up` starts at zero
        assert torch.all(params[pair.up] == 0) and params[pair.down].shape[0] == params[pair.up].shape[1]
    assert setup.padding_sensitive == (method == "unipelt")


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("method", METHODS)
def test_every_family_reaches_the_output(bases, arch: str, method: str) -> None:
    """Forward/backward work, and perturbing any one family changes the logits (the adapter is active)."""
    setup = _setup(bases, arch, method)
    params = dict(setup.model.named_parameters())
    torch.manual_seed(0)
    ids = torch.randint(1000, 2000, (3, 9))
    with torch.no_grad():   # leave the zero-initialised factors, so every family has a path to the output
        for name in setup.candidates:
            params[name].add_(0.1 * torch.randn_like(params[name]))
    setup.model.train()
    setup.model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits.square().sum().backward()
    grads: dict[str, float] = {}   # per family (a tensor alone can be dead: a 2-unit relu bottleneck)
    for n, family in setup.candidates.items():
        grads[family] = grads.get(family, 0.0) + float(params[n].grad.abs().sum())
    assert all(g > 0 for g in grads.values()), grads
    before = _logits(setup.model, ids)
    for family in sorted(set(setup.candidates.values())):
        saved = {n: params[n].detach().clone() for n, f in setup.candidates.items() if f == family}
        with torch.no_grad():
            for n in saved:
                params[n].add_(torch.randn_like(params[n]))
            assert not torch.allclose(_logits(setup.model, ids), before, atol=1e-6), family
            for n, value in saved.items():
                params[n].copy_(value)


@pytest.mark.parametrize("method", ["lora", "adapter_pfeiffer", "prefix", "unipelt"])
def test_only_unipelt_depends_on_padding(bases, method: str) -> None:
    setup = _setup(bases, "tiny-bert", method)
    torch.manual_seed(0)
    params = dict(setup.model.named_parameters())
    with torch.no_grad():   # as after training: every factor non-zero
        for name in setup.candidates:
            params[name].add_(0.5 * torch.randn_like(params[name]))
    ids = torch.randint(1000, 2000, (1, 7))
    padded = torch.cat([ids, torch.zeros(1, 4, dtype=torch.long)], 1)
    mask = torch.cat([torch.ones(1, 7, dtype=torch.long), torch.zeros(1, 4, dtype=torch.long)], 1)
    with torch.no_grad():
        same = torch.allclose(_logits(setup.model, ids), _logits(setup.model, padded, mask), atol=1e-6)
    assert same == (not setup.padding_sensitive)


def test_unipelt_dense_gates_are_a_declared_group(bases) -> None:
    setup = _setup(bases, "tiny-bert", "unipelt", dense_gates=True)
    assert set(setup.dense.values()) == {"gate"} and setup.count(setup.dense) == _gate(4 * L)
    assert "gate" not in setup.candidates.values()
    assert method_config({"config": "unipelt", "dense_gates": True}).tag == "unipelt-r8-p10-rf16-dg"


BAD = [
    (["method=adapter_pfeiffer", "+method.r=8"], "unknown key method.r for method adapter_pfeiffer"),
    (["method=prefix", "method.prefix_length=0"], "method.prefix_length must be an integer >= 1, got 0"),
    (["method=unipelt", "method.dense_gates=maybe"], "method.dense_gates must be true or false"),
    (["method=adapter_parallel", "method.non_linearity=sigmoid"], "method.non_linearity must be one of relu"),
    (["method=adapter_houlsby", "method.reduction_factor=0"], "method.reduction_factor must be a finite number > 0"),
    (["method=lora", "method.target_modules=[]"], "method.target_modules must be a non-empty list"),
    (["mask=fish", "+mask.keep_match=nosuch"], "mask.keep_match: no method config 'nosuch'"),
    (["mask=fish", "+mask.keep_match=lora", "mask.keep=10"], "mask.keep and mask.keep_match both"),
]


@pytest.mark.parametrize("overrides,message", BAD, ids=[" ".join(b[0]) for b in BAD])
def test_bad_method_keys_are_one_config_error(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        validate(compose_run("model=tiny-bert", *overrides))
    assert message in str(err.value) and "\n" not in str(err.value)


TOO_WIDE = [("lora", {"r": D + 1}, f"LoRA rank r={D + 1} is above the rank of an update to"),
            ("dora", {"r": 10**9}, f"choose r ≤ {D}: a larger r adds parameters but no rank"),
            ("unipelt", {"r": D + 1}, "attention.self.query"),
            ("adapter_pfeiffer", {"reduction_factor": D + 0.5}, f"hidden size {D}), which AdapterHub would silently"),
            ("adapter_parallel", {"reduction_factor": 10**6}, f"choose a reduction_factor ≤ {D}"),
            ("unipelt", {"reduction_factor": 64}, f"reduction_factor=64 leaves a bottleneck of {D}/64 < 1 unit")]


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("method,overrides,message", TOO_WIDE, ids=[f"{m}-{o}" for m, o, _ in TOO_WIDE])
def test_a_rank_or_bottleneck_the_model_cannot_have_is_one_config_error(bases, arch, method, overrides, message):
    """r above min(out, in) of a targeted weight, or a reduction factor above the hidden size (a
    bottleneck AdapterHub would widen to 1 unit): refused before any factor is allocated."""
    with pytest.raises(ConfigError) as err:
        _setup(bases, arch, method, **overrides)
    assert message in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("method,overrides", [("lora", {"r": D}), ("unipelt", {"r": D, "reduction_factor": D}),
                                              ("adapter_houlsby", {"reduction_factor": D})])
def test_the_widest_rank_and_the_one_unit_bottleneck_are_allowed(bases, method, overrides) -> None:
    setup = _setup(bases, "tiny-bert", method, **overrides)
    shapes = {n: p.shape for n, p in setup.model.named_parameters() if n in setup.candidates}
    if "r" in overrides:
        assert any(shape[0] == D and setup.candidates[n] == "lora_A" for n, shape in shapes.items())
    if "reduction_factor" in overrides:
        assert any(shape[0] == 1 and setup.candidates[n] == "adapter_down" for n, shape in shapes.items())


def test_a_matched_config_too_wide_for_the_model_names_keep_match(bases) -> None:
    from fishtune.selection import matched_budget

    mask = OmegaConf.create({"name": "fish", "keep_match": {"config": "lora", "r": 4 * D}})
    with pytest.raises(ConfigError, match=rf"^mask.keep_match \(lora\): LoRA rank r={4 * D} is above"):
        matched_budget(copy.deepcopy(bases["tiny-bert"]), mask, own_dense=0)


def test_bad_method_key_on_the_command_line(run_cli, capsys, tmp_path: Path) -> None:
    assert run_cli("method=prefix", "+method.length=5") == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("fishtune: error: unknown key method.length for method prefix")
    assert "Traceback" not in "\n".join(err) and not records(tmp_path / "runs")


FAST = ["train.max_train_samples=16", "train.max_eval_samples=8", "train.max_seq_length=32", "train.weight_decay=0.1",
        "++mask.num_samples=8", "++mask.warmup_steps=2", "++mask.fisher_batch_size=8"]  # ++: mask=none lacks them


@pytest.mark.parametrize("method", [m if m == "lora" else pytest.param(m, marks=pytest.mark.slow) for m in METHODS])
def test_cli_pair_runs_every_mask(run_cli, tmp_path: Path, method: str) -> None:
    """`fishtune run -m +pair=<method> mask=none,fish,random,reverse`: four complete records, frozen
    entries bit-identical, the masked cells training exactly the vanilla partner's count."""
    assert run_cli("-m", f"+pair={method}", "mask=none,fish,random,reverse", *FAST) == 0
    recs = {r["mask"]: r for r in records(tmp_path / "runs")}
    assert set(recs) == {"none", "fish", "random", "reverse"}
    for rec in recs.values():
        assert rec["status"] == "complete" and rec["frozen_changed"] == 0 and rec["method"] == method
        assert rec["padding_sensitive"] == (method == "unipelt")
        assert (Path(rec["output_dir"]) / "adapter").is_dir() == (method != "full")
    vanilla = recs["none"]["trainable"]
    for mask in ("fish", "random", "reverse"):
        t = recs[mask]["trainable"]
        assert t["head"] == vanilla["head"] and t["dense"] == vanilla["dense"] == 0
        assert 1.5 * t["peft_selected"] < t["peft_total"]   # the masked cells are about twice as large
        if method != "full":   # full's masked cells match LoRA r=8 (+pair=lora), not dense fine-tuning
            assert t["peft_selected"] == vanilla["peft_total"], mask
        assert recs[mask]["mask_tag"].startswith(f"{mask}-match.")


def _two_layer_head_models():
    """Tiny DistilBERT and DeBERTa-v2 (which the model guard accepts): their classifiers add a new
    layer besides `classifier` (`pre_classifier`, `pooler`), with their attention projections' names."""
    from transformers import (DebertaV2Config, DebertaV2ForSequenceClassification, DistilBertConfig,
                              DistilBertForSequenceClassification)

    torch.manual_seed(0)
    return {
        "distilbert": (DistilBertForSequenceClassification(DistilBertConfig(
            vocab_size=100, dim=32, n_layers=2, n_heads=2, hidden_dim=64, num_labels=2)), "pre_classifier", ["q_lin", "v_lin"]),
        "deberta-v2": (DebertaV2ForSequenceClassification(DebertaV2Config(
            vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
            num_labels=2)), "pooler", ["query_proj", "value_proj"]),
    }


@pytest.mark.parametrize("method", ["lora", "dora", "adapter_pfeiffer", "full"])
def test_a_classifier_with_two_new_layers_is_all_head(method: str) -> None:
    # the extra layer is new (random): trained densely with `classifier`, never frozen or a candidate
    from fishtune.candidates import candidates

    for arch, (base, extra, targets) in _two_layer_head_models().items():
        spec = {"config": method, "target_modules": targets} if method in ("lora", "dora") else method
        setup = apply_method(copy.deepcopy(base), method_config(spec))
        params = dict(setup.model.named_parameters())
        extra_head = [n for n in setup.head if f"{extra}." in n]
        assert len(extra_head) == 2 and all(params[n].requires_grad for n in setup.head), (arch, setup.head)
        assert not any(f"{extra}." in n for n in setup.candidates), arch
        assert not set(candidates(setup.model)) & set(setup.head), arch   # the public API agrees
