"""Errors that the CLI turns into one clear line (no traceback wall).

Every error a user can cause by a bad config, a missing file or an unreachable Hub is a
`FishtuneError`; its message says what is wrong and how to fix it.
"""


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
