"""Timestep schedules for flow matching (t = 1 is pure noise, t = 0 is data).

``t = linspace(t_start, 0, S + 1)``, then the shift ``t' = k t / (1 + (k - 1) t)``.
A denoise ``d < 1`` keeps all S steps and starts lower: ``t_start = S / floor(S / d)``.
"""

from __future__ import annotations

import math
from functools import lru_cache

from .checks import check_int

# Denoise values are quantized to this grid before caching, so a moving slider
# produces a bounded number of distinct schedules (at most 1001 per steps/shift).
DENOISE_QUANTUM = 1e-3
MAX_STEPS = 1000


def shift_timestep(t: float, shift: float) -> float:
    """``t' = k t / (1 + (k - 1) t)``; ``k = 1`` is the identity."""
    return shift * t / (1.0 + (shift - 1.0) * t)


def start_time(steps: int, denoise: float) -> float:
    """``t_start = S / floor(S / d)`` for ``0 < d <= 1``, and 0 for ``d = 0``."""
    if denoise <= 0.0:
        return 0.0
    return steps / math.floor(steps / denoise + 1e-9)


def check_schedule_args(steps: int, shift: float, denoise: float) -> None:
    """Raise ValueError naming the first bad argument."""
    check_int("steps", steps, 1, MAX_STEPS)
    if not isinstance(shift, (int, float)) or not math.isfinite(shift) or not 0.05 <= shift <= 20.0:
        raise ValueError(f"shift: expected a number in [0.05, 20], got {shift!r}")
    if not isinstance(denoise, (int, float)) or not math.isfinite(denoise) or not 0.0 <= denoise <= 1.0:
        raise ValueError(f"denoise: expected a number in [0, 1], got {denoise!r}")


def quantize_denoise(denoise: float) -> float:
    return round(round(denoise / DENOISE_QUANTUM) * DENOISE_QUANTUM, 6)


def timesteps(steps: int, shift: float = 1.0, denoise: float = 1.0) -> tuple[float, ...]:
    """The S + 1 timesteps of one slot, from its (shifted) start down to exactly 0.

    A denoise that quantizes to 0 gives all zeros: the slot returns its source.
    """
    check_schedule_args(steps, shift, denoise)
    return _cached_timesteps(steps, round(float(shift), 6), quantize_denoise(float(denoise)))


@lru_cache(maxsize=512)
def _cached_timesteps(steps: int, shift: float, denoise: float) -> tuple[float, ...]:
    t_start = start_time(steps, denoise)
    raw = [t_start * (1.0 - i / steps) for i in range(steps + 1)]
    shifted = [shift_timestep(t, shift) for t in raw]
    shifted[-1] = 0.0
    return tuple(shifted)


def check_explicit_timesteps(values) -> tuple[float, ...]:
    """Validate user-given timesteps: finite, in [0, 1], non-increasing, ending at 0."""
    try:
        ts = tuple(float(v) for v in values)
    except (TypeError, ValueError):
        raise ValueError(f"timesteps: expected a sequence of numbers, got {values!r}") from None
    if len(ts) < 2:
        raise ValueError(f"timesteps: expected at least 2 values (one step), got {len(ts)}")
    if not all(math.isfinite(t) and 0.0 <= t <= 1.0 for t in ts):
        raise ValueError("timesteps: every value must be finite and in [0, 1]")
    if any(b > a for a, b in zip(ts, ts[1:])):
        raise ValueError("timesteps: values must be non-increasing (t = 1 is noise)")
    if ts[-1] != 0.0:
        raise ValueError(f"timesteps: the last value must be 0, got {ts[-1]}")
    return ts
