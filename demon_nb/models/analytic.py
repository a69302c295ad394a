"""An analytic test denoiser: the exact optimal denoiser of a Gaussian mixture.

Data: every frame of a latent is drawn independently from a per-label mixture
of K isotropic Gaussians ``N(mu_k, sigma^2 I)`` in C channels. On the path
``x_t = t eps + (1 - t) x0`` a frame given component k is ``N((1-t) mu_k, s_t^2 I)``
with ``s_t^2 = (1-t)^2 sigma^2 + t^2``, so the posterior mean is

    E[x0 | x_t] = sum_k w_k (mu_k + (1-t) sigma^2 / s_t^2 (x_t - (1-t) mu_k)),
    w_k = softmax_k(-||x_t - (1-t) mu_k||^2 / (2 s_t^2)),

and the velocity is ``v = (x_t - E[x0 | x_t]) / t``. The label -1 (unconditional)
mixes all labels' components. Rows are computed independently (elementwise ops
and per-row reductions only), so results do not depend on the batch size.
"""

from __future__ import annotations

from typing import Sequence

import torch

from . import Model


class AnalyticDenoiser:
    def __init__(self, channels: int = 8, labels: int = 4, components: int = 3, sigma: float = 0.2, seed: int = 0,
                 device="cpu", dtype=torch.float32):
        g = torch.Generator().manual_seed(seed)
        self.channels, self.labels, self.sigma = channels, labels, sigma
        self.means = (2.0 * torch.randn(labels, components, channels, generator=g)).to(device, dtype)
        self.device, self.dtype = torch.device(device), dtype

    def unconditional(self) -> int:
        return -1

    def collate(self, conds: Sequence[int], contexts: Sequence) -> torch.Tensor:
        for c in conds:
            if isinstance(c, bool) or not isinstance(c, int) or not -1 <= c < self.labels:
                raise ValueError(f"cond: expected a label in -1..{self.labels - 1}, got {c!r}")
        return torch.tensor(list(conds), device=self.device)

    def cover_context(self, source: torch.Tensor) -> None:
        """None: the analytic model reads no context."""
        return None

    def _component_means(self, labels: torch.Tensor) -> torch.Tensor:
        """[B, K', C]: each row's label components; label -1 takes all of them."""
        everything = self.means.reshape(1, -1, self.channels)
        own = self.means[labels.clamp_min(0)].repeat(1, self.labels, 1)  # pad to the same K'
        return torch.where((labels < 0).reshape(-1, 1, 1), everything, own)

    def posterior_mean(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        mu = self._component_means(labels)[:, None]  # [B, 1, K, C]
        t = t.reshape(-1, 1, 1, 1)
        var = (1 - t) ** 2 * self.sigma**2 + t**2
        centred = x[:, :, None, :] - (1 - t) * mu  # [B, T, K, C]
        logits = -(centred**2).sum(-1, keepdim=True) / (2 * var)
        weights = torch.softmax(logits, dim=2)
        component_x0 = mu + (1 - t) * self.sigma**2 / var * centred
        return (weights * component_x0).sum(dim=2)

    def velocity(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        x0 = self.posterior_mean(x, t, cond)
        return (x - x0) / t.clamp_min(1e-4).reshape(-1, 1, 1)

    def sample_data(self, label: int, frames: int, seed: int = 0) -> torch.Tensor:
        """A latent [T, C] drawn from the label's mixture (frames independent)."""
        g = torch.Generator().manual_seed(seed)
        k = torch.randint(0, self.means.shape[1], (frames,), generator=g)
        noise = torch.randn(frames, self.channels, generator=g).to(self.device, self.dtype)
        return self.means[label, k] + self.sigma * noise


class IdentityCodec:
    """A trivial codec for the analytic model: one sample per frame, channel mean as audio."""

    sample_rate, hop, audio_channels, receptive_field = 25, 1, 1, (0, 0)

    def __init__(self, channels: int):
        self.channels = channels

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        """``tanh(channel mean)`` per frame (position-independent: no ``offset``)."""
        return torch.tanh(latent.mean(-1, keepdim=True)).transpose(1, 2)

    def encode(self, audio: torch.Tensor) -> torch.Tensor:
        return audio.mean(1, keepdim=True).transpose(1, 2).expand(-1, -1, self.channels).contiguous()


class LabelEncoder:
    """Text encoder for the analytic model: the prompt is a label number ("" = unconditional)."""

    def __init__(self, labels: int):
        self.labels = labels

    def encode(self, prompt: str) -> int:
        if prompt.strip() == "":
            return -1
        if not prompt.strip().lstrip("-").isdigit() or not 0 <= int(prompt) < self.labels:
            raise ValueError(f"prompt: the analytic model takes a label 0..{self.labels - 1} or '', got {prompt!r}")
        return int(prompt)


def load(frames: int = 64, channels: int = 8, labels: int = 4, seed: int = 0, device="cpu", dtype=torch.float32) -> Model:
    denoiser = AnalyticDenoiser(channels, labels, seed=seed, device=device, dtype=dtype)
    return Model("analytic", denoiser, IdentityCodec(channels), LabelEncoder(labels), frames,
                 {"steps": 8, "shift": 3.0, "cfg_mode": "none", "guidance_scale": 1.0})
