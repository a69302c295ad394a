"""Per-step sampler primitives for flow matching (t = 1 is noise, t = 0 is data).

Pure functions, k-diffusion style. Shapes: latents ``[B, T, C]``; a time ``t`` is
a float or a ``[B, 1, 1]`` tensor; a curve is a float or a ``[B|1, T, 1]`` tensor
(one value per frame, already validated by ``curves.normalize_curve``).

Path ``x_t = t * eps + (1 - t) * x0``; the model predicts ``v = eps - x0``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

Tensor = torch.Tensor


def x0_estimate(x_t: Tensor, t, v: Tensor, velocity_scale=1.0) -> Tensor:
    """``x0_hat = x_t - t * (v * vs)`` (vs: the velocity scale, scalar or per frame)."""
    if isinstance(velocity_scale, float) and velocity_scale == 1.0:
        return x_t - t * v
    return x_t - t * (v * velocity_scale)


def velocity_from_x0(x_t: Tensor, t, x0_hat: Tensor) -> Tensor:
    """Inverse of :func:`x0_estimate`: ``v = (x_t - x0_hat) / t`` (t > 0)."""
    return (x_t - x0_hat) / t


def euler_step(x_t: Tensor, v: Tensor, t_cur, t_next, velocity_scale=1.0, noise: Tensor | None = None, ode_noise=0.0) -> Tensor:
    """``x_n = x_t + (t_n - t_c) * v * vs`` plus optional ODE noise ``randn * onc * t_n``."""
    x_next = x_t + (t_next - t_cur) * v * velocity_scale
    if noise is not None and not (isinstance(ode_noise, float) and ode_noise == 0.0):
        x_next = x_next + noise * ode_noise * t_next
    return x_next


def sde_renoise(x0_hat: Tensor, t_next, noise: Tensor) -> Tensor:
    """``x_n = t_n * eps + (1 - t_n) * x0_hat`` with fresh ``eps``."""
    return t_next * noise + (1.0 - t_next) * x0_hat


def source_blend(x0_hat: Tensor, x_src: Tensor, s) -> Tensor:
    """``s * x0_hat + (1 - s) * x_src``: s = 1 keeps the model, s = 0 pins to the source."""
    if isinstance(s, float) and s == 1.0:
        return x0_hat
    return s * x0_hat + (1.0 - s) * x_src


def sde_blend_step(x0_hat: Tensor, x_src: Tensor, s, t_next, noise: Tensor) -> Tensor:
    """Mechanism 3: ``x_n = t_n * eps + (1 - t_n) * (s * x0_hat + (1 - s) * x_src)``.

    At the last step (t_n = 0) this is exactly ``s * x0_hat + (1 - s) * x_src``.
    """
    return sde_renoise(source_blend(x0_hat, x_src, s), t_next, noise)


def morph_x0(x0_hat: Tensor, target: Tensor, strength) -> Tensor:
    """x0-target morph: ``x0_hat <- (1 - a) * x0_hat + a * x_target``."""
    return (1.0 - strength) * x0_hat + strength * target


def initial_state(noise: Tensor, source: Tensor | None = None, t0: float = 1.0, init_noise=None) -> Tensor:
    """The first noisy latent of a slot.

    - no source: pure noise ``eps``;
    - a source and a per-frame initial-noise curve c: ``c * eps + (1 - c) * x_src``;
    - a source and denoise < 1: ``t0 * eps + (1 - t0) * x_src`` (t0 = first shifted timestep).
    """
    if source is None:
        return noise.clone()
    level = t0 if init_noise is None else init_noise
    return level * noise + (1.0 - level) * source


def mask_input(x_t: Tensor, mask, x_orig: Tensor, t, noise_m: Tensor) -> Tensor:
    """Inpainting, before the forward: ``m * x_t + (1 - m) * (t_c * eps_m + (1 - t_c) * x_orig)``."""
    return mask * x_t + (1.0 - mask) * (t * noise_m + (1.0 - t) * x_orig)


def mask_x0(x0_hat: Tensor, mask, x_orig: Tensor) -> Tensor:
    """Inpainting, after the forward: ``x0_hat <- m * x0_hat + (1 - m) * x_orig``."""
    return mask * x0_hat + (1.0 - mask) * x_orig


def blend_velocities(velocities: Sequence[Tensor], weights: Sequence) -> Tensor:
    """Multi-condition blend per frame: ``v = sum(w_i v_i) / max(sum w_i, 1e-8)``."""
    if len(velocities) == 1 and isinstance(weights[0], float) and weights[0] > 0:
        return velocities[0]
    total = None
    weight_sum = None
    for v, w in zip(velocities, weights):
        total = w * v if total is None else total + w * v
        weight_sum = w if weight_sum is None else weight_sum + w
    if isinstance(weight_sum, float):
        return total / max(weight_sum, 1e-8)
    return total / weight_sum.clamp_min(1e-8)


def condition_active(fraction: float, start: float, end: float) -> bool:
    """A condition with step range [start, end) is active at schedule fraction ``i / S``."""
    return start <= fraction < end or (end >= 1.0 and fraction >= 1.0)


@dataclass
class MomentumBuffer:
    """APG momentum: ``running = diff + momentum * running`` (per slot)."""

    running: Tensor | None = None

    def update(self, diff: Tensor, momentum: float) -> Tensor:
        self.running = diff if self.running is None else diff + momentum * self.running
        return self.running


def cfg(v_cond: Tensor, v_uncond: Tensor, scale) -> Tensor:
    """Classifier-free guidance: ``v_u + g * (v_c - v_u)``."""
    return v_uncond + scale * (v_cond - v_uncond)


def apg(v_cond: Tensor, v_uncond: Tensor, scale, buffer: MomentumBuffer | None = None, momentum: float = -0.75,
        norm_threshold: float = 2.5, eta: float = 0.0) -> Tensor:
    """Adaptive projected guidance as ACE-Step runs it, with norms over TIME (dim 1 of ``[B, T, C]``).

    ``d = v_c - v_u``; momentum ``r <- d + m * r``, ``d = r``; clip ``d <- d * min(1, thr / ||d||)``;
    project ``d`` onto ``v_c`` (float64) and keep ``u = d_orth + eta * d_par``;
    ``v = v_c + (g - 1) * u``. Every norm is one L2 norm per (batch row, channel) over
    frames. ``g`` may be a per-frame curve.
    """
    diff = v_cond - v_uncond
    if buffer is not None:
        diff = buffer.update(diff, momentum)
    if norm_threshold > 0:
        norm = diff.norm(p=2, dim=1, keepdim=True)
        diff = diff * torch.clamp(norm_threshold / norm, max=1.0)  # a zero norm gives inf -> 1
    d, unit = diff.double(), torch.nn.functional.normalize(v_cond.double(), dim=1)
    parallel = (d * unit).sum(dim=1, keepdim=True) * unit
    orthogonal = (d - parallel).to(diff.dtype)
    return v_cond + (scale - 1.0) * (orthogonal + eta * parallel.to(diff.dtype))


def cfg_rescale(v_guided: Tensor, v_cond: Tensor, phi: float) -> Tensor:
    """CFG-rescale: ``v <- phi * v * ||v_c|| / ||v|| + (1 - phi) * v``, norms per channel over time (dim 1)."""
    if phi == 0.0:
        return v_guided
    ratio = v_cond.norm(p=2, dim=1, keepdim=True) / v_guided.norm(p=2, dim=1, keepdim=True).clamp_min(1e-12)
    return phi * (v_guided * ratio) + (1.0 - phi) * v_guided


def channel_gain(x: Tensor, gain) -> Tensor:
    """Denoiser-input channel gain: ``x * g`` with ``g`` of shape ``[1, T|1, C]`` (or a float)."""
    if isinstance(gain, float) and gain == 1.0:
        return x
    return x * gain



# -- DCW: post-step wavelet correction (single-level Haar along time) --------------------------
DCW_MODES = ("off", "low", "high", "double", "pix")


def haar_dwt(x: Tensor) -> tuple[Tensor, Tensor]:
    """Orthonormal single-level Haar DWT along time (dim 1): ``L = (x_2i + x_2i+1) / sqrt 2``,
    ``H = (x_2i - x_2i+1) / sqrt 2``. An odd length repeats its last frame."""
    if x.shape[1] % 2:
        x = torch.cat([x, x[:, -1:]], dim=1)
    even, odd = x[:, 0::2], x[:, 1::2]
    return (even + odd) * _INV_SQRT2, (even - odd) * _INV_SQRT2


def haar_idwt(low: Tensor, high: Tensor, frames: int) -> Tensor:
    """Inverse of :func:`haar_dwt`, cropped to ``frames``."""
    even, odd = (low + high) * _INV_SQRT2, (low - high) * _INV_SQRT2
    return torch.stack([even, odd], dim=2).reshape(low.shape[0], -1, low.shape[2])[:, :frames]


def band_curve(curve, band_frames: int):
    """A per-frame scaler ``[1, T, 1]`` resampled to a Haar band (mean of each frame pair); floats pass."""
    if not isinstance(curve, Tensor):
        return curve
    if curve.shape[1] % 2:
        curve = torch.cat([curve, curve[:, -1:]], dim=1)
    return 0.5 * (curve[:, 0::2] + curve[:, 1::2])[:, :band_frames]


def dcw(x_next: Tensor, y: Tensor, t, mode: str, s_low=0.05, s_high=0.02) -> Tensor:
    """DCW, after the step. ``y = x_t - t_c * v`` (v after guidance, before the velocity scale),
    ``t`` the step's current time t_c. With L/H the Haar bands of ``x_next`` and ``y``:

    - ``low``:    ``x_L += t * s_low * (x_L - y_L)``
    - ``high``:   ``x_H += (1 - t) * s_high * (x_H - y_H)``
    - ``double``: both;
    - ``pix``:    ``x_n += s_low * (x_n - y)`` (no transform);
    - ``off``:    ``x_n`` unchanged.
    """
    if mode == "off":
        return x_next
    if mode == "pix":
        return x_next + s_low * (x_next - y)
    x_low, x_high = haar_dwt(x_next)
    y_low, y_high = haar_dwt(y)
    if mode in ("low", "double"):
        x_low = x_low + t * band_curve(s_low, x_low.shape[1]) * (x_low - y_low)
    if mode in ("high", "double"):
        x_high = x_high + (1.0 - t) * band_curve(s_high, x_high.shape[1]) * (x_high - y_high)
    return haar_idwt(x_low, x_high, x_next.shape[1])


_INV_SQRT2 = 0.5 ** 0.5
