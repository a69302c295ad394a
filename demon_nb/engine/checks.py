"""Validation where a value enters: each check returns the clean value or raises a
ValueError that names the parameter and what is allowed."""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np


def check_int(name: str, value: Any, lo: int, hi: int | None = None) -> int:
    """An integer (not a bool; numpy integers too) in ``lo..hi`` (``hi`` None: no upper bound)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) \
            or not lo <= value <= (value if hi is None else hi):
        allowed = f">= {lo}" if hi is None else f"in {lo}..{hi}"
        raise ValueError(f"{name}: expected an integer {allowed}, got {value!r}")
    return int(value)


def check_float(name: str, value: Any, lo: float, hi: float) -> float:
    """A finite number (not a bool) in ``[lo, hi]``, as a float."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or not lo <= value <= hi:
        raise ValueError(f"{name}: expected a finite number in [{lo}, {hi}], got {value!r}")
    return float(value)


def check_bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{name}: expected True or False, got {value!r}")
    return value


def check_choice(name: str, value: Any, choices: Sequence) -> Any:
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name}: expected one of {list(choices)}, got {value!r}")
    return value


def check_text(name: str, value: Any, max_chars: int) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{name}: expected text, got {type(value).__name__}")
    if len(value) > max_chars:
        raise ValueError(f"{name}: at most {max_chars} characters, got {len(value)}")
    return value
