"""One run, end to end: config -> data -> model -> method -> (Fisher -> mask) -> train -> record.

Everything that can fail because of user input (config values, data files, model names, the
mask budget) is checked before anything is written, so a bad command never touches an
existing run folder. From the first write on, the record says `running`; it ends as
`complete`, `failed` (with `traceback.txt`), `diverged` or `interrupted`. A rerun resumes an
unfinished run from its checkpoint; the record's `sessions` lists every process that wrote it.
"""

from __future__ import annotations

import copy
import functools
import logging
import shutil
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from safetensors.torch import load_file, save_file
from torch import Tensor

from .atomic import atomic_write, atomic_write_text
from .batching import Encoded, encode
from .config import (check_run_folder_place, check_train_size, comparable_config, comparison_digest, load_run_config,
                     effective_max_train_samples, flatten, pair_vanilla_method, resolved_runtime, run_dir, validate)
from .data import DEFAULT_GLUE_DIR, Example, examples_digest, load_split
from .errors import ConfigError, DivergedError, FishtuneError, first_line, sigterm_interrupts
from .fisher_cache import build_with_cache
from .fishmask import FishMask
from .frozen import count_changed
from .methods import MethodSetup, adapter_format, apply_method, save_adapter
from .metrics import compute_metrics
from .models import hub_revision, load_model, max_tokens, model_files_digest, other_model, uses_token_type_ids
from .lock import RunFolderLock, check_unlocked
from .provenance import TRAINING_SOURCE_SHA256
from .record import (RECORD_NAME, RunRecord, environment, now, peak_memory, read_record, record_problem,
                     reset_peak_memory)
from .report.schema import RUN_STATUSES
from .selection import MaskResult, build_mask, mask_budget, matched_budget
from .tasks import TaskSpec, get_task
from .train import Trainer, predict, seed_everything

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.pt"
MASK_FILE, INIT_FILE, FINAL_FILE = "mask.safetensors", "peft_init.safetensors", "peft_final.safetensors"
ADAPTER_DIR = "adapter"  # the trained adapter in its library's format (PEFT or AdapterHub; `methods.save_adapter`)


def pick_device(train_cfg: DictConfig) -> tuple[torch.device, bool]:
    """(device, bf16 autocast on?) from train.device and train.precision."""
    runtime = resolved_runtime(train_cfg)
    return torch.device(runtime["device"]), runtime["precision"] == "bf16"


def glue_dir(cfg: DictConfig) -> Path:
    """data.dir, else ./data/glue (a checkout), else the folder next to the package."""
    if cfg.data.dir:
        return Path(cfg.data.dir)
    local = Path("data/glue")
    return local if local.is_dir() else DEFAULT_GLUE_DIR


def run_experiment(cfg: DictConfig) -> dict:
    """Run (or resume, or skip if complete) the configured experiment; return its record."""
    validate(cfg)
    vanilla = pair_vanilla_method(cfg)   # a pair's vanilla cell, which the masked cells match
    runtime = resolved_runtime(cfg.train)
    folder = run_dir(cfg, runtime=runtime)
    try:
        return _run_in(cfg, vanilla, runtime, folder)
    except KeyboardInterrupt as err:   # before the folder is ours (loading data or the model): what is there stays
        if getattr(err, "run_folder", None) is None and (folder / RECORD_NAME).exists():
            err.run_folder = str(folder)   # a rerun resumes (or skips) it (`fishtune.cli`)
        raise


