"""Where a number came from: the code this process imported, read once at import time.

A long sweep run from an editable install can outlive several commits; reading `git rev-parse`
when each run starts would credit a run to code its process never imported. So the commit, the
dirty flag and a SHA-256 of the fishtune source files are read once, when `fishtune` is imported,
and every record of the process carries those values.
"""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path
from typing import Any

PACKAGE_DIR = Path(__file__).resolve().parent


# What never runs in a training process: the reporter, the planner and the benchmark (first path
# parts under the package). An edit there cannot change a Fisher estimate, so the Fisher cache's key
# (`TRAINING_SOURCE_SHA256`) leaves them out; the records' `source_sha256` covers every file.
NOT_TRAINING = ("report", "plan.py", "bench")


def source_digest(package_dir: Path = PACKAGE_DIR, exclude: tuple[str, ...] = ()) -> str:
    """SHA-256 over the relative path and bytes of every `.py` file of the package (sorted), but
    those whose first path part is in `exclude`."""
    h = hashlib.sha256()
    for path in sorted(package_dir.rglob("*.py")):
        if path.relative_to(package_dir).parts[0] in exclude:
            continue
        h.update(str(path.relative_to(package_dir)).encode())
        h.update(b"\0")
        h.update(path.read_bytes())
        h.update(b"\0")
    return h.hexdigest()


def git_revision(root: Path = PACKAGE_DIR.parent) -> dict[str, Any]:
    """HEAD commit and whether tracked files differ from it (None, None outside a checkout)."""
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
    if rev.returncode != 0:
        return {"commit": None, "dirty": None}
    return {"commit": rev.stdout.strip(), "dirty": bool(dirty.stdout.strip())}


# Read once, when the package is imported (see the module docstring).
AT_IMPORT: dict[str, Any] = {**git_revision(), "source_sha256": source_digest(), "read_at": "import"}
TRAINING_SOURCE_SHA256: str = source_digest(exclude=NOT_TRAINING)
