"""Model registry: ``load(name, **options) -> Model``.

A :class:`Model` bundles what the engine and the instrument need: a denoiser,
a codec and a text encoder behind the protocols in ``demon_nb.engine.protocols``,
plus the loop length and the sampler defaults the model was made for.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any

# name -> module with a ``load(**options) -> Model`` function
_REGISTRY = {
    "analytic": "demon_nb.models.analytic",
    "mini": "demon_nb.models.mini",
    "acestep": "demon_nb.models.acestep",
}


@dataclass
class Model:
    name: str
    denoiser: Any
    codec: Any
    text_encoder: Any
    frames: int  # loop length in latent frames
    defaults: dict = field(default_factory=dict)  # steps, shift, cfg_mode, guidance_scale, ...
    backends: dict = field(default_factory=dict)  # component -> demon_nb.accel backend
    channel_groups: dict = field(default_factory=dict)  # name -> (first, stop) latent channels, for tone controls

    @property
    def loop_seconds(self) -> float:
        return self.frames * self.codec.hop / self.codec.sample_rate

    def tone_groups(self) -> dict[str, tuple[int, int]]:
        """Named channel ranges for the tone controls: the model's own (mini: bass, notes, drums,
        brightness), else four equal ranges of its latent channels."""
        if self.channel_groups:
            return dict(self.channel_groups)
        channels = self.denoiser.channels
        edges = [round(i * channels / 4) for i in range(5)]
        return {f"channels {a}-{b - 1}": (a, b) for a, b in zip(edges, edges[1:]) if b > a}


def available() -> list[str]:
    return sorted(_REGISTRY)


def load(name: str = "mini", **options) -> Model:
    """Load a model by name (``analytic``, ``mini`` or ``acestep``)."""
    if name not in _REGISTRY:
        raise ValueError(f"model: unknown model {name!r}; expected one of {available()}")
    return importlib.import_module(_REGISTRY[name]).load(**options)
