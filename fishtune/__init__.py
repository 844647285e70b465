"""fishtune: Fisher-selected sparse fine-tuning inside PEFT modules (FISH-Tuning)."""

from . import provenance as _provenance  # noqa: F401  (reads the commit and source hash at import)
from .resolvers import register_resolvers

__version__ = "0.1.0"

register_resolvers()
