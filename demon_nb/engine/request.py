"""What one slot generates: its request (submission class: felt by slots born after it).

A :class:`Request` is plain data from the user; :func:`prepare` validates it
against the ring's latent shape and normalizes every curve once, so the tick
never validates anything.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

import torch

from .checks import check_int
from .curves import check_latent, normalize_curve
from .schedule import check_explicit_timesteps, check_schedule_args

CFG_MODES = ("none", "full", "residual-initialize", "residual-self")
MAX_SEED = 2**63 - 1


@dataclass(frozen=True)
class Condition:
    """An extra positive condition blended per frame: active for schedule fractions [start, end)."""

    cond: Any
    context: torch.Tensor | None = None
    weight: Any = 1.0  # scalar or per-frame curve, >= 0
    start: float = 0.0
    end: float = 1.0


@dataclass(frozen=True)
class Request:
    cond: Any
    context: torch.Tensor | None = None
    seed: int = 0
    source: torch.Tensor | None = None  # [T, C]
    denoise: float = 1.0  # < 1 needs a source; ignored (treated as 1) without one
    noise: torch.Tensor | None = None  # explicit initial noise [T, C]
    init_noise: Any = None  # per-frame initial-noise curve c (needs a source)
    x0_target: torch.Tensor | None = None  # [T, C], strength lives in the shared state
    mask: Any = None  # per-frame inpainting mask m, 1 = generate (needs a source)
    conditions: tuple[Condition, ...] = ()  # extra positive conditions
    weight: Any = 1.0  # per-frame weight of the main condition in the blend
    negative: Any = None  # negative condition; None = the denoiser's unconditional()
    cfg_mode: str = "none"
    timesteps: tuple[float, ...] | None = None  # explicit schedule (overrides steps/shift/denoise)
    shift: float | None = None  # None = the ring's shift
    steps: int | None = None  # None = the ring's steps
    tag: Any = None  # free-form, returned with the completion
    adapter: str | None = None  # the LoRA adapter this slot runs with (None: the base network), see Ring.select_adapter
    version: int = 0  # the submission-control version this request was built under


def _check_condition_weight(name: str, value, frames: int, device, dtype):
    return normalize_curve(name, value, frames, 0.0, 1e6, device, dtype)


def prepare(request: Request, frames: int, channels: int, device, dtype) -> Request:
    """Validate a request for a ``[frames, channels]`` ring; returns a normalized copy."""
    if not isinstance(request, Request):
        raise ValueError(f"request: expected a demon_nb.engine.request.Request, got {type(request).__name__}")
    check_int("seed", request.seed, 0, MAX_SEED)
    if request.cfg_mode not in CFG_MODES:
        raise ValueError(f"cfg_mode: expected one of {list(CFG_MODES)}, got {request.cfg_mode!r}")
    check_schedule_args(1 if request.steps is None else request.steps,
                        1.0 if request.shift is None else request.shift, request.denoise)

    def latent(name):
        value = getattr(request, name)
        return None if value is None else check_latent(name, value, frames, channels).to(device, dtype)

    source, noise, target = latent("source"), latent("noise"), latent("x0_target")
    if source is None and request.init_noise is not None:
        raise ValueError("init_noise: a per-frame initial-noise curve needs a source latent")
    if source is None and request.mask is not None:
        raise ValueError("mask: inpainting needs a source latent (the frames to keep)")
    init_noise = None if request.init_noise is None else normalize_curve("init_noise", request.init_noise, frames, 0.0, 1.0, device, dtype)
    mask = None if request.mask is None else normalize_curve("mask", request.mask, frames, 0.0, 1.0, device, dtype)
    timesteps = None if request.timesteps is None else check_explicit_timesteps(request.timesteps)
    conditions = []
    for i, c in enumerate(request.conditions):
        if not isinstance(c, Condition):
            raise ValueError(f"conditions[{i}]: expected a Condition, got {type(c).__name__}")
        if not (0.0 <= c.start < c.end <= 1.0) or not all(math.isfinite(x) for x in (c.start, c.end)):
            raise ValueError(f"conditions[{i}]: step range must satisfy 0 <= start < end <= 1, got [{c.start}, {c.end})")
        conditions.append(replace(c, weight=_check_condition_weight(f"conditions[{i}].weight", c.weight, frames, device, dtype)))
    # a snapshot: denoisers cache collated rows by identity, so a caller's later in-place edit must not leak in
    context = request.context.clone() if isinstance(request.context, torch.Tensor) else request.context
    return replace(
        request, source=source, noise=noise, x0_target=target, init_noise=init_noise, mask=mask,
        timesteps=timesteps, conditions=tuple(conditions), context=context,
        weight=_check_condition_weight("weight", request.weight, frames, device, dtype),
    )
