"""The built wheel carries the Hydra configs: an installed `fishtune` composes a run config."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO

PROBE = """
import sys
sys.path.insert(0, sys.argv[1])
import fishtune
assert fishtune.__file__.startswith(sys.argv[1]), fishtune.__file__
from fishtune.cli import main
sys.exit(main(sys.argv[2:]))
"""


@pytest.mark.slow  # builds and installs a wheel
def test_installed_wheel_runs_help_and_composes_configs(tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(REPO), "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(wheels)], check=True, capture_output=True, timeout=300)
    (wheel,) = wheels.glob("fishtune-*.whl")
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheel)],
                   check=True, capture_output=True, timeout=300)
    assert (site / "fishtune" / "configs" / "run.yaml").is_file()

    def fishtune(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-c", PROBE, str(site), *args], capture_output=True, text=True,
                              cwd=tmp_path, timeout=300)

    out = fishtune("--help")
    assert out.returncode == 0 and "fishtune run" in out.stdout, out.stderr
    out = fishtune("run", "--cfg", "job", "task=rte", "mask=fish")
    assert out.returncode == 0, out.stderr
    assert "name: rte" in out.stdout and "num_samples: 1024" in out.stdout
    # the GLUE files ship in the wheel: a run outside any checkout reads them (as --help says)
    assert (site / "fishtune" / "glue" / "MRPC" / "train.tsv").is_file()
    out = fishtune("run", "model=tiny-bert", "train.max_steps=2", "train.max_eval_samples=8", "train.progress=false",
                   f"runs_root={tmp_path / 'runs'}")
    assert out.returncode == 0, out.stderr
    (record,) = (tmp_path / "runs").rglob("results.json")
    assert '"status": "complete"' in record.read_text()
