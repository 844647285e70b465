"""The experiment files (configs/experiment/): each sweep expands to the grid it promises, cells shared
between experiments are the same run folders, every experiment runs on tiny-bert, a finished sweep
rerun trains nothing, the launcher plugins (joblib, submitit) run cells in other processes and the
summary still counts them, and `make reproduce-cpu` / the snapshot script do what they say."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import GLUE, REPO, complete_record, compose_run, records
from fishtune.config import config_digest, validate
from fishtune.plan import expand as plan_expand

EXPERIMENTS = REPO / "configs" / "experiment"
# experiment -> (cells, swept keys). A new experiment file must say here what it sweeps.
GRIDS = {
    "table1": (8 * 2 * 8 * 3, {"mask", "+pair", "task", "seed"}),
    "table3": (4 * 8 * 3, {"+pair", "mask", "task", "seed"}),
    "table6": (4 * 4 * 2 * 3, {"model", "mask", "+pair", "seed"}),
    "table3_cpu": (4 * 4 * 3, {"+pair", "mask", "task", "seed"}),
    "table3_cpu_r1": (4 * 2 * 3, {"mask", "task", "seed"}),
    "table1_cpu": (2 * 8 * 2 * 3, {"mask", "+pair", "task", "seed"}),
    "ablation_warmup_cpu": (4 * 3, {"+pair", "mask", "mask.warmup_steps", "seed"}),
    "ablation_keep_cpu": (2 * 4 * 3, {"mask", "mask.keep_ratio", "seed"}),
    "ablation_samples_cpu": (5 * 3, {"+pair", "mask", "mask.num_samples", "seed"}),
    "ablation_scope_cpu": (2 * 3 * 2, {"task", "+pair", "mask", "mask.scope", "seed"}),
    "ablation_labels_cpu": (2 * 3, {"+pair", "mask", "mask.labels", "seed"}),
    "methods_mrpc": (4 * 8, {"mask", "+pair"}),
    "minilm_contrastive": (6, {"+variant"}),
}
LOCAL_TRAIN = {"cola", "sst2", "mrpc", "stsb", "rte", "wnli"}  # tasks whose train split is shipped
FAST = ["train.max_train_samples=16", "train.max_eval_samples=8", "train.max_seq_length=32", "train.device=cpu"]


def expand(experiment: str, *cli: str) -> list[list[str]]:
    """The cells `fishtune run -m experiment=<experiment> <cli>` runs, in order (`fishtune plan`'s
    expansion: Hydra's own BasicSweeper over `hydra.sweeper.params` and the command line)."""
    return plan_expand([f"experiment={experiment}", *cli])


def _keys(cell: list[str]) -> set[str]:
    return {o.split("=", 1)[0] for o in cell} - {"experiment"}


@pytest.mark.parametrize("experiment", sorted(p.stem for p in EXPERIMENTS.glob("*.yaml")))
def test_every_experiment_expands_to_its_grid(experiment: str) -> None:
    assert experiment in GRIDS, f"say in GRIDS what configs/experiment/{experiment}.yaml sweeps"
    size, keys = GRIDS[experiment]
    cells = expand(experiment)
    assert len(cells) == size and all(_keys(c) == keys for c in cells)
    assert len({tuple(sorted(c)) for c in cells}) == size  # no cell twice
    first_line = (EXPERIMENTS / f"{experiment}.yaml").read_text().splitlines()[1]
    claimed = re.search(r"(\d+) cells", first_line)
    assert claimed is None or int(claimed.group(1)) == size, first_line
    for cell in (cells[0], cells[-1]):
        validate(compose_run(*cell))


REPRODUCED = ("table3_cpu", "table3_cpu_r1", "table1_cpu", "ablation_warmup_cpu", "ablation_keep_cpu",
              "ablation_samples_cpu", "ablation_scope_cpu", "ablation_labels_cpu", "table3", "table1", "table6")


@pytest.mark.parametrize("experiment", REPRODUCED)
def test_a_sweep_finishes_whole_comparisons_in_turn(experiment: str) -> None:
    """The cells of one (task, model, seed) are one contiguous run of the sweep, with every mask in it:
    a sweep stopped at a session's end leaves complete pairs for the paired statistics, and the FISH
    and reverse cells that share a Fisher estimate run minutes apart, not hours."""
    cells = expand(experiment)
    unit = [tuple(o for o in c if o.split("=", 1)[0] in ("task", "model", "seed")) for c in cells]
    blocks = [u for i, u in enumerate(unit) if i == 0 or u != unit[i - 1]]
    assert len(blocks) == len(set(unit)), "a (task, model, seed) comes back after others"
    masks = {o for c in cells for o in c if o.startswith("mask=")}
    assert {o for c in cells[: len(cells) // len(blocks)] for o in c if o.startswith("mask=")} == masks


def test_the_command_line_narrows_a_sweep() -> None:
    cells = expand("table3_cpu", "mask=none,fish", "task=mrpc", "seed=1")
    common = ["+pair=lora", "task=mrpc", "seed=1", "experiment=table3_cpu"]
    assert [sorted(c) for c in cells] == [sorted([*common, "mask=none"]), sorted([*common, "mask=fish"])]


@pytest.mark.slow  # ~30 composes (~6 s)
def test_cells_shared_between_experiments_are_the_same_run_folders() -> None:
    """The default cell of each ablation and table1_cpu's LoRA cells are table3_cpu's (skipped once done)."""
    base = ["+pair=lora", "task=mrpc", "seed=2"]
    fish = config_digest(compose_run("experiment=table3_cpu", *base, "mask=fish"))
    for experiment, key in (("ablation_warmup_cpu", "mask.warmup_steps=50"),
                            ("ablation_samples_cpu", "mask.num_samples=1024"), ("ablation_scope_cpu", "mask.scope=global"),
                            ("ablation_labels_cpu", "mask.labels=empirical"), ("table1_cpu", "seed=2")):
        assert config_digest(compose_run(f"experiment={experiment}", *base, "mask=fish", key)) == fish, experiment
    vanilla = compose_run("experiment=table3_cpu", *base, "mask=none")
    assert config_digest(compose_run("experiment=table1_cpu", *base, "mask=none")) == config_digest(vanilla)
    # The methods study (issue 9: MRPC, no cap) is table1_cpu's MRPC seed 1: its cap of 10,000 keeps all of MRPC.
    for pair in ("dora", "prefix", "full"):
        for mask in ("none", "fish"):
            study = compose_run("experiment=methods_mrpc", f"+pair={pair}", f"mask={mask}")
            table1 = compose_run("experiment=table1_cpu", f"+pair={pair}", f"mask={mask}", "task=mrpc", "seed=1")
            assert config_digest(study) == config_digest(table1), (pair, mask)
    r1 = compose_run("experiment=table3_cpu_r1", "task=mrpc", "mask=fish")
    assert r1.method.r == 16 and dict(r1.mask.keep_match) == {"config": "lora", "r": 1}
    assert r1.mask.tag == "fish-match.lora-r1-warmup" and r1.train.max_train_samples == 10000
    assert compose_run("experiment=table3_cpu_r1", "mask=none").method.tag == "lora-r1"


def test_paper_scale_tables_share_their_lora_cells_and_keep_the_other_methods_rates() -> None:
    """table1 and table6 run LoRA and DoRA at table3's roberta-base rate (5e-4), so a LoRA cell of
    Table 1 is Table 3's run folder; the other methods keep their method.lr (full's masked cells 2e-3)."""
    cell = ["+pair=lora", "task=sst2", "seed=1"]
    for mask in ("none", "fish"):
        table3 = compose_run("experiment=table3", *cell, f"mask={mask}")
        table1 = compose_run("experiment=table1", *cell, f"mask={mask}")
        table6 = compose_run("experiment=table6", *cell, f"mask={mask}", "model=roberta-base")
        assert table1.train.lr == table3.train.lr == table6.train.lr == 5e-4
        assert config_digest(table1) == config_digest(table3) == config_digest(table6), mask
    assert compose_run("experiment=table6", "+pair=dora", "mask=fish", "model=roberta-large").train.lr == 5e-4
    lrs = {(pair, mask): compose_run("experiment=table1", f"+pair={pair}", f"mask={mask}").train.lr
           for pair, mask in (("adapter_houlsby", "none"), ("prefix", "fish"), ("full", "none"), ("full", "fish"))}
    assert lrs == {("adapter_houlsby", "none"): 3e-3, ("prefix", "fish"): 3e-4, ("full", "none"): 5e-5,
                   ("full", "fish"): 2e-3}


def test_by_name_picks_the_value_paired_with_a_name() -> None:
    from fishtune.resolvers import by_name

    assert by_name("dora", 1.0, "lora", 5e-4, "dora", 4e-4) == 4e-4
    assert by_name("full", 1.0, "lora", 5e-4) == 1.0
    with pytest.raises(ValueError, match="pairs"):
        by_name("lora", 1.0, "lora")


def test_cells_that_differ_only_in_how_they_select_share_one_fisher_estimate() -> None:
    """Reverse, the r=1 budget, every keep ratio and per-tensor quotas read table3_cpu's FISH estimate
    (fishtune.fisher_cache); other warm-ups, sample counts, labels and seeds do not."""
    from fishtune.fisher_cache import cache_key

    def key(experiment: str, *cell: str) -> str:
        return cache_key(compose_run(f"experiment={experiment}", *cell), {"device": "cpu", "precision": "fp32"})

    fish = key("table3_cpu", "+pair=lora", "task=mrpc", "seed=1", "mask=fish")
    same = [("table3_cpu", "+pair=lora", "task=mrpc", "seed=1", "mask=reverse"),
            ("table3_cpu_r1", "task=mrpc", "seed=1", "mask=fish"),
            ("ablation_keep_cpu", "mask=fish", "mask.keep_ratio=0.001", "seed=1"),
            ("ablation_scope_cpu", "+pair=lora", "mask=fish", "mask.scope=per_tensor", "seed=1")]
    other = [("table3_cpu", "+pair=lora", "task=mrpc", "seed=2", "mask=fish"),
             ("ablation_warmup_cpu", "+pair=lora", "mask=fish", "mask.warmup_steps=10", "seed=1"),
             ("ablation_samples_cpu", "+pair=lora", "mask=fish", "mask.num_samples=256", "seed=1"),
             ("ablation_labels_cpu", "+pair=lora", "mask=fish", "mask.labels=expected", "seed=1")]
    assert all(key(*cell) == fish for cell in same)
    assert all(key(*cell) != fish for cell in other)


def _tiny_cell(experiment: str) -> list[str]:
    """The first masked cell of the experiment on a shipped task, its model replaced by tiny-bert."""
    for cell in expand(experiment):
        values = dict(o.split("=", 1) for o in cell)
        task = values.get("task") or compose_run(*cell).task.name
        variant = values.get("+variant")
        masked = values.get("mask", "none") != "none" if variant is None else variant != "lora_r8"
        if task in LOCAL_TRAIN and masked:
            return [o for o in cell if not o.startswith("model=")]
    raise AssertionError(f"{experiment}: no masked cell on a shipped task")


@pytest.mark.slow
@pytest.mark.parametrize("experiment", sorted(GRIDS))
def test_every_experiment_runs_a_cell_on_tiny_bert(run_cli, tmp_path: Path, experiment: str) -> None:
    cell = _tiny_cell(experiment)
    assert run_cli(*cell, *FAST, "mask.num_samples=8", "mask.warmup_steps=2") == 0
    (rec,) = records(tmp_path / "runs")
    assert rec["status"] == "complete" and rec["mask"] != "none" and rec["frozen_changed"] == 0


def _snapshot(root: Path) -> dict[str, tuple[bytes, int]]:
    return {str(p.relative_to(root)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if p.is_file() and p.name != ".lock"}


@pytest.mark.slow  # a sweep run twice (~5 s)
def test_a_finished_sweep_rerun_trains_nothing(run_cli, tmp_path: Path, capsys) -> None:
    """Resumable and idempotent: the second run of a 2-cell experiment skips both, touching no file."""
    sweep = ["-m", "experiment=table3_cpu", "mask=none,random", "task=mrpc", "seed=1", *FAST]  # random: no Fisher
    assert run_cli(*sweep) == 0
    assert "2 cells: 2 completed" in capsys.readouterr().err
    before = _snapshot(tmp_path / "runs")
    vanilla, masked = sorted(records(tmp_path / "runs"), key=lambda r: r["mask"] != "none")
    # what the report needs is in the record: the backbone size and the mask per parameter
    assert vanilla["trainable"]["backbone"] == masked["trainable"]["backbone"] > 0
    assert sum(masked["mask_stats"]["selected_by_param"].values()) == masked["trainable"]["peft_selected"]
    assert masked["trainable"]["peft_selected"] == vanilla["trainable"]["peft_total"]  # r=8's count
    assert run_cli(*sweep) == 0
    assert "2 cells: 0 completed, 2 skipped" in capsys.readouterr().err
    assert _snapshot(tmp_path / "runs") == before
    # `fishtune plan` names the same folders as the runs it plans: both cells done
    from conftest import TINY
    from fishtune.cli import main

    assert main(["plan", *TINY, f"runs_root={tmp_path / 'runs'}", *sweep]) == 0
    assert "2 cells: 2 complete, 0 to run\n" in capsys.readouterr().out
    assert _snapshot(tmp_path / "runs") == before


@pytest.mark.slow  # three tiny cells (~5-10 s)
def test_run_m_with_two_experiments_runs_each_grid_in_turn(run_cli, tmp_path: Path, capsys) -> None:
    """Hydra alone composes a multirun's primary config without its sweep overrides, so
    `experiment=a,b` would run one base cell per file; fishtune runs each file's own grid."""
    sweep = ["-m", "experiment=table3_cpu,table3_cpu_r1", "mask=none", "task=mrpc", "seed=1", *FAST]
    assert run_cli(*sweep) == 0
    err = capsys.readouterr().err
    assert "fishtune: experiment=table3_cpu (1 of 2)" in err and "fishtune: experiment=table3_cpu_r1 (2 of 2)" in err
    assert sorted(r["method_tag"] for r in records(tmp_path / "runs")) == ["lora-r1", "lora-r8"]
    # every grid is checked before any runs: a bad cell in the second file stops both
    assert run_cli("-m", "experiment=table3_cpu,table3_cpu_r1", "task=mrpc", "seed=1", "train.lr=0", *FAST) == 2
    assert capsys.readouterr().err.startswith("fishtune: error: experiment=table3_cpu: cell #0")
    assert len(records(tmp_path / "runs")) == 2


@pytest.mark.parametrize("bad", ["experiment=[table3_cpu,table3_cpu_r1]", "experiment=table3_cpu,,table3_cpu_r1",
                                 "experiment=table3_cpu,table3_cpu", "experiment=glob(table*)"])
def test_a_list_or_malformed_experiment_sweep_is_refused_in_one_line(run_cli, tmp_path: Path, capsys,
                                                                     bad: str) -> None:
    """`experiment=[a,b]` would merge the files into one config whose grid is neither's."""
    from fishtune.plan import main as plan_main

    assert run_cli("-m", bad) == 2 and run_cli(bad) == 2
    assert plan_main([bad]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 3 and all(bad in line for line in err), err
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow  # expands and plans several sweeps (~24 s)
def test_plan_lists_the_cells_of_a_sweep_and_the_status_of_each(tmp_path: Path, capsys) -> None:
    """`fishtune plan` expands a sweep as `fishtune run -m` does and reads each cell's record."""
    from fishtune.plan import main as plan_main
    from fishtune.plan import plan

    sweep = ["experiment=table3_cpu", "task=mrpc", "seed=1", f"runs_root={tmp_path}"]
    cells = plan(sweep)
    assert [c.overrides for c in cells] == [("+pair=lora", f"mask={m}") for m in ("none", "fish", "random", "reverse")]
    assert {c.status for c in cells} == {"missing"}
    assert cells[0].folder == tmp_path / "mrpc" / "minilm-l6" / "lora-r8" / "none" / cells[0].folder.name
    for cell, content in zip(cells, [json.dumps(complete_record(score=81.5)), '{"status": "running"}', "{broken"]):
        cell.folder.mkdir(parents=True)
        (cell.folder / "results.json").write_text(content)
    assert [(c.status, c.score) for c in plan(sweep)] == [("complete", 81.5), ("stopped", None),
                                                          ("malformed", None), ("missing", None)]
    assert plan_main(["-m", *sweep]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{' '.join(sweep)}: 4 cells: 1 complete, 1 to run, 1 malformed, 1 stopped\n")
    assert "mask=none" not in out and len(out.splitlines()) == 5  # only what is not complete
    assert out.splitlines()[1] == "  time to go: not known (3 cell(s), no timed complete cell of their task yet)"
    # two experiment files: each with its own grid, shared cells counted once in the total
    assert plan_main(["experiment=table3_cpu,ablation_scope_cpu", "seed=1", f"runs_root={tmp_path}"]) == 0
    total = capsys.readouterr().out.splitlines()[-2]
    assert total.startswith("all: 18 cells: 1 complete, 15 to run")  # 16 + 4, less the two shared FISH cells
    assert plan_main(["experiment=nope"]) == 2
    assert "cannot compose experiment=nope" in capsys.readouterr().err
    assert plan_main(["task=["]) == 2  # one line, no traceback
    assert capsys.readouterr().err.startswith("fishtune plan: error: cannot parse the overrides task=[: ")


def test_plan_estimates_the_time_to_go_from_complete_cells_like_each() -> None:
    from fishtune.plan import Cell, time_to_go

    def cell(status: str, task: str, method: str, masked: bool, seconds: float | None = None) -> Cell:
        return Cell((), Path(f"{task}/{method}/{masked}/{status}/{seconds}"), status, None, task, method, masked, seconds)

    done = [cell("complete", "mrpc", "lora", True, 100.0), cell("complete", "mrpc", "lora", True, 300.0),
            cell("complete", "mrpc", "lora", False, 50.0), cell("complete", "mrpc", "dora", False, 500.0),
            cell("complete", "sst2", "dora", False, 40.0)]   # task medians: mrpc 200, sst2 40
    todo = [cell("missing", "mrpc", "lora", True),     # its own kind: median 200
            cell("stopped", "mrpc", "lora", False),    # 50
            cell("missing", "mrpc", "dora", True),     # no masked dora on mrpc: dora on mrpc, 500
            cell("failed", "sst2", "lora", True),      # no lora on sst2: lora took 100 / 200 of mrpc's median, 40 -> 20
            cell("missing", "cola", "lora", True)]     # nothing on cola: not counted
    assert time_to_go(done + todo, done) == (770.0, 1)
    assert time_to_go(done, done) == (0.0, 0)


def test_outcomes_of_cells_run_elsewhere_are_counted(tmp_path: Path, monkeypatch, capsys) -> None:
    """A cell in another process (a launcher plugin) leaves its outcome in the sweep's folder; the
    launching process counts it, and says so when nothing came back."""
    from fishtune import cli

    folder = tmp_path / "outcomes"
    folder.mkdir()
    monkeypatch.setenv(cli.OUTCOME_ENV, f"1:{folder}")  # owned by "PID 1": this process is elsewhere
    for status in ("complete", "failed"):
        cli._report_outcome(status)
    remote = cli._collect_outcomes(folder)
    assert sorted(remote) == ["complete", "failed"] and not folder.exists()
    assert cli._summarise(["skipped", *remote], multirun=True, elsewhere=2) == 1
    assert "3 cells (2 reported by other processes): 1 completed, 1 skipped" in capsys.readouterr().err
    assert cli._summarise([], multirun=True) == 0
    assert "none reported an outcome here" in capsys.readouterr().err


def test_launcher_configs_compose() -> None:
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    slurm = compose_run("hydra/launcher=slurm", hydra=True).hydra.launcher
    assert slurm._target_.endswith("SlurmLauncher") and slurm.gpus_per_node == 1 and slurm.tasks_per_node == 1
    assert slurm.timeout_min >= 60 and slurm.mem_gb and slurm.cpus_per_task and slurm.max_num_timeout >= 1
    parallel = compose_run("hydra/launcher=parallel", "hydra.launcher.n_jobs=3", hydra=True).hydra.launcher
    assert parallel._target_.endswith("JoblibLauncher") and parallel.n_jobs == 3


@pytest.mark.slow
@pytest.mark.parametrize("launcher", [["hydra/launcher=parallel", "hydra.launcher.n_jobs=2"],
                                      ["hydra/launcher=submitit_local", "hydra.launcher.timeout_min=10"]],
                         ids=["joblib", "submitit_local"])
def test_launchers_run_cells_in_other_processes(run_cli, tmp_path: Path, capfd, launcher: list[str]) -> None:
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    # two cells at once; the second finds no data (a run-time error: a value that fails validation
    # stops the sweep before any cell): the summary and the exit status say so
    assert run_cli("-m", *launcher, *FAST[:3], f"data.dir={GLUE},{tmp_path / 'no-glue'}") == 1
    err = capfd.readouterr().err
    assert "2 cells (2 reported by other processes): 1 completed, 0 skipped (already complete), 1 failed" in err
    if "parallel" in launcher[0]:  # joblib workers write to the sweep's stderr: their log lines name the cell
        assert re.search(r"^\[fishtune #0\] done: ", err, re.M), err[-2000:]
    (rec,) = records(tmp_path / "runs")
    assert rec["status"] == "complete" and rec["test_model"] is True
    assert not list((tmp_path / "results" / "sweeps").glob(".outcomes-*"))  # collected and removed


def test_make_reproduce_cpu_runs_every_cpu_experiment_then_reports() -> None:
    if shutil.which("make") is None:
        pytest.skip("no make")
    out = subprocess.run(["make", "-n", "reproduce-cpu", "reproduce"], cwd=REPO, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    cpu = [p.stem for p in EXPERIMENTS.glob("*_cpu*.yaml")]
    listed = re.search(r"for e in ([^;]+); do .*fishtune run -m experiment=\$e runs_root=(\S+)", out.stdout)
    assert listed and sorted(listed.group(1).split()) == sorted(cpu) and listed.group(2) == "results/runs-cpu"
    restore = [f"snapshot_records.py --keep-existing results/study/{s} results/runs-cpu" for s in
               ("minilm-l6-cpu", "minilm-l6-methods")]  # committed cells are skipped on a fresh clone
    assert all(0 <= out.stdout.find(r) < listed.start() for r in restore)
    assert "scripts/snapshot_records.py results/runs-cpu results/study/minilm-l6-cpu" in out.stdout
    assert "fishtune report --runs results/study/minilm-l6-cpu --out results/tables/minilm-l6-cpu" in out.stdout
    view = "--out results/tables/minilm-l6-cpu-table1 \\\n  --task mrpc --task sst2 --no-figures"  # test_report's VIEWS
    assert view in out.stdout and "scripts/readme_tables.py README.md" in out.stdout
    gpu = re.search(r"for e in ([^;]+); do .*experiment=\$e train.device=cuda runs_root=(\S+)", out.stdout)
    assert gpu and sorted(gpu.group(1).split()) == ["table1", "table3", "table6"]
    # Neither runs folder sits inside the default one, results/runs: a report or a snapshot of it would
    # pick up the copies the reproduction restores there (as duplicates of the user's own runs).
    assert not any(root.startswith("results/runs/") for root in (listed.group(2), gpu.group(2)))


def test_snapshot_copies_only_complete_records_of_real_models(tmp_path: Path) -> None:
    source, dest = tmp_path / "runs", tmp_path / "study"
    for name, rec in (("ok", complete_record(model="m", task="rte", score=60.0)),
                      ("failed", {"status": "failed", "model": "m", "task": "rte"}),
                      ("no-score", {"status": "complete", "model": "m", "task": "rte"}),
                      ("tiny", {"status": "complete", "model": "tiny-bert", "task": "rte", "test_model": True}),
                      ("broken", None)):
        (source / name).mkdir(parents=True)
        (source / name / "results.json").write_text(json.dumps(rec) if rec else "{")
        (source / name / "config.yaml").write_text("seed: 1\n")
        (source / name / "mask.safetensors").write_bytes(b"x")
    script = REPO / "scripts" / "snapshot_records.py"
    for _ in range(2):  # idempotent
        out = subprocess.run([sys.executable, str(script), str(source), str(dest)], capture_output=True, text=True,
                             timeout=60)
        assert out.returncode == 0 and "copied 1 complete run records" in out.stdout
        assert "left behind: 1 failed, 2 malformed, 1 test model" in out.stdout and "broken" in out.stderr
        assert "no-score" in out.stderr and "finite" in out.stderr
    assert sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file()) == ["ok/config.yaml",
                                                                                          "ok/results.json"]
    # Restoring into a runs folder never overwrites a record there (a live run keeps its own).
    live = {"status": "running", "model": "m", "task": "rte"}
    (source / "ok" / "results.json").write_text(json.dumps(live))
    out = subprocess.run([sys.executable, str(script), "--keep-existing", str(dest), str(source)], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0 and "copied 0 complete" in out.stdout and "1 already there" in out.stdout
    assert json.loads((source / "ok" / "results.json").read_text()) == live
    # ... but a damaged one (a copy cut short) is replaced: kept, it would fail its cell at every rerun
    (source / "ok" / "results.json").write_text('{"status": "compl')
    out = subprocess.run([sys.executable, str(script), "--keep-existing", str(dest), str(source)], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0 and "copied 1 complete" in out.stdout
    assert json.loads((source / "ok" / "results.json").read_text())["status"] == "complete"
    assert sorted(p.name for p in (source / "ok").iterdir()) == ["config.yaml", "mask.safetensors", "results.json"]
    out = subprocess.run([sys.executable, str(script), str(dest), str(dest)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "both the source and the destination" in out.stderr and not out.stdout


def test_plan_marks_a_record_of_another_model_than_the_cell_loads(tmp_path: Path, capsys) -> None:
    """A full commit in model.revision other than the recorded snapshot, or a changed model.path folder:
    `other-model`, as the run would refuse it (a branch or tag is not resolved: that needs the Hub)."""
    from fishtune.plan import main as plan_main
    from fishtune.plan import plan

    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    hub = ["experiment=table3_cpu", "task=mrpc", "seed=1", "+pair=lora", "mask=none", "model.package=null",
           f"runs_root={tmp_path / 'hub'}"]
    local = [*hub[:-1], f"model.path={model}", f"runs_root={tmp_path / 'local'}"]
    for sweep, field in ((hub, {"model_revision": "a" * 40}), (local, {"model_files_sha256": "0" * 16})):
        (cell,) = plan(sweep)
        cell.folder.mkdir(parents=True)
        (cell.folder / "results.json").write_text(json.dumps(complete_record(**field)))
    assert [c.status for c in plan(hub)] == ["complete"]
    assert [c.status for c in plan([*hub, f"model.revision={'a' * 40}"])] == ["complete"]
    assert [c.status for c in plan([*hub, f"model.revision={'A' * 40}"])] == ["complete"]   # the cache's case
    assert [c.status for c in plan([*hub, f"model.revision={'b' * 40}"])] == ["other-model"]
    assert [c.status for c in plan([*hub, "model.revision=v2"])] == ["complete"]   # a tag: not resolved offline
    assert [c.status for c in plan(local)] == ["other-model"]                     # the folder's digest differs
    assert plan_main([*hub, f"model.revision={'b' * 40}"]) == 0
    assert "1 cells: 0 complete, 0 to run, 1 other-model" in capsys.readouterr().out
