"""Hydra configs of fishtune (shipped as package data: `pkg://fishtune.configs`)."""
