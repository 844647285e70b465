"""fishtune: Fisher-selected sparse fine-tuning inside PEFT modules (FISH-Tuning)."""

__version__ = "0.1.0"
