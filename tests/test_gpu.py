"""CUDA checks (run on a GPU machine: `pytest -m gpu`): bf16 masked training keeps frozen entries exact."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from conftest import records

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


def test_bf16_masked_run_on_cuda(run_cli, tmp_path: Path) -> None:
    assert run_cli("train.device=cuda", "train.precision=bf16", "mask=fish", "method.r=16",
                   "mask.num_samples=32", "train.weight_decay=0.1", "train.epochs=2") == 0
    (rec,) = records(tmp_path / "runs")
    assert rec["hardware"]["device"].startswith("cuda") and rec["precision"] == "bf16"
    assert rec["frozen_changed"] == 0 and rec["memory"]["gpu_peak_allocated_bytes"] > 0


def test_hooks_match_loop_on_cuda() -> None:
    from fishtune.fisher import empirical_fisher
    from peft import LoraConfig, get_peft_model
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    model = BertForSequenceClassification(BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2,
                                                     num_attention_heads=2, intermediate_size=64))
    model = get_peft_model(model, LoraConfig(task_type="SEQ_CLS", r=4, target_modules=["query", "value"])).cuda()
    for name, p in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p)
    batch = {"input_ids": torch.randint(1, 100, (8, 16)).cuda(), "attention_mask": torch.ones(8, 16, dtype=torch.long).cuda(),
             "labels": torch.randint(0, 2, (8,)).cuda()}
    loop = empirical_fisher(model, [batch], num_samples=8, estimator="loop")
    hooks = empirical_fisher(model, [batch], num_samples=8, estimator="hooks")
    for name in loop:
        assert torch.allclose(loop[name], hooks[name], rtol=1e-4, atol=1e-10), name
