"""Bad input: one clear line, exit status != 0, nothing written to an existing run folder."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch

from conftest import GLUE, TINY, complete_record, compose_run, records


@pytest.fixture
def cli(tmp_path: Path, monkeypatch, capsys):
    """Run `fishtune <args>` in-process from tmp_path; returns (exit code, stderr)."""
    from fishtune.cli import main

    monkeypatch.chdir(tmp_path)

    def run(*args: str) -> tuple[int, str]:
        code = main(list(args))
        return code, capsys.readouterr().err

    return run


def _glue_copy(tmp_path: Path, task_dir: str, train_text: str | None = None) -> Path:
    root = tmp_path / "glue"
    shutil.copytree(GLUE / task_dir, root / task_dir)
    if train_text is not None:
        (root / task_dir / "train.tsv").write_text(train_text, encoding="utf-8")
    return root


# (overrides, words the error must contain); Hydra reports composition errors, fishtune the rest.
CASES = [
    (["task=mrcp"], ["task", "mrpc"]),                              # unknown task: lists choices
    (["model=roberta-bass"], ["model", "roberta-base"]),
    (["method=loraa"], ["method", "lora"]),
    (["mask=fishh"], ["mask", "fish"]),
    (["train.lrr=0.1"], ["train.lrr"]),                             # misspelt key
    (["mask=fish", "mask.keep_ratio=1.5"], ["mask.keep_ratio", "(0, 1]"]),
    (["mask=fish", "mask.keep_ratio=0"], ["mask.keep_ratio"]),
    (["mask=fish", "mask.num_samples=0"], ["mask.num_samples", ">= 1"]),
    (["method.r=0"], ["method.r", ">= 1"]),
    (["train.lr=0"], ["train.lr", "> 0"]),
    (["train.batch_size=0"], ["train.batch_size"]),
    (["mask=fish", "mask.keep=100000000"], ["mask.keep", "larger than"]),
    (["mask=fish", "mask.keep=100.7"], ["mask.keep", "whole number"]),          # not truncated to 100
    (["data.dir=/nonexistent/glue"], ["mrpc", "/nonexistent/glue", "data.dir"]),
    (["model=roberta-base"], ["roberta-base", "model.path"]),       # offline, not cached
    (["-m", "--cfg", "job"], ["Only one of"]),                      # Hydra's own argument check
    (["mask=fish", "mask.live=true", "mask.scope=per_tensor"], ["mask.live", "global"]),
    (["train.eval_subset_seed=x"], ["train.eval_subset_seed"]),
    (["+pair=lora", "method.alpha=16", "mask=fish"], ["different LoRA scales", "method.scale=2"]),
    (["+pair=lora", "method.r=32", "mask=fish"], ["pair's method keys are set on the command line", "configs/pair/"]),
    (["method.r=16", "mask=fish", "mask.keep_match=lora", "mask.head_in_budget=true"], ["mask.head_in_budget"]),
    (["model.path=/some/folder"], ["tiny test model", "model.path"]),      # not read: would only rename the folder
    (["+model.tiny.max_position_embeddings=64"], ["model.tiny.max_position_embeddings"]),
    (["model.tiny.hidden_size=31"], ["multiple of model.tiny.num_attention_heads"]),
    # wrong types: named, never a comparison error or a silent cast (train.epochs=1.5, mask.keep=2.5)
    (["train.epochs=abc"], ["train.epochs", "an integer >= 1", "'abc'"]),
    (["train.epochs=1.5"], ["train.epochs", "an integer >= 1"]),
    (["train.lr=abc"], ["train.lr", "a finite number > 0"]),
    (["seed=x"], ["seed", "an integer in [0, "]),
    (["seed=9223372036854775808"], ["seed", "an integer in [0, 9223372036854775807]"]),   # past what a record holds
    (["mask=fish", "mask.keep=abc"], ["mask.keep", "whole number"]),
    (["mask=fish", "mask.seed=abc"], ["mask.seed", "an integer"]),
    (["mask=fish", "mask.head_in_budget=abc"], ["mask.head_in_budget", "true or false"]),
    (["mask=fish", "mask.num_samples=1.5"], ["mask.num_samples"]),
    (["train.resume=no"], ["train.resume", "true or false"]),
    (["train.grad_clip=-1"], ["train.grad_clip", "null or a finite number > 0"]),   # would train uphill
    (["train.log_every=0"], ["train.log_every", ">= 1"]),
    (["train.pad_to_multiple_of=0"], ["train.pad_to_multiple_of", ">= 1"]),
    (["method.r=abc"], ["cannot resolve the config"]),                       # method.alpha interpolates r
    (["+train.lrr=0.1"], ["unknown key train.lrr", "lr"]),                   # `+` adds a key nothing reads
    (["+foo=1"], ["unknown key config.foo"]),
    # inf passes a bare range check (nan does not): it would only diverge, in a run folder of its own
    (["train.lr=inf"], ["train.lr", "a finite number > 0", "inf"]),
    (["method.alpha=inf"], ["method.alpha", "a finite number > 0"]),
    (["method.scale=inf"], ["method.scale", "a finite number > 0"]),
    (["train.warmup_ratio=-inf"], ["train.warmup_ratio", "a finite number in [0, 1)"]),
    (["mask=fish", "mask.keep_ratio=inf"], ["mask.keep_ratio", "a finite number"]),
    # a deleted key the run reads: one line, not a failed record (ConfigAttributeError) in a new run folder
    (["~train.epochs"], ["train.epochs is missing"]),
    (["~train.lr"], ["train.lr is missing"]),
    (["~train.batch_size"], ["train.batch_size is missing"]),
    (["~data.source"], ["data.source is missing"]),
    (["~task.name"], ["task.name is missing"]),
    (["~mask"], ["the config needs the sections", "mask"]),      # read before the others: was a ConfigAttributeError
    (["train.max_seq_length=1000"], ["train.max_seq_length=1000", "514 positions"]),   # before anything is written
    # a config group set to null: Hydra raises a bare ValueError, which it would print with 20 lines of its frames
    (["mask=null"], ["mask=null", "config group mask", "fish, fish_live, none, random, reverse"]),
    (["-m", "mask=null"], ["mask=null", "config group mask"]),
    (["-m", "seed=1,2", "method=null"], ["method=null", "config group method", "lora"]),
]


@pytest.mark.parametrize("overrides,words", CASES, ids=[" ".join(c[0]) for c in CASES])
def test_bad_input_gives_one_clear_error(overrides: list[str], words: list[str], tmp_path: Path, cli) -> None:
    code, err = cli("run", *TINY, *overrides)
    assert code != 0
    assert "Traceback" not in err, err
    for word in words:
        assert word in err, f"{word!r} not in: {err}"
    assert not (tmp_path / "results" / "runs").exists() or not list((tmp_path / "results").rglob("results.json"))


HYDRA_ERRORS = [   # Hydra's own errors: raised to `fishtune run` and said in one line
    (["mask=nosuch"], ["Could not find 'mask/nosuch'", "fish fish_live none random reverse"]),
    (["foo=1"], ["Could not override 'foo'", "+foo=1"]),
    (["train.lr=[1"], ["no viable alternative at input '[1'"]),
    (["hydra.job.chdir=maybe"], ["hydra.job.chdir=maybe", "not a valid bool"]),
    (["hydra/launcher=nosuch"], ["Could not find 'hydra/launcher/nosuch'", "joblib"]),
    (["mask=null"], ["mask=null", "config group mask"]),
    (["-m", "mask=nosuch"], ["Could not find 'mask/nosuch'"]),           # a sweep's, too
    (["-m", "seed=1,2", "train.lr=[1"], ["no viable alternative at input '[1'"]),
]


@pytest.mark.parametrize("overrides,words", HYDRA_ERRORS, ids=[" ".join(c[0]) for c in HYDRA_ERRORS])
def test_hydra_errors_of_one_run_are_one_line(overrides: list[str], words: list[str], cli, monkeypatch) -> None:
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    code, err = cli("run", *TINY, *overrides)
    assert code in (1, 2) and len(err.strip().splitlines()) == 1, err
    assert err.startswith("fishtune: error: ") and all(word in err for word in words), err
    assert "HYDRA_FULL_ERROR" not in os.environ   # set only while Hydra runs


def test_hydra_full_error_of_ones_own_still_gives_the_traceback(cli, monkeypatch) -> None:
    from hydra.errors import MissingConfigException

    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    with pytest.raises(MissingConfigException):
        cli("run", *TINY, "mask=nosuch")
    assert os.environ["HYDRA_FULL_ERROR"] == "1"


def test_hydra_flags_are_read_as_argparse_reads_them(cli, capsys) -> None:
    from fishtune.cli import main

    assert main(["run", *TINY, "--cfg", "job", "--pack", "task"]) == 0   # a prefix of --package, with its value
    assert "name: mrpc" in capsys.readouterr().out
    code, err = cli("run", *TINY, "-i", "plugin")   # a typo after --info: argparse's own refusal, nothing run
    assert code == 2 and "invalid choice: 'plugin'" in err


@pytest.mark.parametrize("content,words", [
    ("sentence\tlabel\nfine film \t1\nbad row without a tab\n", ["train.tsv", "line 3"]),
    ("text\tlabel\nfine film \t1\n", ["train.tsv", "line 1", "header"]),
    ("sentence\tlabel\nfine film \t7\n", ["train.tsv", "line 2", "7"]),
    ("sentence\tlabel\n", ["train.tsv", "no"]),
])
def test_malformed_data_names_file_and_line(content: str, words: list[str], tmp_path: Path, cli) -> None:
    glue = _glue_copy(tmp_path, "SST-2", content)
    code, err = cli("run", *TINY, "task=sst2", f"data.dir={glue}")
    assert code != 0 and "Traceback" not in err
    for word in words:
        assert word in err, f"{word!r} not in: {err}"


def test_bad_rerun_leaves_an_existing_run_folder_untouched(run_cli, tmp_path: Path) -> None:
    assert run_cli() == 0
    (rec,) = records(tmp_path / "runs")
    folder = Path(rec["output_dir"])
    def contents() -> dict[str, bytes]:
        return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}

    before = contents()
    assert run_cli("train.lr=0", f"output_dir={folder}") != 0
    assert run_cli("train.resume=false", "data.dir=/nonexistent", f"output_dir={folder}") != 0
    assert contents() == before


def test_a_bad_value_in_a_late_cell_stops_the_sweep_before_any_cell_runs(run_cli, tmp_path: Path, capsys) -> None:
    assert run_cli("-m", "train.lr=1e-3,0") == 2
    err = capsys.readouterr().err
    assert "cell #1 (train.lr=0): train.lr must be a finite number > 0, got 0; no cell was run" in err
    assert not records(tmp_path / "runs")


def test_an_error_before_the_run_folder_points_at_no_traceback_file(run_cli, tmp_path: Path, monkeypatch,
                                                                    capsys) -> None:
    from fishtune import runner

    def broken(*args, **kwargs):
        raise RuntimeError("no model here")

    monkeypatch.setattr(runner, "load_model", broken)
    assert run_cli() == 1
    err = capsys.readouterr().err
    assert "RuntimeError: no model here (raised at " in err and "nothing was written" in err
    assert "traceback.txt" not in err and not records(tmp_path / "runs")


def test_an_output_dir_holding_files_of_another_tool_is_refused_untouched(run_cli, tmp_path: Path, capsys) -> None:
    for number, files in enumerate(({"results.json": '{"acc": 0.9}', "mask.safetensors": "MINE"},
                                    {"config.yaml": "my: config\n", "mask.safetensors": "MINE"},
                                    {"results.json": "null"}, {"results.json": '[{"acc": 0.9}]'})):
        folder = tmp_path / f"theirs{number}"
        folder.mkdir()
        for name, text in files.items():
            (folder / name).write_text(text)
        assert run_cli(f"output_dir={folder}") == 1
        assert "nothing was changed" in capsys.readouterr().err
        assert {p.name: p.read_text() for p in folder.iterdir()} == files


def test_a_failing_cell_does_not_stop_the_sweep(run_cli, tmp_path: Path, capsys) -> None:
    # lr 1e9 makes the loss NaN/inf: that cell ends `diverged`, the next one still runs.
    code = run_cli("-m", "train.lr=1e9,1e-3", "train.log_every=1")
    assert code == 1
    statuses = sorted(r["status"] for r in records(tmp_path / "runs"))
    assert statuses == ["complete", "diverged"]
    diverged = next(r for r in records(tmp_path / "runs") if r["status"] == "diverged")
    assert "loss became" in diverged["error"] and "score" not in diverged
    assert "2 cells: 1 completed, 0 skipped (already complete), 0 failed, 1 diverged" in capsys.readouterr().err


def test_an_exception_records_failed_with_traceback(run_cli, tmp_path: Path, monkeypatch, capsys) -> None:
    from fishtune import train

    def boom(*args, **kwargs):
        raise RuntimeError("simulated crash")

    monkeypatch.setattr(train.Trainer, "_step", boom)
    assert run_cli() == 1
    (rec,) = records(tmp_path / "runs")
    assert rec["status"] == "failed" and "simulated crash" in rec["error"]
    assert "simulated crash" in (Path(rec["output_dir"]) / "traceback.txt").read_text()
    assert f"(traceback: {Path(rec['output_dir']) / 'traceback.txt'})" in capsys.readouterr().err


def test_cuda_oom_suggests_a_smaller_batch(run_cli, tmp_path: Path, monkeypatch, capsys) -> None:
    from fishtune import train

    def oom(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(train.Trainer, "_step", oom)
    assert run_cli() == 1
    assert "train.batch_size" in capsys.readouterr().err
    (rec,) = records(tmp_path / "runs")
    assert rec["status"] == "failed" and "out of memory" in rec["error"]


def test_an_output_dir_holding_another_configs_run_is_refused_untouched(run_cli, tmp_path: Path, capsys) -> None:
    # resuming or skipping it would credit that run (its mask, its epochs) to this command's config
    folder = tmp_path / "mine"
    assert run_cli(f"output_dir={folder}") == 0
    before = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}
    capsys.readouterr()
    for other in ("seed=2", "train.lr=0.01"):
        assert run_cli(other, f"output_dir={folder}") == 1
        err = capsys.readouterr().err
        assert f"output_dir {folder} holds a run of another configuration" in err and "Traceback" not in err
    assert {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()} == before
    assert run_cli(f"output_dir={folder}") == 0  # the same config: skipped, as before
    assert run_cli("seed=2", "train.resume=false", f"output_dir={folder}") == 0  # replacing it is explicit
    (rec,) = records(folder)
    assert rec["seed"] == 2 and rec["status"] == "complete"


def test_a_complete_run_on_other_data_is_not_skipped_as_this_ones(run_cli, tmp_path: Path, capsys) -> None:
    # data.dir does not name the run folder: a rerun reading other examples must not reuse the record
    glue = _glue_copy(tmp_path, "SST-2")
    assert run_cli("task=sst2", f"data.dir={glue}") == 0
    (rec,) = records(tmp_path / "runs")
    assert set(rec["data_sha256"]) == {"train", "dev"}
    train = glue / "SST-2" / "train.tsv"
    lines = train.read_text(encoding="utf-8").splitlines()
    train.write_text("\n".join([lines[0]] + [f"{line[:-1]}{1 - int(line[-1])}" for line in lines[1:]]) + "\n",
                     encoding="utf-8")
    capsys.readouterr()
    assert run_cli("task=sst2", f"data.dir={glue}") == 1
    err = capsys.readouterr().err
    assert "holds a run on other data than this command reads" in err and "Traceback" not in err
    assert records(tmp_path / "runs") == [rec]
    assert run_cli("task=sst2", f"data.dir={glue}", "train.resume=false") == 0
    (again,) = records(tmp_path / "runs")
    assert again["data_sha256"]["train"] != rec["data_sha256"]["train"]
    assert again["data_sha256"]["dev"] == rec["data_sha256"]["dev"]


def test_a_record_with_the_digest_of_float64_scores_is_still_this_datas(run_cli, tmp_path: Path, capsys) -> None:
    """STS-B records made before the float32 label digest carry the legacy one: still skipped as complete."""
    from fishtune import runner
    from fishtune.tasks import get_task

    cell = ("task=stsb", "train.max_train_samples=64", "train.max_eval_samples=64")
    assert run_cli(*cell) == 0
    (rec,) = records(tmp_path / "runs")
    path = Path(rec["output_dir"]) / "results.json"
    legacy = runner._digests(*runner._load_data(compose_run(*TINY, *cell), get_task("stsb")), legacy=True)
    assert legacy != rec["data_sha256"]  # STS-B's decimals such as 2.33333333333333 are not float32s
    path.write_text(json.dumps(dict(rec, data_sha256=legacy)))
    capsys.readouterr()
    assert run_cli(*cell) == 0
    assert "already complete" in capsys.readouterr().err
    # ... and one that did not finish resumes (the check runs again once the folder is locked)
    path.write_text(json.dumps(dict(rec, data_sha256=legacy, status="interrupted")))
    assert run_cli(*cell) == 0
    assert json.loads(path.read_text())["status"] == "complete"
    capsys.readouterr()
    path.write_text(json.dumps(dict(rec, data_sha256=dict(legacy, train="0" * 16))))
    assert run_cli(*cell) == 1 and "holds a run on other data" in capsys.readouterr().err


def _folder_contents(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _plan_status(tmp_path: Path) -> str:
    from fishtune.plan import plan

    (cell,) = plan([*TINY, f"runs_root={tmp_path / 'runs'}"])
    return cell.status


def test_a_record_with_a_status_no_run_writes_is_refused_untouched(run_cli, tmp_path: Path, capsys) -> None:
    # as under an explicit output_dir: not known to be fishtune's, so neither replaced nor resumed
    assert run_cli() == 0
    (rec,) = records(tmp_path / "runs")
    folder = Path(rec["output_dir"])
    for status in ("weird", 5):
        (folder / "results.json").write_text(json.dumps(dict(rec, status=status)))
        before = _folder_contents(folder)
        capsys.readouterr()
        for extra in ((), ("train.resume=false",)):
            assert run_cli(*extra) == 1
            err = capsys.readouterr().err
            assert f"{folder / 'results.json'} is not a fishtune run record: its status {status!r} is not a run " \
                   "status" in err and "move it away" in err and "nothing was changed" in err, err
            assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
            assert _folder_contents(folder) == before
        assert _plan_status(tmp_path) == "malformed"


def test_a_complete_record_without_a_score_is_not_taken_as_done(run_cli, tmp_path: Path, capsys) -> None:
    # the report calls it malformed: run does not skip it as complete (score None), plan does not count it
    assert run_cli() == 0
    (rec,) = records(tmp_path / "runs")
    folder = Path(rec["output_dir"])
    for record in ({"status": "complete"}, {k: v for k, v in rec.items() if k != "score"}, dict(rec, score="81.5"),
                   dict(rec, score=float("nan"))):
        (folder / "results.json").write_text(json.dumps(record))
        before = _folder_contents(folder)
        capsys.readouterr()
        assert run_cli() == 1
        err = capsys.readouterr().err
        assert f"{folder / 'results.json'} is not a usable run record: it says complete, but its score is" in err
        assert "train.resume=false" in err and "nothing was changed" in err and "already complete" not in err, err
        assert _folder_contents(folder) == before
        assert _plan_status(tmp_path) == "malformed"
    assert run_cli("train.resume=false") == 0   # reruns it
    (again,) = records(tmp_path / "runs")
    assert again["status"] == "complete" and isinstance(again["score"], float)
    assert _plan_status(tmp_path) == "complete"


@pytest.mark.parametrize("mask,name", [("fish", "mask.safetensors"), ("fish", "peft_init.safetensors"),
                                       ("none", "peft_init.safetensors")])
def test_a_damaged_run_file_is_named_before_a_resume_writes_anything(mask: str, name: str, run_cli, tmp_path: Path,
                                                                     capsys) -> None:
    # as a damaged checkpoint.pt is: the file, and how to go on; not a bare SafetensorError in a failed record
    assert run_cli(f"mask={mask}") == 0
    (rec,) = records(tmp_path / "runs")
    folder = Path(rec["output_dir"])
    (folder / "results.json").write_text(json.dumps(dict(rec, status="interrupted")))
    (folder / "checkpoint.pt").write_bytes(b"resumed from")   # never read: the run files are checked first
    (folder / name).write_bytes(b"\x00\x01")
    before = _folder_contents(folder)
    capsys.readouterr()
    assert run_cli(f"mask={mask}") == 1
    err = capsys.readouterr().err
    assert f"fishtune: error: cannot read {folder / name} (" in err, err
    assert "train.resume=false" in err and "nothing was changed" in err and "Traceback" not in err, err
    assert _folder_contents(folder) == before


def test_plan_names_the_cell_whose_config_is_refused(tmp_path: Path, capsys) -> None:
    # as `fishtune run -m` does (test_a_bad_value_in_a_late_cell_stops_the_sweep_before_any_cell_runs)
    from fishtune.plan import main as plan_main

    assert plan_main([*TINY, f"runs_root={tmp_path}", "seed=1,2", "method.r=4,0"]) == 2
    assert capsys.readouterr().err == ("fishtune plan: error: cell #1 (seed=1 method.r=0): method.r must be an "
                                       "integer >= 1, got 0\n")
    assert plan_main([*TINY, f"runs_root={tmp_path}", "mask=null"]) == 2   # not Hydra's traceback
    err = capsys.readouterr().err
    assert err.startswith("fishtune plan: error: cannot compose ") and err.count("\n") == 1, err
    assert "mask=null: the config group mask takes one of its files" in err


@pytest.mark.parametrize("timing,status", [("fast", "malformed"), ([1, 2], "malformed"),
                                           ({"total": float("nan")}, "malformed"), ({"total": -3e9}, "malformed"),
                                           ({"total": 1e308}, "malformed"), ({"total": True}, "malformed"),
                                           ({"total": 5e8}, "complete")])
def test_plan_estimates_from_sane_cell_times_only(timing, status: str, tmp_path: Path, capsys) -> None:
    # a damaged time_s makes the record malformed (as the report lists it); one in the record's range but
    # longer than a cell takes (~16 years) stays complete; neither skews the estimate
    from fishtune.plan import main as plan_main
    from fishtune.plan import plan

    sweep = [*TINY, f"runs_root={tmp_path}", "seed=1,2,3"]
    cells = plan(sweep)
    for cell, seconds in zip(cells, ({"total": 3600.0}, timing)):
        cell.folder.mkdir(parents=True)
        (cell.folder / "results.json").write_text(json.dumps(complete_record(time_s=seconds)))
    assert [(c.status, c.seconds) for c in plan(sweep)] == [("complete", 3600.0), (status, None), ("missing", None)]
    assert plan_main(sweep) == 0
    out = capsys.readouterr().out
    hours = 1 if status == "complete" else 2   # the cells not complete, at the one sane time's 3600 s
    assert f"  time to go: ~{hours}.0 h of cell time" in out, out


def test_a_sweep_params_override_is_planned_as_hydra_sweeps_it(cli, tmp_path: Path) -> None:
    # Hydra merges it into the experiment file's sweep (its seed=1,2,3 becomes 1,2); with no file's
    # sweep to change, Hydra fails inside (AttributeError): one line, for plan and run -m alike
    from fishtune.plan import expand

    cells = expand(["experiment=table3_cpu", "task=mrpc", "hydra.sweeper.params={seed:'1,2'}"])
    assert len(cells) == 8 and {o for c in cells for o in c if o.startswith("seed=")} == {"seed=1", "seed=2"}
    assert not any(o.startswith("hydra") for c in cells for o in c)
    for command in (["plan"], ["run", "-m"], ["run"]):
        for sweep in ("hydra.sweeper.params={seed:'1,2'}", "+hydra.sweeper.params.seed='1,2'"):
            code, err = cli(*command, *TINY, f"runs_root={tmp_path}", sweep)
            assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
            assert f"{sweep}: Hydra can only change the sweep params of an experiment file" in err, err
    assert not (tmp_path / "mrpc").exists()


@pytest.mark.parametrize("where", ["runs_root=afile", "output_dir=afile", "output_dir=afile/run"])
def test_a_run_folder_below_a_file_is_refused_in_one_line(where: str, cli, tmp_path: Path) -> None:
    # `fishtune run` could never write there: plan says so (exit 2), as run does (not NotADirectoryError)
    (tmp_path / "afile").write_text("notes")
    key = where.partition("=")[0]
    for command, status in ((["plan"], 2), (["run"], 1)):
        code, err = cli(*command, *TINY, where)
        assert code == status and err.count("\n") == 1 and "Traceback" not in err, err
        assert "afile" in err and ", not a folder; set " + key + " to a folder path" in err, err
        assert ("is a file" if where == "output_dir=afile" else "would be below afile, which is a file") in err, err
    assert (tmp_path / "afile").read_text() == "notes"


def _plan_record(tmp_path: Path, write) -> str:
    """The plan status of the TINY cell whose results.json `write(path)` made."""
    from fishtune.plan import plan

    (cell,) = plan([*TINY, f"runs_root={tmp_path / 'runs'}"])
    cell.folder.mkdir(parents=True)
    write(cell.folder / "results.json")
    return _plan_status(tmp_path)


def test_a_deeply_nested_record_is_malformed_not_a_recursion_error(tmp_path: Path) -> None:
    from fishtune.errors import FishtuneError
    from fishtune.record import read_record

    assert _plan_record(tmp_path, lambda path: path.write_text("[" * 100_000)) == "malformed"
    (path,) = (tmp_path / "runs").rglob("results.json")
    with pytest.raises(FishtuneError, match=f"cannot read run record {path}: its JSON is nested too deeply"):
        read_record(path)


def test_a_broken_link_for_a_record_is_malformed_not_missing(run_cli, tmp_path: Path, capsys) -> None:
    assert run_cli() == 0
    (record,) = (tmp_path / "runs").rglob("results.json")
    record.unlink()
    record.symlink_to(record.parent / "gone.json")
    assert _plan_status(tmp_path) == "malformed"
    assert run_cli() == 1   # a run does not write through it as if there were no record
    assert f"cannot read run record {record}: it is a link to " in capsys.readouterr().err
    assert record.is_symlink() and not (record.parent / "gone.json").exists()


def test_plan_gives_hydras_missing_option_in_one_line(capsys) -> None:
    from fishtune.plan import main as plan_main

    assert plan_main(["task=nope"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Available options in 'task': cola mnli mrpc" in err and "search path" not in err


def test_an_interrupt_before_the_run_folder_says_there_is_nothing_to_resume(run_cli, tmp_path: Path, monkeypatch,
                                                                             capsys) -> None:
    from fishtune import runner

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(runner, "load_model", interrupted)   # Ctrl-C while the model loads
    assert run_cli() == 130
    err = capsys.readouterr().err
    assert err.endswith("fishtune: interrupted; no run folder was written yet, so there is nothing to resume; rerun "
                        "the same command to start\n"), err
    assert not list(tmp_path.rglob("results.json"))
    assert run_cli("-m", "seed=1,2") == 130   # a sweep: earlier cells may have run
    assert "complete cells are skipped, started ones resume" in capsys.readouterr().err
    monkeypatch.undo()
    assert run_cli() == 0   # a folder with a record: interrupted while its rerun loads the model, it is named
    (record,) = tmp_path.rglob("results.json")
    record.write_text(record.read_text().replace('"status": "complete"', '"status": "interrupted"'))
    monkeypatch.setattr(runner, "load_model", interrupted)
    assert run_cli() == 130
    assert f"rerun the same command to resume {record.parent} from its last checkpoint" in capsys.readouterr().err
