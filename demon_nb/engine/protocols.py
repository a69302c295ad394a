"""The engine's contracts with models (k-diffusion's lesson: one small contract).

The engine never imports a concrete model; anything that satisfies these
protocols can be played. Shapes: latents are ``[B, T, C]`` (T frames at the
codec's frame rate, C channels), timesteps ``[B]`` with t = 1 pure noise.
"""

from __future__ import annotations

from typing import Any, Protocol, Sequence, runtime_checkable

import torch


@runtime_checkable
class Denoiser(Protocol):
    """Predicts the flow-matching velocity ``v = eps - x0``.

    ``collate`` turns per-row conditions (whatever the model's text encoder
    returned) and optional per-row context latents ``[T, Cc]`` into one batched
    condition; ``velocity`` runs one batched forward.
    """

    channels: int

    def velocity(self, x: torch.Tensor, t: torch.Tensor, cond: Any) -> torch.Tensor:
        """``v [B, T, C]`` for noisy latents ``x [B, T, C]`` at times ``t [B]``."""
        ...

    def collate(self, conds: Sequence[Any], contexts: Sequence[torch.Tensor | None]) -> Any:
        """Batch ``len(conds)`` rows of conditioning (and context latents) for one forward."""
        ...

    def unconditional(self) -> Any:
        """The null condition used for the negative rows of classifier-free guidance."""
        ...

    def cover_context(self, source: torch.Tensor) -> torch.Tensor | None:
        """The context latent for a request with source latent ``source [T, C]`` (cover/edit).

        Optional in effect: a model that reads no context returns None.
        """
        ...


@runtime_checkable
class Codec(Protocol):
    """Audio <-> latent. ``decode`` must be deterministic with a finite reach.

    ``receptive_field = (left, right)``: output samples of frame f depend only on
    latent frames ``[f - left, f + right]``.
    """

    sample_rate: int
    hop: int
    channels: int
    audio_channels: int
    receptive_field: tuple[int, int]

    def encode(self, audio: torch.Tensor) -> torch.Tensor:
        """``audio [B, A, N]`` at ``sample_rate`` -> latent ``[B, N // hop, C]``."""
        ...

    def decode(self, latent: torch.Tensor, offset: int = 0) -> torch.Tensor:
        """latent ``[B, T, C]`` -> ``audio [B, A, T * hop]``.

        ``offset`` (optional: only position-dependent codecs, e.g. with an absolute
        oscillator phase, declare it): absolute frame index of ``latent[:, 0]``. The
        windowed decode passes it only to a codec whose ``decode`` has it, and batches
        the windows of a position-independent codec into one call.
        """
        ...


@runtime_checkable
class TextEncoder(Protocol):
    def encode(self, prompt: str) -> Any:
        """One condition (uncollated) for the denoiser."""
        ...
