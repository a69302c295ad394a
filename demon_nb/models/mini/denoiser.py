"""The mini denoiser: diffusers' ``AceStepTransformer1DModel`` with a small config.

Same forward as ACE-Step 1.5: ``hidden_states [B, T, 64]``, ``timestep`` = ``timestep_r`` = t,
``context_latents [B, T, 128]`` = source latent (64) + chunk mask (64, 1 = source
present; without a source, the prompt's tempo clock fills the 4 clock channels), ``encoder_hidden_states`` = MiniLM token states + the tempo token projected 384 -> width by
a small learned projection (``TextProjection``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
from torch import nn

from ..identity_cache import IdentityCache
from .text import COND_TOKENS, WIDTH, condition_bpm

CHANNELS = 64
BATCH_CACHE = 4  # collated batches kept (a tick collates its positive and its negative rows)
DEFAULT_CONFIG = {
    "hidden_size": 128,
    "intermediate_size": 384,
    "num_hidden_layers": 4,
    "num_attention_heads": 2,
    "num_key_value_heads": 2,
    "head_dim": 64,
    "in_channels": 3 * CHANNELS,
    "audio_acoustic_hidden_dim": CHANNELS,
    "patch_size": 2,
    "sliding_window": 64,
    "encoder_hidden_size": 128,
}


def dit_class():
    """diffusers' ``AceStepTransformer1DModel`` (imported on first use)."""
    from diffusers import AceStepTransformer1DModel

    return AceStepTransformer1DModel


class TextProjection(nn.Module):
    """``LayerNorm(384) -> Linear(384, width)``: MiniLM states to the DiT's condition width."""

    def __init__(self, width: int, text_width: int = WIDTH) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(text_width)
        self.linear = nn.Linear(text_width, width)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.linear(self.norm(h))


