"""Errors that the CLI turns into one clear line (no traceback wall).

Every error a user can cause by a bad config, a missing file or an unreachable Hub is a
`FishtuneError`; its message says what is wrong and how to fix it.
"""

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager


def first_line(err: BaseException) -> str:
    """The first line of an error's message (what a one-line error quotes of its cause), or its
    type's name when it has none."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


class FishtuneError(Exception):
    """Base class: a user-facing error; `str(err)` is the whole message."""


class ConfigError(FishtuneError):
    """An invalid configuration value (checked before any model is loaded)."""


class DataError(FishtuneError):
    """Missing, malformed or empty task data (the message names the file and line)."""


class ModelLoadError(FishtuneError):
    """A model or tokenizer that cannot be loaded (e.g. offline without a local copy)."""


class DivergedError(FishtuneError):
    """The training loss became NaN or infinite."""


class Terminated(KeyboardInterrupt):
    """SIGTERM during a run (a cluster's preemption or time limit, `kill`, `timeout`): handled as
    Ctrl-C is, so the record ends `interrupted` and rerunning the command resumes it."""


@contextmanager
def sigterm_interrupts() -> Iterator[None]:
    """While inside, SIGTERM raises `Terminated` (a KeyboardInterrupt), so what is being written ends
    as on Ctrl-C: a run's record says `interrupted`, not `running`, and the process exits 143
    (`fishtune.cli`); a report removes its staging folder. SLURM sends SIGTERM before it kills a
    preempted or timed-out job; a run's last checkpoint (every `train.checkpoint_every` steps and at
    each epoch end) is where a rerun resumes. A handler someone else installed (submitit's, for
    requeueing) is left alone, as is any thread but the main one."""
    if threading.current_thread() is not threading.main_thread() or \
            signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        yield
        return

    def terminate(signum: int, frame) -> None:
        raise Terminated(f"signal {signum}")

    signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
