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

from .control_table import STEP_PARAMS, validate


# the step-class rows of the control table: name -> Spec (kind, range, default, help)
PARAMS = STEP_PARAMS


def state_defaults(model_defaults: Mapping[str, Any]) -> dict:
    """The shared-state values among a model's defaults (e.g. guidance_scale, cfg_interval_end)."""
    return {k: v for k, v in model_defaults.items() if k in PARAMS}


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
        if name not in PARAMS:
            raise ValueError(f"unknown shared parameter {name!r}; expected one of {sorted(PARAMS)}")
        return validate(name, value, self.frames, self.channels, self.device, self.dtype)

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
