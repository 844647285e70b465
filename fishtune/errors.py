"""Errors that the CLI turns into one clear line (no traceback wall).

Every error a user can cause by a bad config, a missing file or an unreachable Hub is a
`FishtuneError`; its message says what is wrong and how to fix it.
"""


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
