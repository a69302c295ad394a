"""Validation and normalization of per-frame curves, done once where a value enters.

A curve parameter accepts a scalar or a sequence/array/tensor of length T
(frames). Scalars stay Python floats (free to use in the tick); curves become a
``[1, T, 1]`` tensor on the engine's device, so the tick reads them with no host
sync and no host-to-device copy.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

Curve = float | torch.Tensor  # float, or [1, T, 1] on the engine's device


def _as_array(name: str, value: Any) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().to("cpu", torch.float64).numpy()
    if isinstance(value, (str, bytes)) or value is None:
        raise ValueError(f"{name}: expected a number or a per-frame curve, got {type(value).__name__}")
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: expected a number or a per-frame curve of numbers, got {type(value).__name__}") from None
    return arr


def check_range(name: str, arr: np.ndarray, lo: float, hi: float) -> None:
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name}: values must be finite (no NaN or inf); allowed range [{lo}, {hi}]")
    if arr.size and (arr.min() < lo or arr.max() > hi):
        raise ValueError(f"{name}: values must be in [{lo}, {hi}], got min {arr.min():.4g}, max {arr.max():.4g}")


def normalize_curve(name: str, value: Any, frames: int, lo: float, hi: float, device=None, dtype=torch.float32) -> Curve:
    """Scalar -> float; length-T curve -> ``[1, T, 1]`` tensor. ValueError names ``name``."""
    if isinstance(value, bool):
        raise ValueError(f"{name}: expected a number or a per-frame curve, got bool")
    if isinstance(value, (int, float)):
        v = float(value)
        if not math.isfinite(v) or not lo <= v <= hi:
            raise ValueError(f"{name}: expected a finite number in [{lo}, {hi}], got {value!r}")
        return v
    arr = _as_array(name, value)
    if arr.ndim == 0:
        return normalize_curve(name, float(arr), frames, lo, hi, device, dtype)
    if arr.ndim > 1 and sorted(arr.shape)[:-1] == [1] * (arr.ndim - 1):
        arr = arr.reshape(-1)  # [1, T], [T, 1], [1, T, 1] ...
    if arr.ndim != 1 or arr.shape[0] != frames:
        raise ValueError(f"{name}: expected a scalar or a curve of length {frames} (one value per frame), got shape {tuple(arr.shape)}")
    check_range(name, arr, lo, hi)
    return torch.as_tensor(arr, dtype=dtype, device=device).reshape(1, frames, 1)


def normalize_channel_gain(name: str, value: Any, frames: int, channels: int, lo: float, hi: float, device=None, dtype=torch.float32) -> Curve:
    """Channel gain: scalar, ``[C]``, ``[T, C]`` or ``[1, T|1, C]`` -> float or ``[1, T|1, C]``."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return normalize_curve(name, value, frames, lo, hi)
    arr = _as_array(name, value)
    if arr.ndim == 1 and arr.shape[0] == channels:
        arr = arr.reshape(1, 1, channels)
    elif arr.ndim == 2 and arr.shape[1] == channels and arr.shape[0] in (1, frames):
        arr = arr.reshape(1, arr.shape[0], channels)
    elif not (arr.ndim == 3 and arr.shape[0] == 1 and arr.shape[1] in (1, frames) and arr.shape[2] == channels):
        raise ValueError(f"{name}: expected a scalar, [{channels}], [{frames}, {channels}] or [1, 1|{frames}, {channels}], got shape {tuple(arr.shape)}")
    check_range(name, arr, lo, hi)
    return torch.as_tensor(arr, dtype=dtype, device=device)


def check_latent(name: str, value: Any, frames: int, channels: int) -> torch.Tensor:
    """A ``[T, C]`` floating-point latent with finite values (``[1, T, C]`` is squeezed)."""
    if not isinstance(value, torch.Tensor):
        raise ValueError(f"{name}: expected a torch.Tensor of shape [{frames}, {channels}], got {type(value).__name__}")
    if value.ndim == 3 and value.shape[0] == 1:
        value = value[0]
    if tuple(value.shape) != (frames, channels):
        raise ValueError(f"{name}: expected shape [{frames}, {channels}] (frames, channels), got {list(value.shape)}")
    if not value.is_floating_point():
        raise ValueError(f"{name}: expected a floating-point tensor, got dtype {value.dtype}")
    if not bool(torch.isfinite(value).all()):
        raise ValueError(f"{name}: values must be finite (no NaN or inf)")
    return value


def prompt_weights(others: list) -> tuple:
    """Per-frame weights of prompt A and of the other prompts (each a scalar or a ``[1, T, 1]``
    curve in [0, 1]): with ``s = sum(others)``, ``w_A = max(0, 1 - s)`` and every weight divided
    by ``w_A + s`` (``= max(1, s)``), so the weights are convex per frame. ``s <= 1`` leaves the
    others as given (A <-> B blend: ``w_A = 1 - w_B``)."""
    total_others = sum(others) if others else 0.0
    if isinstance(total_others, torch.Tensor):
        w_a = torch.clamp(1.0 - total_others, min=0.0)
        norm = w_a + total_others
        return w_a / norm, [w / norm for w in others]
    w_a = max(0.0, 1.0 - total_others)
    norm = w_a + total_others
    return w_a / norm, [w / norm for w in others]
