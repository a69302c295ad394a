"""Mechanism 2: the shared, versioned, per-step state.

Every parameter the sampler reads at each solver step lives here. A write from
any thread is validated at once (ValueError naming the parameter and the allowed
range, never inside the tick), converted once to what the tick needs (a float
or a ``[1, T, 1]`` device tensor) and queued. At the next tick boundary the ring
calls :meth:`SharedState.snapshot`, which applies all queued writes atomically;
every in-flight slot then reads the same immutable :class:`Snapshot`.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Mapping

import torch

from .curves import normalize_channel_gain, normalize_curve
from .steps import DCW_MODES


@dataclass(frozen=True)
class Param:
    name: str
    kind: str  # "curve" (scalar or per-frame), "scalar", "choice", "gain" (per channel [and frame])
    default: Any
    lo: float = 0.0
    hi: float = 1.0
    choices: tuple = ()
    doc: str = ""


PARAMS: Mapping[str, Param] = MappingProxyType({p.name: p for p in (
    Param("velocity_scale", "curve", 1.0, 0.0, 4.0, doc="x0_hat = x_t - t_c * (v * vs); Euler: x_n = x_t + (t_n - t_c) * v * vs"),
    Param("source_blend", "curve", 1.0, 0.0, 1.0,
          doc="SDE re-noise toward s * x0_hat + (1 - s) * source, per frame (set + a source: taken whatever the solver)"),
    Param("ode_noise", "curve", 0.0, 0.0, 2.0, doc="ODE noise injection: + randn * onc * t_n"),
    Param("x0_target_strength", "curve", 0.0, 0.0, 1.0, doc="x0_hat <- (1 - a) x0_hat + a x_target"),
    Param("x0_target_gate", "scalar", 0.0, 0.0, 1.0, doc="morph only once the slot is this far (fraction) through its schedule"),
    Param("guidance_scale", "curve", 1.0, 0.0, 30.0, doc="CFG/APG scale g (1 = no guidance)"),
    Param("guidance_kind", "choice", "apg", choices=("apg", "cfg"), doc="APG (projected, momentum) or plain CFG"),
    Param("apg_momentum", "scalar", -0.75, -1.0, 1.0, doc="APG momentum: running = diff + m * running"),
    Param("apg_norm_threshold", "scalar", 2.5, 0.0, 100.0, doc="APG: clip ||diff|| per frame (0 = off)"),
    Param("cfg_rescale", "scalar", 0.0, 0.0, 1.0, doc="CFG-rescale phi"),
    Param("channel_gain", "gain", 1.0, 0.0, 4.0, doc="multiplier on the denoiser input, [1, T|1, C]"),
    Param("solver", "choice", "ode", choices=("ode", "sde"), doc="Euler ODE step or SDE re-noise step"),
    Param("dcw_mode", "choice", "off", choices=DCW_MODES, doc="DCW post-step wavelet correction: off, low, high, double, pix"),
    Param("dcw_scaler", "curve", 0.05, -1.0, 1.0, doc="DCW low band (and pix): x_L += t * s * (x_L - y_L)"),
    Param("dcw_high_scaler", "curve", 0.02, -1.0, 1.0, doc="DCW high band: x_H += (1 - t) * s * (x_H - y_H)"),
)})


@dataclass(frozen=True)
class Snapshot:
    """What one tick reads: parameter values plus the versions they carry."""

    values: Mapping[str, Any]
    version: int  # global version: the number of writes applied so far
    param_versions: Mapping[str, int]

    def __getitem__(self, name: str) -> Any:
        return self.values[name]


class SharedState:
    """Thread-safe versioned store; writes take effect at the next tick boundary."""

    def __init__(self, frames: int, channels: int, device="cpu", dtype=torch.float32, **initial):
        self.frames, self.channels = frames, channels
        self.device, self.dtype = torch.device(device), dtype
        self._lock = threading.Lock()
        self._version = 0
        self._pending: dict[str, Any] = {}
        values = {name: p.default for name, p in PARAMS.items()}
        self._snapshot = Snapshot(MappingProxyType(values), 0, MappingProxyType({n: 0 for n in PARAMS}))
        if initial:
            self.update(**initial)
            self.snapshot()

    # -- writes (any thread) -------------------------------------------------
    def normalize(self, name: str, value: Any) -> Any:
        """Validate one value and convert it to its tick form; ValueError names the parameter."""
        param = PARAMS.get(name)
        if param is None:
            raise ValueError(f"unknown shared parameter {name!r}; expected one of {sorted(PARAMS)}")
        if param.kind == "choice":
            if value not in param.choices:
                raise ValueError(f"{name}: expected one of {list(param.choices)}, got {value!r}")
            return value
        if param.kind == "gain":
            return normalize_channel_gain(name, value, self.frames, self.channels, param.lo, param.hi, self.device, self.dtype)
        if param.kind == "scalar":
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"{name}: expected a number in [{param.lo}, {param.hi}], got {type(value).__name__}")
        return normalize_curve(name, value, self.frames, param.lo, param.hi, self.device, self.dtype)

    def update(self, **values: Any) -> int:
        """Write several parameters atomically (all validated first). Returns the new version."""
        normalized = {name: self.normalize(name, value) for name, value in values.items()}
        with self._lock:
            for name, value in normalized.items():
                self._version += 1
                self._pending[name] = (value, self._version)
            return self._version

    def set(self, name: str, value: Any) -> int:
        return self.update(**{name: value})

    # -- reads ----------------------------------------------------------------
    def snapshot(self) -> Snapshot:
        """Apply queued writes atomically and return the state for this tick."""
        with self._lock:
            if self._pending:
                values = dict(self._snapshot.values)
                versions = dict(self._snapshot.param_versions)
                for name, (value, version) in self._pending.items():
                    values[name], versions[name] = value, version
                self._pending.clear()
                self._snapshot = Snapshot(MappingProxyType(values), self._version, MappingProxyType(versions))
            return self._snapshot

    def get(self, name: str) -> Any:
        """The latest written value (applied or still queued)."""
        with self._lock:
            if name in self._pending:
                return self._pending[name][0]
            return self._snapshot.values[name]

    @property
    def version(self) -> int:
        """Version of the latest write (applied or queued)."""
        return self._version

    def reset(self, name: str) -> int:
        return self.set(name, PARAMS[name].default)

    def resize(self, frames: int) -> None:
        """Loop-length rebuild: per-frame curves are resampled linearly to ``frames``."""
        with self._lock:
            self.frames = frames
            values = dict(self._snapshot.values)
            for name, value in list(values.items()) + [(n, v) for n, (v, _) in self._pending.items()]:
                if isinstance(value, torch.Tensor) and value.shape[1] not in (1, frames):
                    resized = torch.nn.functional.interpolate(value.transpose(1, 2), size=frames, mode="linear", align_corners=True).transpose(1, 2)
                    if name in self._pending:
                        self._pending[name] = (resized, self._pending[name][1])
                    else:
                        values[name] = resized
            self._snapshot = Snapshot(MappingProxyType(values), self._snapshot.version, self._snapshot.param_versions)
