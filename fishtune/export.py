"""`fishtune export RUN_DIR [--merge] [--out DIR]`: the trained adapter of a run, or a merged model.

A complete run folder holds `config.yaml` (resolved) and `adapter/`, the trained adapter and the
HF head in the library's own format (PEFT for lora/dora, AdapterHub for the others). Without
`--merge` the adapter folder is copied to DIR (default RUN_DIR/export). With `--merge` the base
model is rebuilt from the config (a Hub model at the snapshot the record names; a `model.path`
folder only while its files are the ones the run read), the adapter loaded onto it and folded into the weights
(PEFT `merge_and_unload`), and a plain transformers model + tokenizer is written to DIR (default
RUN_DIR/merged), after checking on a probe batch that its logits equal the unmerged model's
(fp32, 1e-5). Methods that cannot be merged (bottleneck adapters, prefix tuning, UniPELT) and
full fine-tuning say why in one line.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import torch
from omegaconf import DictConfig, open_dict
from torch import nn

from .atomic import plain_modes
from .config import load_run_config
from .errors import ConfigError, FishtuneError, first_line
from .record import RECORD_NAME, read_record

ADAPTER_DIR = "adapter"
TOLERANCE = 1e-5


def run_config(run_dir: Path) -> tuple[DictConfig, dict]:
    """The resolved config of a complete run and its record (one-line errors for anything else)."""
    record = read_record(run_dir / RECORD_NAME)
    if record is None or not (run_dir / "config.yaml").is_file():
        raise FishtuneError(f"{run_dir} is not a fishtune run folder (no {RECORD_NAME} / config.yaml)")
    if record.get("status") != "complete":
        raise FishtuneError(f"run {run_dir} is {record.get('status')}, not complete; finish it first")
    try:
        cfg = load_run_config(run_dir / "config.yaml")
    except ConfigError as err:
        raise FishtuneError(f"{run_dir / 'config.yaml'} cannot be read as a run config: {err}") from None
    if record.get("model_revision"):  # a Hub model: the snapshot the run trained on, wherever `main` is now
        with open_dict(cfg.model):
            cfg.model.revision = record["model_revision"]
    return cfg, record


def load_base(cfg: DictConfig, record: dict):
    """The run's base model and tokenizer, rebuilt as the run built them (same seed: same new head):
    a Hub model at the recorded snapshot (`run_config`), a `model.path` folder only while its files
    are the ones the run read (`model_files_sha256`); an adapter on other base weights would export
    another model than the one scored."""
    from .models import load_model, model_files_digest, other_model
    from .tasks import get_task

    if mismatch := other_model(record, model_files=model_files_digest(cfg.model)):
        _, recorded, now = mismatch
        raise FishtuneError(f"the files of model.path {cfg.model.path} changed since the run read them "
                            f"(model_files_sha256 {recorded}, now {now}); restore the run's base model there")
    if cfg.model.get("package") and not cfg.model.get("path"):
        _check_package_version(str(cfg.model.package), record.get("versions") or {})
    return load_model(cfg.model, get_task(cfg.task.name), seed=int(cfg.seed))


def _check_package_version(package: str, recorded: dict) -> None:
    """A model package installed at another version than the run recorded (`versions`) may hold
    other weights: refuse it, as a changed `model.path` folder is."""
    from importlib.metadata import packages_distributions, version

    for dist in packages_distributions().get(package, []):
        if recorded.get(dist) not in (None, version(dist)):
            raise FishtuneError(f"the model package {dist} is at {version(dist)}, but the run trained on "
                                f"{recorded[dist]}; install that version (pip install {dist}=={recorded[dist]})")


def load_trained(run_dir: Path) -> tuple[nn.Module, DictConfig]:
    """The trained model of a run: its base model with `adapter/` loaded (PEFT or AdapterHub)."""
    cfg, record = run_config(run_dir)
    adapter = run_dir / ADAPTER_DIR
    if not adapter.is_dir():
        raise FishtuneError(_no_adapter(cfg, run_dir))
    check_adapter(adapter)
    base = load_base(cfg, record).model
    try:
        if (adapter / "adapter_model.safetensors").exists() or (adapter / "adapter_model.bin").exists():
            from peft import PeftModel

            return PeftModel.from_pretrained(base, str(adapter)), cfg
        from .methods._adapterhub import load

        return load(base, adapter), cfg
    except FishtuneError:
        raise
    except Exception as err:  # the libraries' own errors (a bad tensor name or shape, a missing file)
        raise FishtuneError(f"cannot load the adapter in {adapter}: {type(err).__name__}: {first_line(err)}") from None


def check_adapter(folder: Path) -> None:
    """Cheaply check a saved adapter folder (no model loaded): `adapter_config.json` and every
    other `*.json` parse to an object, it holds a weights file, every `*.safetensors` has a readable
    header and every `*.bin` (AdapterHub's `pytorch_adapter.bin`, `pytorch_model_head.bin`) is a
    whole torch zip archive; else one `FishtuneError` naming the file."""
    if not (folder / "adapter_config.json").is_file():
        raise FishtuneError(f"{folder / 'adapter_config.json'} is missing; the adapter cannot be loaded")
    if not any(folder.glob("*.safetensors")) and not any(folder.glob("*.bin")):
        raise FishtuneError(f"{folder} holds no adapter weights (*.safetensors or *.bin)")
    for path in sorted(folder.iterdir()):
        try:
            _check_adapter_file(path)
        except Exception as err:  # json, safetensors, zipfile and OS errors alike
            raise FishtuneError(f"{path} is damaged: {first_line(err)}") from None


def _check_adapter_file(path: Path) -> None:
    """Raise if `path` (by its suffix: .json, .safetensors, .bin) cannot be read back."""
    import json
    import zipfile

    if path.suffix == ".json":
        if not isinstance(json.loads(path.read_text(encoding="utf-8")), dict):
            raise ValueError("it is not a JSON object")
    elif path.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), "pt") as f:
            list(f.keys())
    elif path.suffix == ".bin":
        with zipfile.ZipFile(path) as archive:
            archive.namelist()


def export(run_dir: Path, *, merge: bool = False, out: Path | None = None) -> Path:
    """Write the export of `run_dir` (module docstring); returns the folder written."""
    from .methods import get_method

    run_dir = Path(run_dir)
    cfg, record = run_config(run_dir)
    method = get_method(cfg.method.name)
    if merge and method.merge is not None:
        raise FishtuneError(method.merge)
    if not (run_dir / ADAPTER_DIR).is_dir():
        raise FishtuneError(_no_adapter(cfg, run_dir))
    target = Path(out) if out else run_dir / ("merged" if merge else "export")
    _check_target(target)
    check_adapter(run_dir / ADAPTER_DIR)
    if not merge:
        _write_folder(target, lambda tmp: shutil.copytree(run_dir / ADAPTER_DIR, tmp))
        return target
    model, _ = load_trained(run_dir)
    model.eval()
    probe = _probe(model)
    with torch.no_grad():
        before = model(**probe).logits
        merged = model.merge_and_unload()
        diff = float((merged(**probe).logits - before).abs().max())
    if diff > TOLERANCE:
        raise FishtuneError(f"the merged model's logits differ from the unmerged ones by {diff:.2g} (> {TOLERANCE})")
    tokenizer = load_base(cfg, record).tokenizer

    def write(tmp: Path) -> None:
        merged.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))

    _write_folder(target, write)
    return target


def _check_target(target: Path) -> None:
    """The export folder must be new or empty, and no folder above it a file (one line, before any work)."""
    if target.exists() and not target.is_dir():
        raise FishtuneError(f"{target} is a file; choose a new or empty folder for --out")
    if target.exists() and any(target.iterdir()):
        raise FishtuneError(f"{target} exists and is not empty; choose another --out")
    for parent in target.parents:
        if parent.exists() and not parent.is_dir():
            raise FishtuneError(f"{parent} is a file, so {target} cannot be created; choose another --out")


def _write_folder(target: Path, write: Callable[[Path], None]) -> None:
    """`write(tmp)` into a new hidden sibling of `target`, give its files the plain-write mode, then
    rename it onto `target` (absent or empty): a failed write leaves no half export, and any error
    is one `FishtuneError` line naming `target`."""
    final = target.absolute()   # `--out .` has a name to put the sibling beside
    tmp = final.with_name(f".{final.name}.tmp")
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
        write(tmp)
        plain_modes(tmp)
        if final.is_dir():
            final.rmdir()   # empty (`_check_target`): the rename needs the name free
        tmp.rename(final)
    except Exception as err:  # OSError, and safetensors' own error for a full disk
        shutil.rmtree(tmp, ignore_errors=True)
        reason = err.strerror if isinstance(err, OSError) and err.strerror else first_line(err)
        raise FishtuneError(f"cannot write {target}: {reason}") from None


def _probe(model: nn.Module) -> dict[str, torch.Tensor]:
    """A fixed batch of token ids (two lengths, with padding) to compare merged and unmerged logits."""
    vocab = model.config.vocab_size
    ids = torch.randint(5, vocab, (4, 16), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[2:, 10:] = 0
    return {"input_ids": ids, "attention_mask": mask}


def _no_adapter(cfg: DictConfig, run_dir: Path) -> str:
    from .methods import get_method

    method = get_method(cfg.method.name)
    if cfg.method.name == "full":
        return method.merge or "full fine-tuning has no adapter"
    return f"{run_dir} has no {ADAPTER_DIR}/ folder (runs from before fishtune saved AdapterHub adapters)"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="fishtune export", description=__doc__.split("\n")[0])
    parser.add_argument("run_dir", type=Path, help="a complete run folder (results/runs/...)")
    parser.add_argument("--merge", action="store_true", help="fold LoRA/DoRA into the weights: a plain transformers model")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default RUN_DIR/export or RUN_DIR/merged)")
    args = parser.parse_args(argv)
    try:
        target = export(args.run_dir, merge=args.merge, out=args.out)
    except FishtuneError as err:
        print(f"fishtune: error: {err}", file=sys.stderr)
        return 1
    print(target)
    return 0
