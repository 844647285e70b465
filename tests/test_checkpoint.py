"""Checkpoints store uncompiled parameter names: a run resumes whether or not `train.compile` was on."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from conftest import compose_run
from fishtune.checkpoint import load_checkpoint, save_checkpoint
from fishtune.errors import FishtuneError
from fishtune.train import Progress, linear_schedule, make_optimizer


def _model(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2))


def _opt(model: torch.nn.Module):
    optimizer = make_optimizer(list(model.parameters()), lr=1e-3, weight_decay=0.0, device=torch.device("cpu"))
    return optimizer, linear_schedule(optimizer, warmup_steps=1, total_steps=10)


@pytest.mark.parametrize("saved_compiled,loaded_compiled", [(True, False), (False, True), (True, True)])
def test_resume_across_compile(tmp_path: Path, saved_compiled: bool, loaded_compiled: bool) -> None:
    source, target = _model(1), _model(2)
    saving = torch.compile(source) if saved_compiled else source  # names gain `_orig_mod.` when compiled
    assert any(n.startswith("_orig_mod.") for n, _ in saving.named_parameters()) == saved_compiled
    save_checkpoint(tmp_path / "c.pt", saving, *_opt(saving), Progress(epoch=1))
    assert all(not n.startswith("_orig_mod.") for n in torch.load(tmp_path / "c.pt", weights_only=False)["trainable"])
    loading = torch.compile(target) if loaded_compiled else target
    progress = load_checkpoint(tmp_path / "c.pt", loading, *_opt(loading))
    assert progress.epoch == 1
    for a, b in zip(source.parameters(), target.parameters()):
        assert torch.equal(a, b)


def test_a_checkpoint_of_another_model_is_a_clear_error(tmp_path: Path) -> None:
    save_checkpoint(tmp_path / "c.pt", _model(1), *_opt(_model(1)), Progress())
    other = torch.nn.Sequential(torch.nn.Linear(4, 2))
    with pytest.raises(FishtuneError, match="does not match the model"):
        load_checkpoint(tmp_path / "c.pt", other, *_opt(other))


def test_a_checkpoint_lacking_a_trainable_tensor_or_its_optimizer_state_is_a_clear_error(tmp_path: Path) -> None:
    # resuming would leave that tensor at its initial values, silently
    partly = _model(1)
    partly[1].weight.requires_grad_(False)
    save_checkpoint(tmp_path / "c.pt", partly, *_opt(partly), Progress())
    model = _model(1)
    with pytest.raises(FishtuneError, match=r"does not match the model's trainable parameters \(e.g. '1.weight'\)"):
        load_checkpoint(tmp_path / "c.pt", model, *_opt(model))
    wider = torch.nn.Sequential(torch.nn.Linear(4, 5), torch.nn.Linear(5, 2))   # the same names, other shapes
    wider[1].weight.requires_grad_(False)
    with pytest.raises(FishtuneError, match=r"trainable parameters \(e.g. '0.bias'\)"):
        load_checkpoint(tmp_path / "c.pt", wider, *_opt(wider))
    model[1].weight.requires_grad_(False)
    optimizer, scheduler = _opt(torch.nn.Linear(2, 2))   # another optimizer's parameter groups
    with pytest.raises(FishtuneError, match="optimizer or scheduler state does not fit"):
        load_checkpoint(tmp_path / "c.pt", model, optimizer, scheduler)


def test_run_folder_depends_on_device_and_precision() -> None:
    from fishtune.config import run_dir

    cfg = compose_run("task=rte")
    cpu = run_dir(cfg, runtime={"device": "cpu", "precision": "fp32"})
    cuda = run_dir(cfg, runtime={"device": "cuda", "precision": "bf16"})
    cuda32 = run_dir(cfg, runtime={"device": "cuda", "precision": "fp32"})
    assert len({cpu, cuda, cuda32}) == 3
    if not torch.cuda.is_available():
        assert run_dir(cfg) == cpu  # auto resolves to what this machine runs
    compiled = OmegaConf.merge(cfg, {"train": {"compile": True}})
    assert run_dir(compiled, runtime={"device": "cuda", "precision": "bf16"}) == cuda  # compile: same folder, resumable