def _run_in(cfg: DictConfig, vanilla: DictConfig | None, runtime: dict[str, str], folder: Path) -> dict:
    """`run_experiment` once its run folder is named."""
    check_run_folder_place(cfg, folder)   # runs_root=a file: say so, not NotADirectoryError from the lock
    check_unlocked(folder)  # another live process writes there: stop now, touching nothing
    task = get_task(cfg.task.name)
    train_ex, eval_ex = _load_data(cfg, task)  # (seeded subsets: no global RNG) before a skip: it must be this data's
    data = _digests(train_ex, eval_ex)
    legacy = functools.partial(_digests, train_ex, eval_ex, legacy=True)  # computed only for an older record
    model_files = model_files_digest(cfg.model)
    existing = _read_own_record(cfg, runtime, folder, data, legacy=legacy, model_files=model_files,
                                revision=functools.partial(hub_revision, cfg.model))  # before any weights load
    if existing and existing.get("status") == "complete" and cfg.train.resume:
        return _skipped(folder, existing)

    reset_peak_memory()
    seed_everything(cfg.seed)
    device, autocast = pick_device(cfg.train)
    loaded = load_model(cfg.model, task, seed=cfg.seed)
    limit = max_tokens(loaded.model.config)
    if limit is not None and cfg.train.max_seq_length > limit:  # would fail mid-run, in the position embeddings
        raise ConfigError(f"train.max_seq_length={cfg.train.max_seq_length} is longer than the {limit} positions "
                          f"{cfg.model.name} has; lower it")
    model_total = sum(p.numel() for p in loaded.model.parameters())  # before the method adds anything
    # mask.keep_match: the matched method config is counted on a fresh copy of this very model.
    base = copy.deepcopy(loaded.model) if cfg.mask.name != "none" and cfg.mask.get("keep_match") is not None else None
    setup = apply_method(loaded.model, cfg.method)
    method_total, head_total = setup.count(setup.method_params), setup.count(setup.head_params)
    matched = matched_budget(base, cfg.mask, own_dense=setup.count(setup.dense),
                             vanilla=vanilla) if base is not None else None
    del base
    keep = None if cfg.mask.name == "none" else mask_budget(cfg.mask, method_total=method_total, head_total=head_total,
                                                              matched=matched)

    with RunFolderLock(folder), sigterm_interrupts():  # one writer per run folder, first write to last
        existing = _read_own_record(cfg, runtime, folder, data, legacy=legacy,  # as it is now that the folder is ours
                                    model_files=model_files, revision=loaded.revision)
        if existing and existing.get("status") == "complete" and cfg.train.resume:
            return _skipped(folder, existing)
        return _run_locked(cfg, runtime, folder, existing, data, task, loaded, setup, train_ex, eval_ex,
                           method_total, head_total, keep, device, autocast, backbone=model_total - head_total,
                           model_files=model_files)


def _digests(train_ex: list[Example], eval_ex: dict[str, list[Example]], *, legacy: bool = False) -> dict[str, str]:
    """The record's `data_sha256`: each split's `examples_digest`."""
    return {"train": examples_digest(train_ex, legacy=legacy),
            **{split: examples_digest(ex, legacy=legacy) for split, ex in eval_ex.items()}}


def _read_own_record(cfg: DictConfig, runtime: dict[str, str], folder: Path, data: dict[str, str], *,
                     legacy: Callable[[], dict[str, str]] | None = None, model_files: str | None = None,
                     revision: str | Callable[[], str | None] | None = None) -> dict | None:
    """The folder's record, refusing one that resuming or skipping would credit to this command:
    one of another configuration (only an explicit `output_dir` can hold one: a folder fishtune
    names carries its config's digest), a run on other data (`data_sha256`: the data files
    changed since, or `data.dir`/`data.source`, which do not name the folder, point elsewhere), or
    on another model: `model.path`'s files changed (`model_files_sha256`), or another snapshot of
    a Hub model (`model_revision`: `revision`, or `revision()`, asked of the Hub before any weights
    load, only for a record that would be resumed or when `model.revision` names a snapshot; a
    complete Hub run is otherwise skipped without asking it). Records older than a digest pass its check; records
    whose `data_sha256` predates float32 regression labels are checked against that form
    (`legacy()`, computed only for such a record)."""
    existing = read_record(folder / RECORD_NAME)
    if cfg.get("output_dir"):
        _refuse_foreign(folder, existing)
    _refuse_unusable(folder, existing, resume=bool(cfg.train.resume))
    if not (existing and cfg.train.resume):
        return existing
    theirs = ((existing.get("comparison") or {}).get("digest"), existing.get("seed"))
    ours = (comparison_digest(cfg, runtime=runtime), int(cfg.seed))
    if cfg.get("output_dir") and theirs[0] is not None and theirs != ours:
        raise ConfigError(f"output_dir {folder} holds a run of another configuration (seed {theirs[1]}, config "
                          f"digest {theirs[0]}; this command: seed {ours[1]}, digest {ours[0]}); choose another "
                          "output_dir, or pass train.resume=false to replace that run")
    recorded = existing.get("data_sha256")
    if recorded not in (None, data) and (legacy is None or recorded != legacy()):
        raise ConfigError(f"{folder} holds a run on other data than this command reads (example digests "
                          f"{existing['data_sha256']}, now {data}): the data changed, or data.dir/data.source "
                          "point elsewhere; use another runs_root (or output_dir), or train.resume=false to "
                          "replace that run")
    if callable(revision):  # a complete run is skipped on its recorded snapshot, unless model.revision asks for one
        asks = existing.get("status") != "complete" or cfg.model.get("revision") is not None
        revision = revision() if existing.get("model_revision") and asks else None
    if mismatch := other_model(existing, model_files=model_files, revision=revision):
        key, recorded_model, current = mismatch
        what = (f"the files of model.path {cfg.model.get('path')}" if key == "model_files_sha256"
                else f"the Hub snapshot of {cfg.model.get('hub_id')}")
        pin = f"pass model.revision={recorded_model} to go on with that run, " if key == "model_revision" and \
            existing.get("status") != "complete" else ""
        raise ConfigError(f"{folder} holds a run on another model than this command loads: {what} changed "
                          f"since ({key} {recorded_model}, now {current}); {pin}use another runs_root (or "
                          "output_dir), or train.resume=false to replace that run")
    return existing


