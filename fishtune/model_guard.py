"""Refuse a model whose `config.json` asks transformers to run code, before transformers reads it.

fishtune pins transformers 4.57.6 (AdapterHub `adapters` 1.3.0 requires ~=4.57.6), and
transformers < 5.3 has two known model-loading remote-code-execution holes:

- CVE-2026-4372: a `config.json` that sets `_attn_implementation_internal` to a Hub kernel name
  makes transformers fetch and run that code through the optional `kernels` package, even with
  `trust_remote_code=False`.
- CVE-2026-5241: a nested config (`text_config`, `encoder`, `decoder`, ...) propagates
  `trust_remote_code` to the sub-model it builds.

fishtune closes both doors itself: `kernels` is never installed or imported, every
`from_pretrained` gets `trust_remote_code=False`, and this module reads the model's `config.json`
as plain JSON (no transformers import) and refuses, with one `ModelLoadError` line, any config
that names a code-loading key at any depth or whose `model_type` is not a supported encoder.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from huggingface_hub import constants, hf_hub_download

from .errors import ModelLoadError

# The encoder families fishtune's methods and tokenisation are written for. Anything else
# (decoders, multimodal or custom-code models) is refused before transformers sees it.
SUPPORTED_MODEL_TYPES: frozenset[str] = frozenset({
    "bert", "roberta", "xlm-roberta", "deberta", "deberta-v2", "electra", "distilbert", "albert", "mpnet",
})

# Keys that make transformers load or run code: a Hub kernel (CVE-2026-4372; `_attn_implementation`
# reaches it too, through the property setter that writes `_attn_implementation_internal`), custom
# classes, and a remote-code flag a nested config would propagate (CVE-2026-5241).
CODE_KEYS: frozenset[str] = frozenset({"_attn_implementation", "_attn_implementation_internal", "auto_map",
                                       "trust_remote_code"})


def hub_config(repo_id: str, revision: str | None = None) -> tuple[Path, dict[str, str]]:
    """Fetch a Hub model's `config.json` at `revision` (a branch, tag or commit; None: `main`),
    cache first; honours HF_HUB_OFFLINE.

    Returns the file and the `from_pretrained` keyword arguments (`revision`: the snapshot commit
    the file came from, `cache_dir`) that make transformers load exactly the snapshot checked.
    Hub and network errors propagate for the caller to report.
    """
    cache_dir = str(constants.HF_HUB_CACHE)
    path = Path(hf_hub_download(repo_id, "config.json", revision=revision, cache_dir=cache_dir))
    return path, {"revision": path.parent.name, "cache_dir": cache_dir}  # .../snapshots/<commit>/config.json


def check_model_config(name: str, config_file: Path) -> None:
    """Raise `ModelLoadError` unless `config_file` is a JSON object of a supported, code-free encoder."""
    refuse = f"fishtune refuses model {name!r} ({config_file})"
    if not config_file.is_file():
        raise ModelLoadError(f"{refuse}: it has no config.json; point model.path= at a saved transformers model folder")
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, RecursionError, json.JSONDecodeError) as err:
        raise ModelLoadError(f"{refuse}: not valid JSON ({err})") from err
    if not isinstance(config, dict):
        raise ModelLoadError(f"{refuse}: not a JSON object")
    key_path = _code_key_path(config)
    if key_path is not None:
        raise ModelLoadError(
            f"{refuse}: key {key_path!r} asks transformers to run code, and fishtune refuses models "
            f"that ask to run code (CVE-2026-4372, CVE-2026-5241)"
        )
    model_type = config.get("model_type")
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise ModelLoadError(
            f"{refuse}: model_type {model_type!r} is not a supported encoder "
            f"({', '.join(sorted(SUPPORTED_MODEL_TYPES))})"
        )


def _code_key_path(config: dict[str, Any]) -> str | None:
    """The dotted path (list items as `[i]`) of a code-loading key at any depth of `config`, or None."""
    stack: list[tuple[str, Any]] = [("", config)]
    while stack:  # iterative: a deeply nested config cannot exhaust the call stack
        prefix, node = stack.pop()
        if isinstance(node, dict):
            children = [(f"{prefix}.{key}" if prefix else str(key), key, value) for key, value in node.items()]
        elif isinstance(node, list):
            children = [(f"{prefix}[{i}]", None, value) for i, value in enumerate(node)]
        else:
            continue
        for path, key, value in children:
            if key in CODE_KEYS:
                return path
            stack.append((path, value))
    return None
