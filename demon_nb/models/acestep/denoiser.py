"""The ACE-Step 1.5 DiT behind the engine's ``Denoiser`` protocol.

One forward: ``v = DiT(x, t, timestep_r = t, cond, context)`` with ``x [B, T, 64]``,
per-row ``t [B]`` and ``context [B, T, 128]`` = source/hint latent (64) + chunk
mask (64, ones = generate everything).

Cross-attention keys and values depend on the condition only, not on ``x`` or
``t``, so they are computed once per condition (``K = norm_k(W_k E)``, ``V = W_v E``
with ``E = condition_embedder(hidden)``) and reused at every step of every slot
that uses it. Rows whose conditions differ in length are padded and the padding
keys are masked out, so a row's output does not depend on its neighbours.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F

from ...engine.checks import check_int
from ..identity_cache import IdentityCache
from .text import AceCondition

PREPARED_CACHE = 32  # conditions whose K/V stay cached
BATCH_CACHE = 4  # collated batches kept (a tick collates its positive and its negative rows)


class CachedCrossAttention:
    """Attention processor that reads precomputed K/V while ``kv`` is set; else defers to the original."""

    def __init__(self, original):
        self.original = original
        self.kv: tuple[torch.Tensor, torch.Tensor, torch.Tensor | None] | None = None

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, image_rotary_emb=None):
        if self.kv is None:
            return self.original(attn, hidden_states, encoder_hidden_states=encoder_hidden_states,
                                 attention_mask=attention_mask, image_rotary_emb=image_rotary_emb)
        key, value, key_mask = self.kv  # [B, Hkv, L, Dh] each; mask [B, 1, 1, L] bool or None
        query = attn.norm_q(attn.to_q(hidden_states).unflatten(-1, (attn.heads, attn.head_dim))).transpose(1, 2)
        out = F.scaled_dot_product_attention(query, key, value, attn_mask=key_mask, scale=attn.scaling,
                                             enable_gqa=attn.heads != attn.kv_heads)
        out = out.transpose(1, 2).flatten(2, 3).to(query.dtype)
        return attn.to_out[1](attn.to_out[0](out))


@dataclass
class AceBatch:
    """A collated batch: per-layer cross-attention K/V, their padding mask, per-row contexts."""

    keys: list[torch.Tensor]
    values: list[torch.Tensor]
    key_mask: torch.Tensor | None
    contexts: tuple
    rows: int


class AceStepDenoiser:
    """``Denoiser`` around ``AceStepTransformer1DModel`` (velocity ``v = eps - x0``)."""

    def __init__(self, transformer, null_condition: torch.Tensor, silence_latent: torch.Tensor, *,
                 audio_tokenizer=None, audio_token_detokenizer=None):
        self.transformer = transformer.eval()
        config = transformer.config
        self.channels = int(config.audio_acoustic_hidden_dim)
        self.context_channels = int(config.in_channels) - self.channels
        self.param = next(transformer.parameters())
        self.null_condition = null_condition.detach().reshape(1, -1)
        self.silence = silence_latent.detach()  # [T0, C]
        self.audio_tokenizer = audio_tokenizer
        self.audio_token_detokenizer = audio_token_detokenizer
        self.processors = []
        for layer in transformer.layers:
            if getattr(layer, "use_cross_attention", False):
                proc = CachedCrossAttention(layer.cross_attn.processor)
                layer.cross_attn.set_processor(proc)
                self.processors.append((layer.cross_attn, proc))
        self._prepared = IdentityCache(PREPARED_CACHE)  # (cond,) -> per-layer K, V
        self._batches = IdentityCache(BATCH_CACHE)  # conds -> collated K/V (positive + negative rows)
        self._silence_context: dict[int, torch.Tensor] = {}
        self._uncond = AceCondition(self.null_condition, torch.ones(1, dtype=torch.bool, device=self.device),
                                    "", {"unconditional": True})

    def lora_target(self):
        """The DiT that takes LoRA adapters (``demon_nb.models.lora``)."""
        return self.transformer

    def lora_changed(self, active: bool) -> None:
        """The cached cross-attention K/V were made with the old weights: drop them."""
        self._prepared = IdentityCache(PREPARED_CACHE)
        self._batches = IdentityCache(BATCH_CACHE)

    @property
    def device(self) -> torch.device:
        return self.param.device

    @property
    def dtype(self) -> torch.dtype:
        return self.param.dtype

    # -- conditions ---------------------------------------------------------------
    def unconditional(self) -> AceCondition:
        """The learned ``null_condition_emb`` as a one-token condition (attention over
        identical keys is independent of how many there are, so one token equals the
        pipeline's broadcast to the conditional length)."""
        return self._uncond

    @torch.no_grad()
    def prepare(self, cond: AceCondition) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Per-layer cross-attention ``K, V [1, Hkv, L, Dh]`` of one condition (cached)."""
        if not isinstance(cond, AceCondition):
            raise ValueError(f"cond: expected an AceCondition from the ACE-Step text encoder, got {type(cond).__name__}")
        hit = self._prepared.get((cond,))
        if hit is not None:
            return hit
        hidden = cond.hidden.to(self.device, self.dtype)[None]
        embedded = self.transformer.condition_embedder(hidden)
        keys, values = [], []
        for attn, _ in self.processors:
            k = attn.norm_k(attn.to_k(embedded).unflatten(-1, (attn.kv_heads, attn.head_dim)))
            v = attn.to_v(embedded).unflatten(-1, (attn.kv_heads, attn.head_dim))
            keys.append(k.transpose(1, 2).contiguous())
            values.append(v.transpose(1, 2).contiguous())
        return self._prepared.put((cond,), (keys, values))

    def collate(self, conds: Sequence[AceCondition], contexts: Sequence[torch.Tensor | None]) -> AceBatch:
        """Stack the prepared K/V of each row (padded + masked when lengths differ)."""
        if len(conds) != len(contexts) or not conds:
            raise ValueError(f"conds/contexts: expected equal non-zero lengths, got {len(conds)} and {len(contexts)}")
        conds = tuple(conds)
        cached = self._batches.get(conds)
        if cached is not None:
            return AceBatch(cached.keys, cached.values, cached.key_mask, tuple(contexts), len(conds))
        prepared = [self.prepare(c) for c in conds]
        lengths = [p[0][0].shape[2] for p in prepared]
        longest = max(lengths)
        keys, values = [], []
        for layer in range(len(self.processors)):
            keys.append(_stack([p[0][layer] for p in prepared], longest))
            values.append(_stack([p[1][layer] for p in prepared], longest))
        key_mask = None
        if min(lengths) != longest:
            positions = torch.arange(longest, device=self.device)
            key_mask = (positions[None, :] < torch.tensor(lengths, device=self.device)[:, None])[:, None, None, :]
        return self._batches.put(conds, AceBatch(keys, values, key_mask, tuple(contexts), len(conds)))

    # -- contexts -----------------------------------------------------------------
    def silence_hint(self, frames: int) -> torch.Tensor:
        """Silence latent tiled/cut to ``[frames, C]``."""
        silence = self.silence
        if silence.shape[0] < frames:
            silence = silence.repeat(-(-frames // silence.shape[0]), 1)
        return silence[:frames]

    def context(self, hint: torch.Tensor) -> torch.Tensor:
        """``[T, C]`` hint latent -> context ``[T, 2C]`` = hint + chunk mask of ones."""
        hint = hint.to(self.device, self.dtype)
        return torch.cat([hint, torch.ones(hint.shape[0], self.context_channels - hint.shape[1],
                                           device=self.device, dtype=self.dtype)], dim=-1)

    def text2music_context(self, frames: int) -> torch.Tensor:
        """Text-to-music: the silence latent as the hint."""
        check_int("frames", frames, 1)
        if frames not in self._silence_context:
            self._silence_context = {frames: self.context(self.silence_hint(frames))}
        return self._silence_context[frames]

    @torch.no_grad()
    def cover_context(self, source: torch.Tensor) -> torch.Tensor:
        """Cover: source latent ``[T, C]`` -> semantic hints (tokenize + detokenize when
        those networks are loaded, else the latent itself) + chunk mask."""
        if source.ndim != 2 or source.shape[1] != self.channels:
            raise ValueError(f"source: expected a latent [T, {self.channels}], got {tuple(source.shape)}")
        hint = source.to(self.device, self.dtype)
        if self.audio_tokenizer is not None and self.audio_token_detokenizer is not None:
            quantized, _ = self.audio_tokenizer.tokenize(hint[None], self.silence[None].to(self.device, self.dtype))
            hint = self.audio_token_detokenizer(quantized.to(self.dtype))[0, : source.shape[0]]
        return self.context(hint)

    def _contexts(self, contexts: tuple, frames: int) -> torch.Tensor:
        rows = []
        for i, ctx in enumerate(contexts):
            if ctx is None:
                rows.append(self.text2music_context(frames))
                continue
            if ctx.shape != (frames, self.context_channels):
                raise ValueError(f"context[{i}]: expected [{frames}, {self.context_channels}], got {tuple(ctx.shape)}")
            rows.append(ctx.to(self.device, self.dtype))
        return torch.stack(rows)

    # -- forward ------------------------------------------------------------------
    @contextmanager
    def _cross_attention(self, batch: AceBatch):
        try:
            for layer, (_, proc) in enumerate(self.processors):
                proc.kv = (batch.keys[layer], batch.values[layer], batch.key_mask)
            yield
        finally:
            for _, proc in self.processors:
                proc.kv = None

    @torch.no_grad()
    def velocity(self, x: torch.Tensor, t: torch.Tensor, cond: AceBatch) -> torch.Tensor:
        """``v [B, T, C]`` for ``x [B, T, C]`` at per-row times ``t [B]`` (``timestep_r = t``)."""
        if not isinstance(cond, AceBatch):
            raise ValueError(f"cond: expected the result of collate(), got {type(cond).__name__}")
        if x.ndim != 3 or x.shape[0] != cond.rows or x.shape[2] != self.channels:
            raise ValueError(f"x: expected [{cond.rows}, T, {self.channels}], got {tuple(x.shape)}")
        context = self._contexts(cond.contexts, x.shape[1])
        t_model = t.to(self.device, self.dtype).reshape(-1)
        # K/V are cached, so the DiT's own condition input is a one-token placeholder.
        placeholder = torch.zeros(x.shape[0], 1, self.transformer.condition_embedder.in_features,
                                  device=self.device, dtype=self.dtype)
        with self._cross_attention(cond):
            v = self.transformer(hidden_states=x.to(self.device, self.dtype), timestep=t_model, timestep_r=t_model,
                                 encoder_hidden_states=placeholder, context_latents=context, return_dict=False)[0]
        return v.to(x.dtype)


def _stack(parts: list[torch.Tensor], length: int) -> torch.Tensor:
    """Concatenate ``[1, H, L_i, D]`` along the batch, zero-padding L to ``length``."""
    if len(parts) == 1:
        return parts[0]
    if all(p is parts[0] for p in parts):
        return parts[0].expand(len(parts), -1, -1, -1)
    return torch.cat([F.pad(p, (0, 0, 0, length - p.shape[2])) for p in parts])