def _refuse_unusable(folder: Path, existing: dict | None, *, resume: bool) -> None:
    """Refuse a record that is no usable run record (`record.record_problem`), touching nothing. One
    whose status no run writes is refused even with train.resume=false, as in an explicit output_dir
    (`_refuse_foreign`): it is not known to be fishtune's to replace. A complete one without a finite
    score is refused where it would be skipped as done; train.resume=false reruns it."""
    problem = record_problem(existing) if existing is not None else None
    if problem is None:
        return
    path = folder / RECORD_NAME
    if existing.get("status") not in RUN_STATUSES:
        raise ConfigError(f"{path} is not a fishtune run record: {problem}; move it away to run this cell "
                          "(nothing was changed)")
    if resume:
        raise ConfigError(f"{path} is not a usable run record: {problem}; pass train.resume=false to rerun "
                          "this cell (nothing was changed)")


def _refuse_foreign(folder: Path, existing: dict | None) -> None:
    """An explicit `output_dir` must be new, empty of run files, or a fishtune run folder: a run
    would overwrite another tool's `results.json` or `config.yaml` and delete its `mask.safetensors`."""
    if existing is not None and not (existing.get("status") in RUN_STATUSES and "output_dir" in existing):
        raise ConfigError(f"output_dir {folder} holds a {RECORD_NAME} that is not a fishtune run record; "
                          "choose another output_dir (nothing was changed)")
    if existing is None:
        run_files = ("config.yaml", CHECKPOINT, MASK_FILE, INIT_FILE, FINAL_FILE, "traceback.txt", ADAPTER_DIR)
        ours = [name for name in run_files if (folder / name).exists()]
        if ours:
            raise ConfigError(f"output_dir {folder} holds {', '.join(ours)} but no run record, so it is not a fishtune "
                              "run folder (or one cut short before its record was written); move those away or "
                              "choose another output_dir (nothing was changed)")


def _skipped(folder: Path, existing: dict) -> dict:
    log.info("already complete: %s (score %s); train.resume=false reruns it", folder, existing.get("score"))
    if problem := _config_file_problem(folder / "config.yaml"):  # the record is the result; the file is how it was made
        log.warning("%s: %s; the record stands, but `fishtune export` needs that file: train.resume=false reruns "
                    "the cell", folder / "config.yaml", problem)
    return {**existing, "status": "skipped"}


def _config_file_problem(path: Path) -> str | None:
    """Why `fishtune export` could not rebuild a complete run from its `config.yaml`, or None."""
    try:
        load_run_config(path)
    except ConfigError as err:
        return str(err)
    return None


