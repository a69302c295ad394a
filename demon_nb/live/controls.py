"""Control binding: where a write goes, by the control's propagation class.

Every control, its class, range and default is declared once in
``demon_nb.engine.control_table``; this module routes writes (pure Python, no
widgets, thread-safe):

- ``step``: the shared per-step state (felt at the next tick);
- ``submission``: the next requests (prompt, denoise, seed, steps, shift, source, ...);
- ``structure``: depth (grows at once, drains on shrink);
- ``decode``: post-decode playback settings (next patch).
"""

from __future__ import annotations

import threading
from typing import Any, Callable

import torch

from ..engine.control_table import CONTROLS, spec, validate
from ..engine.curves import prompt_weights
from ..engine.request import MAX_SEED, Condition, Request
from ..engine.ring import Ring

SUBMISSION = tuple(name for name, row in CONTROLS.items() if row.klass == "submission")
PROMPT_MIX = (("prompt_b", "prompt_blend"), ("prompt_c", "prompt_c_weight"), ("prompt_d", "prompt_d_weight"))


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
        self.gain = CONTROLS["gain"].default
        self.decode_version = 0  # bumped by every decode-class write (patch versions key "decode")
        self._values: dict[str, Any] = {name: CONTROLS[name].default for name in SUBMISSION}
        self._values.update(prompt_a=prompt, seed=seed, cfg_mode=cfg_mode, shift=shift, steps=ring.steps)
        self._births = 0
        self.newest: torch.Tensor | None = None  # the newest completion latent (feedback), set by the runner
        self.adapter: str | None = None  # the LoRA adapter new slots take (set by the runner's LoraAdapters)
        self._conds: dict[str, Any] = {}
        self._conds_lock = threading.Lock()

    # -- writes -----------------------------------------------------------------------
    def set(self, name: str, value: Any) -> int:
        """Validate at once (ValueError naming the control and what is allowed), route the value
        to its class and return the version it will be heard under: the shared-state version
        for step and structure writes, the submission version for submission writes, the
        decode version for decode writes."""
        klass = spec(name).klass
        if klass == "step":
            return self.ring.state.set(name, value)
        if klass == "structure":
            self.ring.set_depth(validate(name, value, self.ring.frames, self.ring.channels))
            return self.ring.state.version
        if klass == "decode":
            gain = validate(name, value, self.ring.frames, self.ring.channels)
            with self._lock:
                self.gain = gain
                self.decode_version += 1
                return self.decode_version
        return self.update(**{name: value})

    def update(self, **values: Any) -> int:
        """Write several submission controls at once (one new version)."""
        for name in values:
            if spec(name).klass != "submission":
                raise ValueError(f"{name}: not a submission control (use set)")
        ring = self.ring
        checked = {name: validate(name, value, ring.frames, ring.channels, ring.device, ring.dtype)
                   for name, value in values.items()}
        for name in ("prompt_a", "prompt_b", "prompt_c", "prompt_d", "negative_prompt"):
            if name in checked:
                try:
                    self.condition(checked[name])  # encode now, off the tick thread; errors surface here
                except ValueError as error:
                    raise ValueError(f"{name}: {error}") from None
        with self._lock:
            self._values.update(checked)
            self.version += 1
            version, first_look = self.version, self._values["first_look"]
        # the next tick births a slot with the new values, outside the cadence (a first look)
        self.ring.express(first_look=first_look)
        return version

    def set_adapter(self, name: str | None) -> int:
        """A LoRA swap or unload (already loaded on the DiT): a submission change like a prompt,
        felt by the slots born from the next tick on (the first of them an express first look)."""
        with self._lock:
            self.adapter = name
            self.version += 1
            version, first_look = self.version, self._values["first_look"]
        self.ring.express(first_look=first_look)
        return version

    def get(self, name: str) -> Any:
        klass = spec(name).klass
        if klass == "step":
            return self.ring.state.get(name)
        if name == "depth":
            return self.ring.depth
        if name == "gain":
            return self.gain
        with self._lock:
            return self._values[name]

    # -- the next request ------------------------------------------------------------
    def condition(self, prompt: str) -> Any:
        """Encoded prompt, cached (bounded) so the tick thread never runs the text encoder twice.
        The encoder runs outside the lock; the cache is touched only under it."""
        with self._conds_lock:
            if prompt in self._conds:
                return self._conds[prompt]
        encoded = self.encode_prompt(prompt)
        with self._conds_lock:
            if len(self._conds) >= 64 and prompt not in self._conds:
                self._conds.pop(next(iter(self._conds)))
            return self._conds.setdefault(prompt, encoded)

    def request(self) -> Request:
        """The request for the next slot born: the current submission values."""
        with self._lock:
            v, version, adapter = dict(self._values), self.version, self.adapter
            self._births += 1
            birth = self._births
        # prompts B, C, D with their per-frame weights; A takes the rest (curves.prompt_weights)
        mixed = [(v[text], v[weight]) for text, weight in PROMPT_MIX
                 if v[text].strip() != "" and not (isinstance(v[weight], float) and v[weight] == 0.0)]
        weight: Any = 1.0
        conditions = ()
        if mixed:
            weight, others = prompt_weights([w for _, w in mixed])
            conditions = tuple(Condition(self.condition(text), weight=w) for (text, _), w in zip(mixed, others))
        seed = (v["seed"] + birth) % (MAX_SEED + 1) if v["vary_seed"] else v["seed"]
        source, newest = v["source"], self.newest
        if source is not None and v["feedback"] > 0 and newest is not None and newest.shape == source.shape:
            source = (1.0 - v["feedback"]) * source + v["feedback"] * newest.to(source.device, source.dtype)
        init_noise = v["init_noise"] if source is not None else None
        mask = v["mask"] if source is not None else None
        negative = self.condition(v["negative_prompt"]) if v["negative_prompt"].strip() else None
        # the source is also the model's cover hint (context latents), when it takes one
        context = None if source is None else self.ring.denoiser.cover_context(source)
        return Request(cond=self.condition(v["prompt_a"]), context=context, seed=seed, source=source, denoise=v["denoise"],
                       init_noise=init_noise, x0_target=v["x0_target"], mask=mask, conditions=conditions, weight=weight,
                       negative=negative, cfg_mode=v["cfg_mode"], shift=v["shift"], steps=v["steps"], version=version,
                       tag=birth, adapter=adapter)


def as_float_list(value: Any) -> list[float] | float:
    """A control value for display: float, or a plain list for a per-frame curve."""
    if isinstance(value, torch.Tensor):
        return value.reshape(-1).tolist()
    return value
