"""Control binding: every control the instrument exposes, its propagation class,
and where a write goes. Pure Python (no widgets); thread-safe.

Classes (DESIGN.md section 4):
- ``step``: the shared per-step state (felt at the next tick);
- ``submission``: the next requests (prompt, denoise, seed, source, ...);
- ``rebuild``: steps (discards the slots in flight);
- ``structure``: depth (grows at once, drains on shrink);
- ``decode``: post-decode playback settings (next patch).
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import Any, Callable

import torch

from ..engine.curves import check_latent, normalize_curve
from ..engine.request import CFG_MODES, Condition, Request
from ..engine.ring import MAX_DEPTH, Ring
from ..engine.schedule import MAX_STEPS
from ..engine.state import PARAMS

MAX_PROMPT_CHARS = 2000
MAX_SEED = 2**31 - 1


@dataclass(frozen=True)
class Control:
    name: str
    klass: str
    label: str


STEP_CONTROLS = {name: Control(name, "step", name.replace("_", " ")) for name in PARAMS}
OTHER_CONTROLS = {c.name: c for c in (
    Control("prompt_a", "submission", "prompt A"),
    Control("prompt_b", "submission", "prompt B"),
    Control("prompt_blend", "submission", "A ↔ B blend"),
    Control("denoise", "submission", "denoise"),
    Control("seed", "submission", "seed"),
    Control("vary_seed", "submission", "new seed per completion"),
    Control("cfg_mode", "submission", "CFG mode"),
    Control("shift", "submission", "shift"),
    Control("init_noise", "submission", "initial noise curve"),
    Control("source", "submission", "source latent"),
    Control("x0_target", "submission", "x0 target latent"),
    Control("steps", "rebuild", "steps"),
    Control("depth", "structure", "depth"),
    Control("gain", "decode", "output gain"),
)}
CONTROLS = STEP_CONTROLS | OTHER_CONTROLS


def _check_str(name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{name}: expected text, got {type(value).__name__}")
    if len(value) > MAX_PROMPT_CHARS:
        raise ValueError(f"{name}: at most {MAX_PROMPT_CHARS} characters, got {len(value)}")
    return value


def _check_int(name: str, value: Any, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ValueError(f"{name}: expected an integer in {lo}..{hi}, got {value!r}")
    return value


def _check_float(name: str, value: Any, lo: float, hi: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or not lo <= value <= hi:
        raise ValueError(f"{name}: expected a finite number in [{lo}, {hi}], got {value!r}")
    return float(value)


class Controls:
    """The submission-class values and the router for every control write.

    ``set(name, value)`` validates at once (ValueError naming the control and what
    is allowed), routes the value to its class and returns the new version of that
    class. ``request()`` builds the next slot request from a consistent snapshot.
    """

    def __init__(self, ring: Ring, encode_prompt: Callable[[str], Any], *, prompt: str = "", seed: int = 0,
                 cfg_mode: str = "none", shift: float | None = None):
        self.ring, self.encode_prompt = ring, encode_prompt
        self._lock = threading.Lock()
        self.version = 0  # submission version, stamped on every request
        self.gain = 1.0
        self._values: dict[str, Any] = {
            "prompt_a": prompt, "prompt_b": "", "prompt_blend": 0.0, "denoise": 1.0, "seed": seed,
            "vary_seed": False, "cfg_mode": cfg_mode, "shift": shift, "init_noise": None, "source": None,
            "x0_target": None,
        }
        self._births = 0
        self._conds: dict[str, Any] = {}

    # -- writes -----------------------------------------------------------------------
    def set(self, name: str, value: Any) -> int:
        control = CONTROLS.get(name)
        if control is None:
            raise ValueError(f"unknown control {name!r}; expected one of {sorted(CONTROLS)}")
        if control.klass == "step":
            return self.ring.state.set(name, value)
        if control.klass == "rebuild":
            self.ring.rebuild(steps=_check_int(name, value, 1, MAX_STEPS))
            return self.ring.state.version
        if control.klass == "structure":
            self.ring.set_depth(_check_int(name, value, 1, MAX_DEPTH))
            return self.ring.state.version
        if control.klass == "decode":
            self.gain = _check_float(name, value, 0.0, 4.0)
            return self.version
        return self.update(**{name: value})

    def update(self, **values: Any) -> int:
        """Write several submission controls at once (one new version)."""
        checked = {name: self._check(name, value) for name, value in values.items()}
        for name in ("prompt_a", "prompt_b"):
            if name in checked:
                try:
                    self.condition(checked[name])  # encode now, off the tick thread; errors surface here
                except ValueError as error:
                    raise ValueError(f"{name}: {error}") from None
        with self._lock:
            self._values.update(checked)
            self.version += 1
            return self.version

    def _check(self, name: str, value: Any) -> Any:
        frames, channels = self.ring.frames, self.ring.channels
        if name not in OTHER_CONTROLS or OTHER_CONTROLS[name].klass != "submission":
            raise ValueError(f"unknown submission control {name!r}")
        if name in ("prompt_a", "prompt_b"):
            return _check_str(name, value)
        if name == "prompt_blend":
            return normalize_curve(name, value, frames, 0.0, 1.0, self.ring.device, self.ring.dtype)
        if name == "denoise":
            return _check_float(name, value, 0.0, 1.0)
        if name == "seed":
            return _check_int(name, value, 0, MAX_SEED)
        if name == "vary_seed":
            if not isinstance(value, bool):
                raise ValueError(f"vary_seed: expected True or False, got {value!r}")
            return value
        if name == "cfg_mode":
            if value not in CFG_MODES:
                raise ValueError(f"cfg_mode: expected one of {list(CFG_MODES)}, got {value!r}")
            return value
        if name == "shift":
            return None if value is None else _check_float(name, value, 0.05, 20.0)
        if name == "init_noise":
            return None if value is None else normalize_curve(name, value, frames, 0.0, 1.0, self.ring.device, self.ring.dtype)
        # source / x0_target: a [T, C] latent or None
        return None if value is None else check_latent(name, value, frames, channels).to(self.ring.device, self.ring.dtype)

    def get(self, name: str) -> Any:
        if name in PARAMS:
            return self.ring.state.get(name)
        if name == "steps":
            return self.ring.steps
        if name == "depth":
            return self.ring.depth
        if name == "gain":
            return self.gain
        with self._lock:
            return self._values[name]

    # -- the next request ------------------------------------------------------------
    def condition(self, prompt: str) -> Any:
        """Encoded prompt, cached (bounded) so the tick thread never runs the text encoder twice."""
        if prompt not in self._conds:
            if len(self._conds) >= 64:
                self._conds.pop(next(iter(self._conds)))
            self._conds[prompt] = self.encode_prompt(prompt)
        return self._conds[prompt]

    def request(self) -> Request:
        """The request for the next slot born: the current submission values."""
        with self._lock:
            v, version = dict(self._values), self.version
            self._births += 1
            birth = self._births
        blend = v["prompt_blend"]
        has_b = v["prompt_b"].strip() != "" and not (isinstance(blend, float) and blend == 0.0)
        conditions = ()
        weight: Any = 1.0
        if has_b:
            conditions = (Condition(self.condition(v["prompt_b"]), weight=blend),)
            weight = 1.0 - blend
        seed = (v["seed"] + birth) % (MAX_SEED + 1) if v["vary_seed"] else v["seed"]
        init_noise = v["init_noise"] if v["source"] is not None else None
        # the source is also the model's cover hint (context latents), when it takes one
        cover = getattr(self.ring.denoiser, "cover_context", None)
        context = None if v["source"] is None else (cover(v["source"]) if cover else v["source"])
        return Request(cond=self.condition(v["prompt_a"]), context=context, seed=seed, source=v["source"], denoise=v["denoise"],
                       init_noise=init_noise, x0_target=v["x0_target"], conditions=conditions, weight=weight,
                       cfg_mode=v["cfg_mode"], shift=v["shift"], version=version, tag=birth)


def as_float_list(value: Any) -> list[float] | float:
    """A control value for display: float, or a plain list for a per-frame curve."""
    if isinstance(value, torch.Tensor):
        return value.reshape(-1).tolist()
    return value
