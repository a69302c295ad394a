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

    @property
    def loop_seconds(self) -> float:
        return self.frames * self.codec.hop / self.codec.sample_rate


def available() -> list[str]:
    return sorted(_REGISTRY)


def load(name: str = "mini", **options) -> Model:
    """Load a model by name (``analytic``, ``mini`` or ``acestep``)."""
    if name not in _REGISTRY:
        raise ValueError(f"model: unknown model {name!r}; expected one of {available()}")
    return importlib.import_module(_REGISTRY[name]).load(**options)