def _run_locked(cfg: DictConfig, runtime: dict[str, str], folder: Path, existing: dict | None,
                data: dict[str, str], task: TaskSpec,
                loaded, setup: MethodSetup, train_ex, eval_ex, method_total: int, head_total: int,
                keep: int | None, device: torch.device, autocast: bool, backbone: int,
                model_files: str | None = None) -> dict:
    """Everything that writes into the run folder (the caller holds its lock)."""
    # Nothing was written so far; from here on the run folder is ours.
    resuming = bool(cfg.train.resume and (folder / CHECKPOINT).exists())
    if resuming:
        _check_resume_files(folder, masked=keep is not None)
    for partial in folder.glob(".*.tmp"):  # an atomic write cut short by SIGKILL (a checkpoint can be GBs)
        if partial.is_file():
            partial.unlink(missing_ok=True)
    if not resuming:
        for stale in (CHECKPOINT, MASK_FILE, INIT_FILE, FINAL_FILE, "traceback.txt"):
            (folder / stale).unlink(missing_ok=True)
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(folder / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    fields = {
        "status": "running", "task": task.name, "model": cfg.model.name, "model_source": loaded.source,
        **({"model_revision": loaded.revision} if loaded.revision else {}),
        **({"model_files_sha256": model_files} if model_files else {}),
        "test_model": loaded.is_tiny, "method": cfg.method.name, "method_tag": str(cfg.method.tag),
        "mask": cfg.mask.name, "mask_tag": str(cfg.mask.tag), "seed": int(cfg.seed),
        "trainable": {"peft_total": method_total, "peft_selected": keep or method_total,
                      "peft_live": keep or method_total, "head": head_total, "dense": setup.count(setup.dense),
                      "backbone": backbone,  # the pre-trained model without its head, before the method
                      **({"inference": setup.inference_count} if setup.inference_count is not None else {}),
                      "by_family": _family_totals(setup)},
        "padding_sensitive": setup.padding_sensitive,
        "output_dir": str(folder), "config": "config.yaml", "started_at": now(),
        "resumed": resuming, **environment(device), "precision": runtime["precision"], "data_sha256": data,
        "comparison": {"digest": comparison_digest(cfg, runtime=runtime),
                       "config": flatten(comparable_config(cfg, runtime=runtime))},
    }
    # A resumed run keeps what its earlier session recorded (mask stats, Fisher time, epochs), but
    # not how that session ended: that goes into its entry of `sessions`.
    this_session = _session(fields)
    earlier = _earlier_sessions(existing, this_session) if resuming and existing else []
    if resuming and existing:
        (folder / "traceback.txt").unlink(missing_ok=True)
        existing = {k: v for k, v in existing.items() if k not in ("error", "traceback", "finished_at")}
        if existing.get("trainable"):
            fields["trainable"] = existing["trainable"]  # counted from the saved mask by the first session
    fields["sessions"] = [*earlier, this_session]
    record = RunRecord(folder, {**existing, **fields} if resuming and existing else fields)
    if loaded.is_tiny:
        record.data["note"] = "TEST MODEL: random-init tiny model; this run is not a result"
    record.save()
    # Wall time accumulates over sessions: a resumed run adds to what its record had at the last save.
    start = time.perf_counter() - (record.data.get("time_s", {}).get("total", 0.0) if resuming else 0.0)
    try:
        _train_and_record(cfg, task, setup, loaded.tokenizer, loaded.model, train_ex, eval_ex, record,
                          folder, keep, device, autocast, resuming, start)
    except BaseException as err:
        # A run saved `complete` stays so: a signal or error in its last lines (deleting the
        # checkpoint, the final log) cannot undo a finished, recorded run.
        if record.saved_status != "complete":
            _record_end(record, folder, err)
        if isinstance(err, torch.cuda.OutOfMemoryError):
            raise FishtuneError(f"CUDA out of memory in {folder}; lower train.batch_size (now "
                                f"{cfg.train.batch_size}) or train.max_seq_length") from err
        raise
    return record.data


def _record_end(record: RunRecord, folder: Path, err: BaseException) -> None:
    """Save how an unfinished run ended: diverged, failed (out of memory, or with `traceback.txt`)
    or interrupted (Ctrl-C, SIGTERM: rerun the command to resume)."""
    if isinstance(err, DivergedError):
        record.update(status="diverged", error=str(err))
    elif isinstance(err, torch.cuda.OutOfMemoryError):
        record.update(status="failed", error="CUDA out of memory")
    elif isinstance(err, KeyboardInterrupt):
        record.update(status="interrupted")
        err.run_folder = str(folder)  # for the one-line message (`fishtune.cli`): what a rerun resumes
    else:
        atomic_write_text(folder / "traceback.txt", traceback.format_exc())
        err.traceback_file = str(folder / "traceback.txt")  # for the one-line error (`fishtune.cli`)
        record.update(status="failed", error=f"{type(err).__name__}: {err}", traceback="traceback.txt")
    record.update(finished_at=now()).save()


_SESSION_KEYS = ("started_at", "git", "versions", "hardware", "torch_threads")


def _session(fields: dict) -> dict:
    """One process's share of a run: when it started, its code (commit, source hashes), libraries
    and hardware. `training_sha256` is the Fisher cache's hash of the training code."""
    return {**{k: fields[k] for k in _SESSION_KEYS}, "training_sha256": TRAINING_SOURCE_SHA256}


def _earlier_sessions(existing: dict, this: dict) -> list[dict]:
    """The sessions of the record being resumed, the last one marked with how it ended. A record
    older than `sessions` gives its top-level fields as its one session. Resuming with other
    training code or another torch thread count (CPU kernels then sum in another order, so the run
    is no longer bit-identical to an uninterrupted one) is logged; the record names both sessions."""
    sessions = [dict(s) for s in existing.get("sessions") or [{k: existing.get(k) for k in _SESSION_KEYS}]]
    # `running` here means its process died without saving an end (SIGKILL, power loss)
    sessions[-1]["ended"] = "killed" if existing.get("status") == "running" else existing.get("status")
    if existing.get("error"):
        sessions[-1]["error"] = existing["error"]
    for key, what in (("training_sha256", "training code"), ("torch_threads", "torch thread count")):
        before, now = sessions[-1].get(key), this[key]
        if before is not None and before != now:
            log.warning("resuming %s with another %s than its last session (%s, now %s); its record lists both "
                        "sessions", existing.get("output_dir"), what, str(before)[:12], str(now)[:12])
    return sessions


def _load_data(cfg: DictConfig, task: TaskSpec) -> tuple[list[Example], dict[str, list[Example]]]:
    where = dict(source=cfg.data.source, data_dir=glue_dir(cfg), seed=cfg.seed)
    train = load_split(task, "train", max_samples=effective_max_train_samples(cfg), **where)
    check_train_size(cfg, len(train))
    # The dev subset (if any) is drawn with a fixed seed: every seed of a config is scored on the same examples.
    where["seed"] = int(cfg.train.eval_subset_seed)
    evals = {s: load_split(task, s, max_samples=cfg.train.max_eval_samples, **where) for s in task.eval_splits}
    return train, evals


def _train_and_record(cfg, task, setup: MethodSetup, tokenizer, base_model, train_ex, eval_ex, record: RunRecord,
                      folder: Path, keep: int | None, device, autocast: bool, resuming: bool, start: float) -> None:
    t = cfg.train
    types = uses_token_type_ids(base_model)
    enc = dict(tokenizer=tokenizer, max_length=t.max_seq_length, token_type_ids=types, regression=task.is_regression)
    train_data = encode(train_ex, **enc)
    eval_data = {s: encode(ex, **enc) for s, ex in eval_ex.items()}
    pad_id = tokenizer.pad_token_id
    model = setup.model.to(device)
    params = dict(model.named_parameters())

    mask, fish_mask = None, None
    if keep is not None:
        mask = _mask_for_run(cfg, setup, train_data, record, folder, keep, device, autocast, resuming, pad_id)
        # Bound now (tensors with nothing selected stop requiring grad before the optimizer is made);
        # the Trainer attaches it to its optimizer, as a user attaches a FishMask to theirs. The audit
        # below compares with peft_init.safetensors, so no snapshot is kept.
        fish_mask = FishMask(mask, families=setup.candidates, pairs=setup.factor_pairs).bind(model, snapshot=False)
        record.data["mask_storage_bytes"] = fish_mask.storage_bytes()
    elif not resuming:
        _save_params(folder / INIT_FILE, params, setup.method_params)
    initial = _load_tensors(folder / INIT_FILE)

    def evaluate() -> dict[str, float]:
        outputs = {s: (predict(model, d, batch_size=t.eval_batch_size, pad_id=pad_id, multiple=t.pad_to_multiple_of,
                               device=device, autocast=autocast), d.labels.numpy()) for s, d in eval_data.items()}
        return compute_metrics(task, outputs)

    def on_epoch_end(progress) -> None:
        time_s = dict(record.data.get("time_s", {}), total=round(time.perf_counter() - start, 3))
        record.update(epochs=progress.history, time_s=time_s).save()

    train_model = _compiled(model, t) if t.compile else model
    trainer = Trainer(train_model, t, device=device, autocast=autocast, seed=int(cfg.seed), pad_id=pad_id,
                      evaluate=evaluate, entry_mask=fish_mask, checkpoint_path=folder / CHECKPOINT,
                      on_epoch_end=on_epoch_end)
    progress = trainer.fit(train_data, resume=resuming)

    _save_params(folder / FINAL_FILE, params, setup.method_params)
    frozen_changed = count_changed(model, initial, mask) if mask is not None else 0
    # Entries that actually moved: a selected entry can stay put (e.g. LoRA A under a frozen zero B).
    record.data["trainable"]["peft_moved"] = count_changed(model, initial)
    history = progress.history
    best = max(history, key=lambda e: e["dev"]["score"])
    time_s = dict(record.data.get("time_s", {}))
    time_s.update(total=round(time.perf_counter() - start, 3),
                  train=round(progress.time_train, 3), eval=round(progress.time_eval, 3))
    record.update(epochs=history, best={"epoch": best["epoch"], "dev": best["dev"]},
                  last={"epoch": history[-1]["epoch"], "dev": history[-1]["dev"]},
                  score=history[-1]["dev"]["score"], best_score=best["dev"]["score"], time_s=time_s,
                  memory=peak_memory(device), frozen_changed=frozen_changed)
    if frozen_changed:
        record.update(status="failed", error=f"{frozen_changed} frozen entries changed", finished_at=now()).save()
        raise FishtuneError(f"{frozen_changed} entries outside the mask changed during training ({folder}); "
                            "this is a fishtune bug, please report it")
    if adapter_format(setup.model) is not None:
        _export_adapter(setup.model, folder / ADAPTER_DIR)
    baseline = majority_baseline(task, train_data, eval_data)
    record.update(status="complete", finished_at=now(), majority_baseline=baseline).save()
    (folder / CHECKPOINT).unlink(missing_ok=True)
    last = history[-1]["dev"]
    log.info("done: %s\n  dev (last epoch): %s\n  majority class:  %s", folder,
             ", ".join(f"{k} {v:.2f}" for k, v in last.items()), ", ".join(f"{k} {v:.2f}" for k, v in baseline.items()))


def majority_baseline(task: TaskSpec, train: Encoded, evals: dict[str, Encoded]) -> dict[str, float]:
    """Dev metrics of always predicting the training split's majority class (regression: its mean)."""
    import numpy as np

    outputs = {}
    for split, data in evals.items():
        n = len(data)
        if task.is_regression:
            preds = np.full(n, float(train.labels.mean()))
        else:
            preds = np.zeros((n, task.num_labels), dtype=np.float32)
            preds[:, int(train.labels.mode().values)] = 1.0
        outputs[split] = (preds, data.labels.numpy())
    return compute_metrics(task, outputs)


def _mask_for_run(cfg, setup: MethodSetup, train_data: Encoded, record: RunRecord, folder: Path, keep: int,
                  device, autocast: bool, resuming: bool, pad_id: int) -> dict[str, Tensor]:
    """Compute the mask (or reload it when resuming) and save mask + initial values."""
    params = dict(setup.model.named_parameters())
    if resuming and (folder / MASK_FILE).exists() and (folder / INIT_FILE).exists():
        mask = _load_tensors(folder / MASK_FILE)
        with torch.no_grad():
            for name, value in _load_tensors(folder / INIT_FILE).items():
                params[name].copy_(value)
        return mask
    def build(fisher: dict[str, Tensor] | None) -> MaskResult:
        return build_mask(setup.model, setup.method_params, cfg.mask, train_data, keep=keep, lr=float(cfg.train.lr),
                          seed=int(cfg.seed), pad_id=pad_id, device=device, autocast=autocast, fisher=fisher,
                          pairs=getattr(setup, "factor_pairs", ()), families=getattr(setup, "candidates", None))

    shapes = {n: tuple(params[n].shape) for n in setup.method_params}
    result, cache = build_with_cache(cfg, resolved_runtime(cfg.train), build, shapes, folder, setup.model, train_data)
    # The mask's cost: the estimate's own seconds, also when this run read it from the cache.
    fisher_s, warmup_s = (cache["fisher_time_s"], cache["warmup_time_s"]) if cache else (result.fisher_time_s,
                                                                                        result.warmup_time_s)
    time_s = dict(record.data.get("time_s", {}), fisher=round(fisher_s, 3), fisher_warmup=round(warmup_s, 3))
    stats = dict(result.stats, **({"fisher_cache": cache} if cache else {}))
    record.update(mask_stats=stats, time_s=time_s)
    record.data["trainable"]["peft_selected"] = int(sum(int(m.sum()) for m in result.mask.values()))
    record.data["trainable"]["peft_live"] = int(result.stats["live_selected"])  # selected minus never-moving
    result.fish.save(folder / MASK_FILE, timings=False)  # FishMask.load(<run>/mask.safetensors) gets families and info
    _save_params(folder / INIT_FILE, params, setup.method_params)
    record.save()
    log.info("mask: %d of %d method entries (%s); Fisher %.1f s%s", keep, setup.count(setup.method_params),
             ", ".join(f"{f} {v['share_of_mask']:.0%}" for f, v in stats["by_family"].items()), fisher_s,
             " (cached)" if cache and cache["hit"] else "")
    return result.mask


def _resume_files(folder: Path, *, masked: bool) -> list[Path]:
    """The files a resumed run reads besides its checkpoint: a masked run its mask and initial values
    (both, else it builds them again, `_mask_for_run`), a run without a mask its initial values."""
    if masked:
        pair = [folder / MASK_FILE, folder / INIT_FILE]
        return pair if all(p.exists() for p in pair) else []
    return [folder / INIT_FILE]


def _check_resume_files(folder: Path, *, masked: bool) -> None:
    """Before a resumed run writes anything: each file it will read is there and readable (its
    header: a truncated or foreign file is named here, not a bare SafetensorError mid-run)."""
    from safetensors import safe_open

    for path in _resume_files(folder, masked=masked):
        try:
            with safe_open(str(path), framework="pt") as handle:
                handle.keys()
        except Exception as err:  # missing, truncated, not safetensors: say which file, don't guess
            raise _unreadable(path, err, untouched=True) from err


def _load_tensors(path: Path) -> dict[str, Tensor]:
    """A run file's tensors (`load_file`), or one line naming the file that cannot be read."""
    try:
        return load_file(str(path))
    except Exception as err:
        raise _unreadable(path, err) from err


def _unreadable(path: Path, err: Exception, *, untouched: bool = False) -> FishtuneError:
    """One line: which run file cannot be read, why, and how to go on (`untouched`: before any write)."""
    return FishtuneError(f"cannot read {path} ({first_line(err)}), which resuming this run needs; run with "
                         f"train.resume=false to start it over{' (nothing was changed)' if untouched else ''}")


def _family_totals(setup: MethodSetup) -> dict[str, int]:
    """Entries per declared family: the candidates', then the dense group's (`dense:<family>`)."""
    totals: dict[str, int] = {}
    for prefix, group in (("", setup.candidates), ("dense:", setup.dense)):
        for name, family in group.items():
            totals[prefix + family] = totals.get(prefix + family, 0) + setup.count([name])
    return totals


def _export_adapter(model: torch.nn.Module, target: Path) -> None:
    """The adapter in its library's format (`methods.save_adapter`) into a temporary folder, then
    swapped in (never a half-written adapter)."""
    tmp, old = target.with_name(f".{target.name}.tmp"), target.with_name(f".{target.name}.old")
    for stale in (tmp, old):
        shutil.rmtree(stale, ignore_errors=True)
    try:
        save_adapter(model, tmp)
        if target.exists():
            target.rename(old)
        tmp.rename(target)
    except OSError as err:
        raise FishtuneError(f"cannot write the adapter to {target}: {err.strerror or err}") from err
    shutil.rmtree(old, ignore_errors=True)


def _compiled(model: torch.nn.Module, t: DictConfig) -> torch.nn.Module:
    """torch.compile with static shapes: one graph per padded length, at most
    max_seq_length / pad_to_multiple_of of them, so the recompile limit must allow that many."""
    import torch._dynamo

    shapes = -(-t.max_seq_length // t.pad_to_multiple_of) + 1
    torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, shapes)
    return torch.compile(model, dynamic=False)


def _save_params(path: Path, params: dict[str, Tensor], names: list[str]) -> None:
    tensors = {n: params[n].detach().cpu().contiguous() for n in names}
    atomic_write(path, lambda tmp: save_file(tensors, tmp))
