"""The schema of a config section: which keys it may hold and what each may be (no torch here).

A `Key` says whether a value is allowed and, in words, what is. `check_section` holds a section
(`train`, `mask`, a method's keys, ...) against its keys: an unknown key (a typo, or a `+key=`
that nothing reads) or a value of the wrong type or range is one `ConfigError` line naming the key,
raised before anything is loaded or written.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from omegaconf import ListConfig

from .errors import ConfigError


@dataclass(frozen=True)
class Key:
    """One config key: `ok(value)` says whether a value is allowed, `expect` says what is."""

    ok: Callable[[Any], bool]
    expect: str


def integer(low: int, high: int | None = None) -> Key:
    """An integer (not a bool) >= `low` and, given `high`, <= `high`."""
    if high is None:
        return Key(lambda v: _is_int(v) and v >= low, f"an integer >= {low}")
    return Key(lambda v: _is_int(v) and low <= v <= high, f"an integer in [{low}, {high}]")


def number(low: float, *, inclusive: bool = False, high: float | None = None, high_inclusive: bool = False) -> Key:
    """A finite real number (not a bool, NaN or inf) above `low` (or equal, `inclusive`) and below
    `high` (or equal): `train.lr=inf` would only diverge, in a run folder of its own."""
    def ok(v: Any) -> bool:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or \
                (isinstance(v, float) and not math.isfinite(v)):
            return False
        above = v >= low if inclusive else v > low
        below = high is None or (v <= high if high_inclusive else v < high)
        return above and below

    if high is not None and not inclusive:
        bounds = f"in ({low}, {high}{']' if high_inclusive else ')'}"
    elif high is not None:
        bounds = f"in [{low}, {high}{']' if high_inclusive else ')'}"
    else:
        bounds = f"{'>=' if inclusive else '>'} {low}"
    return Key(ok, f"a finite number {bounds}")


def choice(*options: str) -> Key:
    return Key(lambda v: v in options, "one of " + ", ".join(options))


def flag() -> Key:
    return Key(lambda v: isinstance(v, bool), "true or false")


def names() -> Key:
    return Key(lambda v: isinstance(v, (list, ListConfig)) and len(v) > 0 and all(isinstance(x, str) for x in v),
               "a non-empty list of module names")


def text() -> Key:
    return Key(lambda v: isinstance(v, str) and v != "", "a non-empty string")


def optional(key: Key) -> Key:
    """`key`, or null."""
    return Key(lambda v: v is None or key.ok(v), f"null or {key.expect}")


def anything(expect: str) -> Key:
    """Any value (checked elsewhere, e.g. `mask.keep_match` by the method registry)."""
    return Key(lambda v: True, expect)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def check_section(values: Mapping[str, Any], keys: Mapping[str, Key], where: str, *, required: bool = False,
                  owner: str = "") -> None:
    """`ConfigError` for a key of `values` not in `keys`, a value its `Key` refuses, or (`required`) a
    key of `keys` that `values` lacks. `where` prefixes the key in the message (`train` ->
    `train.lr`); `owner` says whose keys they are (`method lora`)."""
    whose = f" for {owner}" if owner else ""
    for key in values:
        if key not in keys:
            raise ConfigError(f"unknown key {where}.{key}{whose}; its keys are: {', '.join(sorted(keys))}")
    for key, spec in keys.items():
        if key not in values:
            if required:
                raise ConfigError(f"{where}.{key} is missing ({owner or where} needs it)")
            continue
        if not spec.ok(values[key]):
            raise ConfigError(f"{where}.{key} must be {spec.expect}, got {values[key]!r}")
