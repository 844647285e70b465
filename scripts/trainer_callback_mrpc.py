"""MiniLM-L6 + LoRA r=16 + FISH (r=8's count, 50%) on MRPC, two ways, same seed and settings:

A. `fishtune run experiment=methods_mrpc +pair=lora mask=fish seed=1`: the LoRA-FISH cell of the
   issue-9 methods table (3 epochs, full dev set), under results/runs; a complete record there is
   reused, not retrained;
B. transformers' `Trainer` + PEFT LoRA (r=16, alpha 32, dropout 0.1, query/value) +
   `FishCallback(keep=<A's selected count>)`: lr 2e-3, linear schedule with 6% warm-up, batch 32,
   max length 128, weight decay 0, clipping at 1.0, 3 epochs, AdamW (torch), length-grouped batches,
   seed 1; the callback's dense warm-up is 50 steps at the Trainer's lr and its Fisher takes 1024
   examples (both fishtune's defaults). The model is loaded as fishtune loads it (`load_model`, head
   seeded with the run seed) and LoRA applied with `get_peft_model`, so both sides start from the
   same weights.

Dev accuracy/F1 come from `fishtune.metrics` on both sides. What differs by construction with the
default order: the batch order and dropout stream of training (each trainer's own sampler/RNG), the
Fisher's sample (fishtune: a seeded shuffle of its encoded data; the callback: a seeded DataLoader
shuffle over the Trainer's dataset) and the warm-up batches; so the two scores agree up to
seed-level noise, not bit for bit (`--order fishtune` removes all but the mask's draw). Both sides
go to results/api/trainer-callback-mrpc-seed<N>.json.

    OMP_NUM_THREADS=1 nohup .venv/bin/python scripts/trainer_callback_mrpc.py > /tmp/trainer_callback_mrpc.log 2>&1 &
    .venv/bin/python scripts/trainer_callback_mrpc.py --smoke     # the Trainer side on 64 examples
    .venv/bin/python scripts/trainer_callback_mrpc.py --reuse-trainer   # A only (B kept from the result file)
    ... --reuse-trainer --given-mask   # and C: the Trainer with A's own mask (only the loops differ)
    ... --reuse-trainer --vanilla      # and D: the Trainer with vanilla LoRA r=8 (the control)
    ... --seed 2                       # A and B for seed 2 (results/api/trainer-callback-mrpc-seed2.json)
    ... --order fishtune               # E: B with fishtune's batch order and lr schedule
    ... --order shuffled               # F: B with the Trainer's plain shuffle (group_by_length=False)
    ... --reuse-trainer --given-mask --order fishtune   # C with fishtune's order (E's loop, A's mask)

Each run is stored under its key (trainer_callback, trainer_callback_given_mask, trainer_vanilla, with
the suffix _fishtune_order / _shuffled for another order); keys this call did not train are kept.

Batch order (`--order`): `hf_grouped` (B's default) is the Trainer's `group_by_length=True`, its
LengthGroupedSampler: mega-batches of 50 batches, each sorted longest first, batches taken in that
order (so every epoch runs long -> short three times on MRPC). `fishtune` is fishtune's own
`batching.train_order` (the same mega-batches, but the batch order shuffled) with fishtune's
`train.linear_schedule`, through `fishtune.trainer_batches`: there the Trainer's training is
fishtune's bit for bit (dropout stream included; tests/test_api.py), so with `--given-mask` only the
evaluation's padding differs from A, and with its own mask only the mask's draw (the callback's
Fisher sample and warm-up batches).
`shuffled` is the Trainer's plain random sampler.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parent.parent
EPOCHS = 3
SUFFIX = {"hf_grouped": "", "fishtune": "_fishtune_order", "shuffled": "_shuffled"}   # --order -> its result keys
ORDERS = tuple(SUFFIX)


def _arguments(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0], epilog="see the module docstring")
    p.add_argument("--seed", type=int, default=1, help="the run seed (default 1)")
    p.add_argument("--order", choices=ORDERS, default="hf_grouped", help="the Trainer's batch order")
    for flag in ("--smoke", "--reuse-trainer", "--given-mask", "--vanilla"):
        p.add_argument(flag, action="store_true")
    return p.parse_args(argv)


ARGS = _arguments() if __name__ == "__main__" else _arguments([])   # imported: the defaults
SEED, ORDER = ARGS.seed, ARGS.order
OUT = REPO / "results" / "api" / f"trainer-callback-mrpc-seed{SEED}.json"


def fishtune_side() -> dict:
    cmd = [sys.executable, "-m", "fishtune.cli", "run", "experiment=methods_mrpc", "+pair=lora", "mask=fish",
           f"seed={SEED}", "train.progress=false"]
    start = time.perf_counter()
    subprocess.run(cmd, cwd=REPO, check=True)
    wall = time.perf_counter() - start
    # The cell of today's configs: records made before mask.warmup_order existed sit beside it.
    from omegaconf import OmegaConf
    order = OmegaConf.load(REPO / "configs" / "mask" / "fish.yaml").warmup_order
    cells = (REPO / "results" / "runs" / "mrpc" / "minilm-l6" / "lora-r16" / "fish-match.lora-r8-warmup").glob(
        f"seed{SEED}-*/results.json")
    records = [(path, json.loads(path.read_text())) for path in cells]
    (path, rec), = [(p, r) for p, r in records if r["comparison"]["config"].get("mask.warmup_order") == order]
    assert rec["comparison"]["config"]["train.epochs"] == EPOCHS, rec["comparison"]["config"]
    return {"record": str(path.relative_to(REPO)), "mask_file": str(path.parent / "mask.safetensors"),
            "dev": rec["last"]["dev"], "wall_s_this_call": round(wall, 1),
            "time_s": rec["time_s"], "frozen_changed": rec["frozen_changed"],
            "selected": rec["trainable"]["peft_selected"], "warmup_order": order,
            "by_family": {f: v["selected"] for f, v in rec["mask_stats"]["by_family"].items()}}


def trainer_side(out: Path, keep: int | None, smoke: bool = False, mask_file: Path | None = None,
                 vanilla: bool = False, order: str = "hf_grouped") -> dict:
    from datasets import Dataset
    from omegaconf import OmegaConf
    from peft import LoraConfig, get_peft_model
    from transformers import DataCollatorWithPadding, Trainer, TrainingArguments

    from fishtune import FishCallback
    from fishtune.data import load_split
    from fishtune.metrics import compute_metrics
    from fishtune.models import load_model
    from fishtune.tasks import get_task
    from fishtune.trainer_batches import fishtune_batches_trainer

    start = time.perf_counter()
    task = get_task("mrpc")
    model_cfg = OmegaConf.load(REPO / "configs" / "model" / "minilm-l6.yaml")
    loaded = load_model(model_cfg, task, seed=SEED)
    tokenizer = loaded.tokenizer
    r = 8 if vanilla else 16   # vanilla: the control, LoRA r=8 without a mask (fishtune's lora-r8 / none cell)
    model = get_peft_model(loaded.model, LoraConfig(task_type="SEQ_CLS", r=r, lora_alpha=2 * r, lora_dropout=0.1,
                                                    target_modules=["query", "value"]))

    def dataset(split: str) -> Dataset:
        examples = load_split(task, split, source="local", data_dir=REPO / "data" / "glue",
                              max_samples=64 if smoke else None, seed=SEED)
        enc = tokenizer([e.text_a for e in examples], [e.text_b for e in examples], truncation=True, max_length=128)
        return Dataset.from_dict({**enc, "label": [e.label for e in examples]})

    train, dev = dataset("train"), dataset("dev")
    args = TrainingArguments(
        output_dir=str(out), num_train_epochs=1 if smoke else EPOCHS, per_device_train_batch_size=32, per_device_eval_batch_size=128,
        learning_rate=2e-3, lr_scheduler_type="linear", warmup_ratio=0.06, weight_decay=0.0, max_grad_norm=1.0,
        optim="adamw_torch", group_by_length=order == "hf_grouped", seed=SEED, report_to=[], use_cpu=True, save_strategy="no",
        eval_strategy="no", logging_steps=20, disable_tqdm=True, dataloader_pin_memory=False)
    if vanilla:
        callback = None
    elif mask_file is not None:   # fishtune run's own mask: only the training loops differ
        callback = FishCallback(mask=mask_file)
    else:
        callback = FishCallback(keep=keep, keep_ratio=0.5 if keep is None else None, strategy="fish",
                                warmup_steps=2 if smoke else 50, num_samples=32 if smoke else 1024)
    initial = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    trainer_cls = Trainer
    if order == "fishtune":
        trainer_cls = fishtune_batches_trainer(Trainer, [len(ids) for ids in train["input_ids"]], batch_size=32, seed=SEED)
    trainer = trainer_cls(model=model, args=args, train_dataset=train, processing_class=tokenizer,
                          data_collator=DataCollatorWithPadding(tokenizer, pad_to_multiple_of=8),
                          callbacks=[callback] if callback else [])
    t_train = time.perf_counter()
    trainer.train()
    train_s = time.perf_counter() - t_train
    t_eval = time.perf_counter()
    pred = trainer.predict(dev)
    eval_s = time.perf_counter() - t_eval
    dev_metrics = compute_metrics(task, {"dev": (pred.predictions, pred.label_ids)})
    if callback is None:
        return {"dev": dev_metrics, "wall_s": round(time.perf_counter() - start, 1),
                "time_s": {"train": round(train_s, 1), "eval": round(eval_s, 1)},
                "trainable": sum(p.numel() for n, p in model.named_parameters() if p.requires_grad and "lora_" in n)}
    mask = callback.mask
    params = dict(model.named_parameters())
    moved_frozen = sum(int((params[n] != initial[n])[~m].sum()) for n, m in mask.mask.items())
    return {"dev": dev_metrics, "wall_s": round(time.perf_counter() - start, 1),
            "time_s": {"train_incl_mask": round(train_s, 1), "eval": round(eval_s, 1),
                       "fisher": mask.info.get("fisher_time_s"), "fisher_warmup": mask.info.get("warmup_time_s")},
            "audit": callback.audit, "frozen_changed_recount": moved_frozen, "selected": mask.selected,
            "by_family": {f: v["selected"] for f, v in mask.stats["by_family"].items()}, "mask_info": mask.info}


def main() -> None:
    if ARGS.smoke:   # the Trainer side on 64 examples: checks the script, measures nothing
        with tempfile.TemporaryDirectory() as tmp:
            print(json.dumps(trainer_side(Path(tmp), keep=None, smoke=True, order=ORDER), indent=1))
        return
    print("== A: fishtune run (the methods_mrpc LoRA-FISH cell) ==", flush=True)
    a = fishtune_side()
    print(json.dumps(a, indent=1), flush=True)
    suffix = SUFFIX[ORDER]
    runs = {}   # what this call trains, each under its result key
    if not ARGS.reuse_trainer:   # B (E, F with --order): the callback computes its own mask
        runs[f"trainer_callback{suffix}"] = dict(keep=a["selected"])
    if ARGS.given_mask:          # C: the Trainer with A's mask, FishCallback(mask=...)
        runs[f"trainer_callback_given_mask{suffix}"] = dict(keep=None, mask_file=Path(a["mask_file"]))
    if ARGS.vanilla:             # D: the control, vanilla LoRA r=8 (no callback)
        runs[f"trainer_vanilla{suffix}"] = dict(keep=None, vanilla=True)
    done = {}
    for key, kwargs in runs.items():
        print(f"== {key} (order {ORDER}) ==", flush=True)
        with tempfile.TemporaryDirectory(prefix="fishtune-trainer-mrpc-") as tmp:
            done[key] = trainer_side(Path(tmp), order=ORDER, **kwargs)
        print(json.dumps(done[key], indent=1), flush=True)
    import torch
    import transformers

    from fishtune.provenance import AT_IMPORT
    # Read just before writing: another process (another --order) may have added its keys meanwhile.
    result = json.loads(OUT.read_text()) if OUT.is_file() else {}
    result.update(done)
    result.update({"what": f"MiniLM-L6, MRPC full dev, LoRA r=16, FISH at r=8's count, {EPOCHS} epochs, seed {SEED}",
                   "threads": os.environ.get("OMP_NUM_THREADS", "unset"), "torch": torch.__version__,
                   "transformers": transformers.__version__, "git": AT_IMPORT, "fishtune_run": a})
    if "trainer_callback" in result:
        b = result["trainer_callback"]
        assert b["selected"] == a["selected"], (b["selected"], a["selected"])
        result["difference"] = {k: round(b["dev"][k] - a["dev"][k], 4) for k in ("accuracy", "f1", "score")}
    if any(k.startswith("trainer_vanilla") for k in result):
        vanilla_cell = REPO / "results" / "runs" / "mrpc" / "minilm-l6" / "lora-r8" / "none"
        found = sorted(vanilla_cell.glob(f"seed{SEED}-*/results.json"))
        if len(found) != 1:
            sys.exit(f"trainer_callback_mrpc: expected one record of vanilla LoRA r=8 seed {SEED} under "
                     f"{vanilla_cell}, found {len(found)}; run `fishtune run experiment=methods_mrpc +pair=lora "
                     f"mask=none seed={SEED}` first (or move the extra folders away)")
        (rec_path,) = found
        result["fishtune_vanilla"] = {"record": str(rec_path.relative_to(REPO)),
                                      "dev": json.loads(rec_path.read_text())["last"]["dev"]}
    OUT.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = OUT.with_suffix(f".json.tmp{os.getpid()}")
    tmp_out.write_text(json.dumps(result, indent=1) + "\n")
    tmp_out.replace(OUT)
    print(f"\n{result['what']} -> {OUT.relative_to(REPO)}")
    rows = [("fishtune run", "fishtune_run"), ("fishtune run, LoRA r=8", "fishtune_vanilla")]
    rows += [(f"Trainer {what}, order {order}", f"{key}{SUFFIX[order]}") for order in ORDERS
             for what, key in (("+ FishCallback", "trainer_callback"), ("+ fishtune's mask", "trainer_callback_given_mask"),
                               ("LoRA r=8", "trainer_vanilla"))]
    for name, key in rows:
        if key in result:
            d = result[key]["dev"]
            print(f"  {name:44s} acc {d['accuracy']:.2f}  F1 {d['f1']:.2f}  score {d['score']:.2f}")


if __name__ == "__main__":
    main()
