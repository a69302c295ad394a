"""The sampler: one generation's per-step composition, k-diffusion style.

The ring (``ring.py``) and :func:`sample` (one request alone) run the very same
functions, so the teaching notebook, the identity check and the instrument all
show the real sampler. One step of a slot, in order (DESIGN.md section 3):

1. the denoiser input, the same for positive and negative rows
   (:func:`model_input`): mask pre-blend ``m * x_t + (1 - m) * (t_c * eps_m + (1 - t_c) * x_orig)``,
   then the channel gain;
2. the velocity: conditions blended per frame, then guidance (:func:`guide`:
   CFG or APG, CFG-rescale);
3. the step to ``t_n`` (:func:`step`): the Euler fast path when nothing needs
   ``x0_hat``, else the x0 path ``x0_hat = x_t - t_c * (v * vs)`` -> morph ->
   mask -> SDE re-noise (blended per frame toward the source when a
   source-blend curve is set and the slot has a source, whatever the solver) or
   an ODE step re-derived from ``x0_hat``;
4. DCW, the post-step wavelet correction (off by default).

Every random draw comes from the slot's own generator (a depth-D stream equals D
one-slot runs bit for bit).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import torch

from . import steps as S
from .request import Request

Tensor = torch.Tensor
Callback = Callable[[dict], None]


@dataclass
class Slot:
    """One in-flight generation: its request, noisy latent and its own schedule and generator."""

    request: Request
    schedule: tuple[float, ...]
    x: Tensor  # [1, T, C]
    generator: torch.Generator
    initial_noise: Tensor  # [1, T, C], also the residual-self "unconditional velocity"
    mask_noise: Tensor | None
    born_tick: int = 0
    noise: Tensor | None = None  # [1, T, C] buffer the per-step noise is drawn into
    step: int = 0
    momentum: S.MomentumBuffer = field(default_factory=S.MomentumBuffer)
    uncond_velocity: Tensor | None = None  # residual-initialize cache
    versions: list[int] = field(default_factory=list)
    express: bool = False  # born outside the cadence by the ring's express lane
    first_look: bool = False  # an express slot on a shorter schedule (Ring.express(first_look=k))

    @property
    def steps(self) -> int:
        return len(self.schedule) - 1

    @property
    def t(self) -> float:
        return self.schedule[self.step]

    @property
    def fraction(self) -> float:
        """How far through its schedule the slot is: ``i / S``."""
        return self.step / self.steps


def new_slot(request: Request, schedule: tuple[float, ...], shape: tuple[int, int, int], device, dtype,
             born_tick: int = 0) -> Slot:
    """Draw the initial noise (and the mask's noise) from the request's seed; build ``x`` at ``t0``:
    noise, ``t0 * eps + (1 - t0) * x_src`` with a source, or ``c * eps + (1 - c) * x_src`` with a curve."""
    generator = torch.Generator(device=device).manual_seed(request.seed)
    if request.noise is not None:
        noise = request.noise.reshape(shape)
    else:
        noise = torch.randn(shape, generator=generator, device=device, dtype=dtype)
    mask_noise = None
    if request.mask is not None:
        mask_noise = torch.randn(shape, generator=generator, device=device, dtype=dtype)
    x = S.initial_state(noise, request.source, schedule[0], request.init_noise)
    return Slot(request, schedule, x, generator, noise, mask_noise, born_tick=born_tick)


# -- 1. what the denoiser sees ------------------------------------------------------------------
def model_input(slot: Slot, state: Mapping[str, Any]) -> Tensor:
    """The denoiser input of this step, for positive and negative rows alike: mask pre-blend, gain."""
    x_in = slot.x
    if slot.request.mask is not None:
        x_in = S.mask_input(x_in, slot.request.mask, slot.request.source, slot.t, slot.mask_noise)
    return S.channel_gain(x_in, state["channel_gain"])


def positive_rows(slot: Slot) -> list[tuple[Any, Any, Any]]:
    """``(cond, context, weight)`` of every condition active at this step (the main one first)."""
    request = slot.request
    rows = [(request.cond, request.context, request.weight)]
    rows += [(c.cond, c.context, c.weight) for c in request.conditions
             if S.condition_active(slot.fraction, c.start, c.end)]
    return rows


def guided_now(slot: Slot, state: Mapping[str, Any]) -> bool:
    """Guidance applies at this step: a CFG mode is set and ``start <= 1 - t <= end`` (the interval
    of ACE-Step's ``cfg_interval_start`` / ``cfg_interval_end``)."""
    return (slot.request.cfg_mode != "none"
            and state["cfg_interval_start"] <= 1.0 - slot.t <= state["cfg_interval_end"])


def needs_negative(slot: Slot, state: Mapping[str, Any]) -> bool:
    """Full CFG runs the negative row at every guided step; residual-initialize once, at the slot's
    first step (its cache is filled whatever the interval)."""
    mode = slot.request.cfg_mode
    return ((mode == "full" and guided_now(slot, state))
            or (mode == "residual-initialize" and slot.uncond_velocity is None))


# -- 2. guidance --------------------------------------------------------------------------------------
def guide(slot: Slot, v_cond: Tensor, v_uncond: Tensor | None, state: Mapping[str, Any]) -> Tensor:
    """CFG or APG with the slot's momentum, then CFG-rescale. The unconditional velocity is the
    negative forward (full), cached from step 0 (residual-initialize) or the slot's initial
    noise (residual-self: zero extra forwards)."""
    mode = slot.request.cfg_mode
    if mode == "residual-initialize" and slot.uncond_velocity is None:
        slot.uncond_velocity = v_uncond
    if not guided_now(slot, state):
        return v_cond
    if mode == "residual-self":
        v_uncond = slot.initial_noise
    elif mode == "residual-initialize":
        v_uncond = slot.uncond_velocity
    scale = state["guidance_scale"]
    if state["guidance_kind"] == "apg":
        guided = S.apg(v_cond, v_uncond, scale, slot.momentum, state["apg_momentum"], state["apg_norm_threshold"])
    else:
        guided = S.cfg(v_cond, v_uncond, scale)
    return S.cfg_rescale(guided, v_cond, state["cfg_rescale"])


# -- 3. the step -----------------------------------------------------------------------------------------
def _is(value, default: float) -> bool:
    """True when a float control still holds its no-op value (a tensor curve never does)."""
    return isinstance(value, float) and value == default


def blends_source(request: Request, state: Mapping[str, Any]) -> bool:
    """Mechanism 3 is on: a source-blend curve is set (not the scalar 1) and the slot has a source."""
    return request.source is not None and not _is(state["source_blend"], 1.0)


def step(x_t: Tensor, v: Tensor, t_c: float, t_n: float, state: Mapping[str, Any], noise: Tensor,
         request: Request, fraction: float = 0.0, want_x0: bool = False) -> tuple[Tensor, Tensor | None]:
    """One solver step of one slot from ``t_c`` to ``t_n``; returns ``(x_next, x0_hat)``.

    ``v`` is the velocity after guidance; ``noise`` the step's fresh ``eps``; ``fraction``
    the slot's progress ``i / S`` (for the x0-target gate). ``x0_hat`` is None on the fast
    path unless ``want_x0``.
    """
    vs = state["velocity_scale"]
    morph = (request.x0_target is not None and fraction >= state["x0_target_gate"]
             and not _is(state["x0_target_strength"], 0.0))
    blend = blends_source(request, state)
    sde = blend or state["solver"] == "sde"
    x0_hat = None
    if not (sde or morph or request.mask is not None):
        # fast path: x_n = x_t + (t_n - t_c) * v * vs (+ ODE noise)
        x_next = S.euler_step(x_t, v, t_c, t_n, vs, noise, state["ode_noise"])
        if want_x0:
            x0_hat = S.x0_estimate(x_t, t_c, v, vs)
    else:
        x0_hat = S.x0_estimate(x_t, t_c, v, vs)
        if morph:
            x0_hat = S.morph_x0(x0_hat, request.x0_target, state["x0_target_strength"])
        if request.mask is not None:
            x0_hat = S.mask_x0(x0_hat, request.mask, request.source)
        if sde:
            anchor, s = (request.source, state["source_blend"]) if blend else (x0_hat, 1.0)
            x_next = S.sde_blend_step(x0_hat, anchor, s, t_n, noise)
        elif t_c == 0.0:
            x_next = x0_hat
        else:  # ODE from the x0 path: v_b = (x_t - x0_hat) / t_c, integrated with vs = 1
            x_next = S.euler_step(x_t, S.velocity_from_x0(x_t, t_c, x0_hat), t_c, t_n, 1.0, noise, state["ode_noise"])
    if state["dcw_mode"] != "off":
        x_next = S.dcw(x_next, S.x0_estimate(x_t, t_c, v), t_c, state["dcw_mode"],
                       state["dcw_scaler"], state["dcw_high_scaler"])
    return x_next, x0_hat


def advance(slot: Slot, velocities: list[Tensor], weights: list, v_uncond: Tensor | None,
            state: Mapping[str, Any], want_x0: bool = False) -> dict:
    """Blend, guide and step one slot in place; returns what a per-step callback sees:
    ``{"i", "t", "t_next", "x", "x0_hat", "x_next", "v"}``."""
    v = guide(slot, S.blend_velocities(velocities, weights), v_uncond, state)
    if slot.noise is None or _unwritable(slot.noise):  # contiguous: randn(out=) on strided memory draws other values
        slot.noise = torch.empty(slot.x.shape, device=slot.x.device, dtype=slot.x.dtype)
    noise = torch.randn(slot.x.shape, generator=slot.generator, out=slot.noise)
    t_c, t_n = slot.t, slot.schedule[slot.step + 1]
    x_t = slot.x
    x_next, x0_hat = step(x_t, v, t_c, t_n, state, noise, slot.request, slot.fraction, want_x0)
    info = {"i": slot.step, "t": t_c, "t_next": t_n, "x": x_t, "x0_hat": x0_hat, "x_next": x_next, "v": v}
    slot.x = x_next
    slot.step += 1
    return info


def forward(denoiser, xs: list[Tensor], ts: list[float], conds: list, contexts: list) -> Tensor:
    """One batched denoiser call over rows ``[1, T, C]`` (the ring uses persistent buffers instead)."""
    x = torch.cat(xs, dim=0)
    t = torch.tensor(ts, device=x.device, dtype=x.dtype)
    return denoiser.velocity(x, t, denoiser.collate(conds, contexts))


def sample(denoiser, request: Request, schedule: tuple[float, ...], state: Mapping[str, Any], *, frames: int,
           channels: int, device="cpu", dtype=torch.float32, callback: Callback | None = None) -> Tensor:
    """Run one prepared request alone on ``schedule``; returns the final latent ``[T, C]``.

    ``state`` is a shared-state snapshot (``SharedState(frames, channels).snapshot()``);
    ``callback(info)`` is called after every step with the dict of :func:`advance`
    (``x0_hat`` always filled). The same functions drive every slot of the ring.
    """
    slot = new_slot(request, schedule, (1, frames, channels), device, dtype)
    while slot.step < slot.steps:
        x_in = model_input(slot, state)
        rows = positive_rows(slot)
        v = forward(denoiser, [x_in] * len(rows), [slot.t] * len(rows), [r[0] for r in rows], [r[1] for r in rows])
        v_uncond = None
        if needs_negative(slot, state):
            negative = request.negative if request.negative is not None else denoiser.unconditional()
            v_uncond = forward(denoiser, [x_in], [slot.t], [negative], [request.context])
        info = advance(slot, [v[i:i + 1] for i in range(len(rows))], [r[2] for r in rows], v_uncond, state,
                       want_x0=callback is not None)
        if callback is not None:
            callback(info)
    return slot.x[0]


def _unwritable(buffer: Tensor) -> bool:
    """A buffer made under ``torch.inference_mode`` (the runner's ticks) cannot be written outside it."""
    return buffer.is_inference() and not torch.is_inference_mode_enabled()
