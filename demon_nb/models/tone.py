"""A tone codec: the analytic model made audible, and :func:`playable`.

The analytic model's own codec runs far below audio rates; :class:`ToneCodec`
renders its latent as sines so it can be heard (in the instrument and in the
teaching notebooks).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch

from . import Model

MIN_BROWSER_RATE = 8_000  # the lowest AudioContext sample rate browsers accept
PENTATONIC = (0, 2, 4, 7, 9)


class ToneCodec:
    """A playback codec for models whose own codec runs below audio rates (the analytic model).

    Channel c drives a sine near a pentatonic pitch (from 220 Hz, snapped to a multiple of
    the frame rate so the sines are orthogonal over one hop) with amplitude
    ``a = sigmoid(2 x)``, interpolated linearly from frame to frame; the phase is
    absolute (``offset``), so windowed decodes join seamlessly. ``encode`` inverts it
    per frame: ``a_c = |sum_j x_j e^{-i w_c j}| * 2 / hop / scale``, ``x = logit(a) / 2``.
    """

    audio_channels = 1
    receptive_field = (0, 1)

    def __init__(self, inner, sample_rate: int = 16_000):
        self.channels = inner.channels
        self.sample_rate = sample_rate
        self.hop = max(1, round(sample_rate * inner.hop / inner.sample_rate))  # keeps the frame rate
        semis = [12 * (c // 5) + PENTATONIC[c % 5] for c in range(self.channels)]
        harmonics: list[int] = []  # pitches snapped to multiples of the frame rate: orthogonal over a hop
        for f in 220.0 * 2.0 ** (np.asarray(semis) / 12.0):
            k = max(1, round(f * self.hop / sample_rate))
            harmonics.append(max(k, harmonics[-1] + 1) if harmonics else k)
        self.omega = 2 * math.pi * np.asarray(harmonics, dtype=np.float64) / self.hop  # [C]
        self.scale = 0.6 / self.channels

    def decode(self, latent: torch.Tensor, offset: int = 0) -> torch.Tensor:
        z = latent.detach().float().cpu()
        a = torch.sigmoid(2 * z)  # [B, T, C]
        a_next = torch.cat([a[:, 1:], a[:, -1:]], dim=1)
        b, frames, _ = a.shape
        j = np.arange(self.hop)
        u = torch.from_numpy(j / self.hop).float()[None, None, :, None]  # [1, 1, hop, 1]
        start = np.mod(np.outer((np.arange(frames) + offset) * self.hop, self.omega), 2 * math.pi)  # [T, C]
        phase = start[:, None, :] + j[None, :, None] * self.omega[None, None, :]  # [T, hop, C], float64
        sines = torch.from_numpy(np.sin(phase).astype(np.float32))
        amp = a[:, :, None, :] * (1 - u) + a_next[:, :, None, :] * u  # [B, T, hop, C]
        audio = (amp * sines[None]).sum(-1) * self.scale  # [B, T, hop]
        return audio.reshape(b, 1, frames * self.hop).to(latent.dtype)

    def encode(self, audio: torch.Tensor) -> torch.Tensor:
        x = audio.detach().double().cpu().mean(1)  # [B, N]
        frames = max(1, x.shape[1] // self.hop)
        x = torch.nn.functional.pad(x, (0, max(0, frames * self.hop - x.shape[1])))[:, : frames * self.hop]
        j = np.arange(self.hop)
        basis = torch.from_numpy(np.exp(-1j * np.outer(self.omega, j)))  # [C, hop]
        amp = (x.reshape(-1, frames, self.hop).to(torch.complex128) @ basis.T).abs() * 2 / self.hop / self.scale
        amp = amp.clamp(1e-3, 1 - 1e-3)
        return (0.5 * torch.log(amp / (1 - amp))).float()


def playable(model: Model) -> Model:
    """The model itself, or (codec below browser audio rates) a copy with a :class:`ToneCodec`."""
    if model.codec.sample_rate >= MIN_BROWSER_RATE:
        return model
    return dataclasses.replace(model, codec=ToneCodec(model.codec))