class MiniNet(nn.Module):
    """DiT + text projection; ``forward(x, t, text, context) -> v``."""

    def __init__(self, config: dict | None = None) -> None:
        super().__init__()
        self.config = dict(DEFAULT_CONFIG, **(config or {}))
        self.dit = dit_class()(**self.config)
        self.text_proj = TextProjection(self.config["encoder_hidden_size"])

    def forward(self, x: torch.Tensor, t: torch.Tensor, text: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        out = self.dit(hidden_states=x, timestep=t, timestep_r=t, encoder_hidden_states=self.text_proj(text),
                       context_latents=context, return_dict=False)
        return out[0]


def tempo_context(bpm: float, frames: int) -> torch.Tensor:
    """``[T, 2C]`` context holding only the groove clock of ``bpm`` (downbeat at frame 0, normalized
    like a latent) with its mask: the tempo as a per-frame hint the DiT reads beside the source."""
    from . import layout as L
    from .norm import MEAN, STD

    ctx = torch.zeros(frames, 2 * CHANNELS)
    clock = torch.from_numpy(L.clock(frames, bpm, 0.0)).float()
    ctx[:, L.CLOCK] = (clock - torch.tensor(MEAN[L.CLOCK])) / torch.tensor(STD[L.CLOCK])
    ctx[:, CHANNELS + L.CLOCK.start:CHANNELS + L.CLOCK.stop] = 1.0
    return ctx


def make_context(source: torch.Tensor | None, frames: int, channels: int = CHANNELS,
                 bpm: float | None = None) -> torch.Tensor:
    """``[T, 2C]`` context: ``cat(source, mask)``; no source -> the tempo clock of ``bpm``
    (:func:`tempo_context`), or zeros (mask 0) without a tempo."""
    if source is None:
        return torch.zeros(frames, 2 * channels) if bpm is None else tempo_context(bpm, frames)
    source = torch.as_tensor(source, dtype=torch.float32)
    if source.ndim == 3 and source.shape[0] == 1:
        source = source[0]
    if source.ndim != 2 or source.shape[0] != frames or source.shape[1] not in (channels, 2 * channels):
        raise ValueError(f"context: expected [T={frames}, {channels}] (source) or [T, {2 * channels}] "
                         f"(source + mask), got {tuple(source.shape)}")
    if source.shape[1] == 2 * channels:
        return source
    return torch.cat([source, torch.ones_like(source)], dim=-1)


@dataclass
class MiniBatch:
    """Collated rows: stacked text states, per-row contexts (built once per loop length)."""

    text: torch.Tensor  # [B, COND_TOKENS, 384]
    contexts: tuple
    _context: dict = field(default_factory=dict)  # frames -> [B, T, 2C]

    def context(self, frames: int) -> torch.Tensor:
        if frames not in self._context:
            bpms = [condition_bpm(text) for text in self.text]
            self._context[frames] = torch.stack([make_context(c, frames, bpm=b) for c, b in zip(self.contexts, bpms)])
        return self._context[frames]


class MiniDenoiser:
    """Denoiser protocol around :class:`MiniNet` (velocity ``v = eps - x0``, t = 1 noise)."""

    channels = CHANNELS

    def __init__(self, net: MiniNet, unconditional: torch.Tensor) -> None:
        self.net = net.eval()
        self.dtype = next(net.parameters()).dtype
        self.forward = self.net  # the network call; ``use_backend`` swaps it
        self.backend = "eager"
        self._uncond = unconditional
        self._batches = IdentityCache(BATCH_CACHE)  # (conds + contexts) -> MiniBatch

    def use_backend(self, backend: str, frames: int, batch: int = 4, threads: int | None = None) -> None:
        """Run the network on ``backend`` (``demon_nb.accel``: eager, compile, onnx, tensorrt);
        ``threads``: ONNX Runtime intra-op threads."""
        from demon_nb.accel import accelerate

        example = (torch.zeros(batch, frames, CHANNELS), torch.ones(batch),
                   self._uncond.unsqueeze(0).expand(batch, -1, -1).contiguous().float(),
                   torch.zeros(batch, frames, 2 * CHANNELS))
        self.forward = accelerate(self.net, example, backend, max_batch=64, threads=threads)
        self.backend = backend

    def lora_target(self):
        """The DiT that takes LoRA adapters (``demon_nb.models.lora``)."""
        return self.net.dit

    def lora_changed(self, active: bool) -> None:
        """An exported network cannot scale an adapter in place: with a LoRA active the DiT runs
        eagerly (``backend`` says so); without one, on the backend it had."""
        if active and not self.backend.endswith("(LoRA active)"):
            self._accelerated = (self.forward, self.backend)
            self.forward, self.backend = self.net, "eager (LoRA active)"
        elif not active and self.backend.endswith("(LoRA active)"):
            self.forward, self.backend = self._accelerated

    def unconditional(self) -> torch.Tensor:
        """MiniLM states of the empty prompt (what condition dropout trained on)."""
        return self._uncond

    def cover_context(self, source: torch.Tensor) -> torch.Tensor:
        """The source latent itself (``make_context`` adds the mask)."""
        return source

    def collate(self, conds: Sequence[Any], contexts: Sequence[torch.Tensor | None]) -> MiniBatch:
        """Stack the rows once; the same rows (by identity) on later ticks reuse the cached batch."""
        if len(conds) != len(contexts):
            raise ValueError(f"contexts: expected one per condition ({len(conds)}), got {len(contexts)}")
        if not conds:
            raise ValueError("conds: expected at least one condition")
        rows = tuple(conds) + tuple(contexts)
        cached = self._batches.get(rows)
        if cached is not None:
            return cached
        texts = []
        for c in conds:
            c = torch.as_tensor(c, dtype=torch.float32)
            if c.shape != (COND_TOKENS, WIDTH):
                raise ValueError(f"conds: expected MiniLM states + tempo token [{COND_TOKENS}, {WIDTH}], "
                                 f"got {tuple(c.shape)}")
            texts.append(c)
        return self._batches.put(rows, MiniBatch(torch.stack(texts), tuple(contexts)))

    @torch.no_grad()
    def velocity(self, x: torch.Tensor, t: torch.Tensor, cond: MiniBatch) -> torch.Tensor:
        if x.ndim != 3 or x.shape[-1] != CHANNELS:
            raise ValueError(f"x: expected [B, T, {CHANNELS}], got {tuple(x.shape)}")
        b, frames, _ = x.shape
        t = torch.as_tensor(t, dtype=x.dtype).reshape(-1).expand(b) if torch.as_tensor(t).numel() == 1 else t
        if not isinstance(cond, MiniBatch):
            raise ValueError(f"cond: expected the result of collate(), got {type(cond).__name__}")
        text = cond.text
        if text.shape[0] != b:
            raise ValueError(f"cond: batch of {text.shape[0]} conditions for {b} rows")
        ctx = cond.context(frames)
        dtype = self.dtype
        v = self.forward(x.to(dtype), t.to(dtype), text.to(dtype), ctx.to(dtype))
        return v.to(x.dtype)
