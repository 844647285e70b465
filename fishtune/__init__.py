"""fishtune: Fisher-selected sparse fine-tuning inside PEFT modules (FISH-Tuning).

The public API for your own training code, imported on first use (so `import fishtune` stays light):
`FishMask` (fishtune.fishmask) and `FishCallback`, a transformers `TrainerCallback` (fishtune.callback).
"""

from . import provenance as _provenance  # noqa: F401  (reads the commit and source hash at import)
from .resolvers import register_resolvers

__version__ = "0.1.0"
__all__ = ["FishCallback", "FishMask", "__version__"]

_LAZY = {"FishMask": "fishtune.fishmask", "FishCallback": "fishtune.callback"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'fishtune' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


register_resolvers()
