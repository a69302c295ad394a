"""ACE-Step 1.5 on the engine: ``load(checkpoints=DIR, variant="turbo") -> Model``.

The networks are diffusers' (``AceStepTransformer1DModel``, ``AceStepConditionEncoder``,
``AceStepAudioTokenizer``/``AceStepAudioTokenDetokenizer``, ``AutoencoderOobleck``)
and transformers' ``Qwen3Model``; this package only loads them and adapts them to
the engine protocols. Turbo runs 8 steps at shift 3 without CFG; base and sft
use APG guidance.
"""

from __future__ import annotations

import torch

from .loader import VARIANT_DIRS, Parts, check_variant, frames_for, load_parts

DEFAULTS = {
    "turbo": {"steps": 8, "shift": 3.0, "cfg_mode": "none", "guidance_scale": 1.0},
    "base": {"steps": 50, "shift": 3.0, "cfg_mode": "full", "guidance_scale": 7.0, "guidance_kind": "apg",
             "apg_momentum": -0.75, "apg_norm_threshold": 2.5},
}


def defaults_for(variant: str) -> dict:
    """Sampler defaults: turbo variants are guidance-distilled; base/sft need APG guidance."""
    return dict(DEFAULTS["turbo" if variant.endswith("turbo") else "base"])


def pick_device(device=None, dtype=None) -> tuple[torch.device, torch.dtype]:
    """CUDA with bf16 when available, else CPU with fp32 (explicit arguments win)."""
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    if dtype is None:
        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    if dtype not in (torch.float32, torch.bfloat16, torch.float16):
        raise ValueError(f"dtype: expected torch.float32, torch.bfloat16 or torch.float16, got {dtype!r}")
    return device, dtype


def _move(net: torch.nn.Module, device: torch.device, dtype: torch.dtype) -> None:
    """``net.to(device, dtype)``, quiet about diffusers' fp32-module notice (ACE-Step keeps none)."""
    from diffusers.utils import logging as diffusers_logging

    net.to(device=device)
    if next(net.parameters()).dtype != dtype:
        level = diffusers_logging.get_verbosity()
        diffusers_logging.set_verbosity_error()
        try:
            net.to(dtype=dtype)
        finally:
            diffusers_logging.set_verbosity(level)


def model_from_parts(parts: Parts, *, device=None, dtype=None, seconds: float = 30.0):
    """Move loaded networks and wrap them as a :class:`demon_nb.models.Model`."""
    from demon_nb.models import Model
    from demon_nb.models.oobleck import OobleckCodec

    from .denoiser import AceStepDenoiser
    from .text import AceStepTextEncoder

    if not isinstance(seconds, (int, float)) or not 0 < seconds <= 600:
        raise ValueError(f"seconds: expected a loop length in (0, 600] seconds, got {seconds!r}")
    device, dtype = pick_device(device, dtype)
    nets = [parts.transformer, parts.condition_encoder, parts.text_model,
            parts.audio_tokenizer, parts.audio_token_detokenizer]
    for net in nets + [parts.vae]:
        if net is not None:
            _move(net, device, dtype)
    codec = OobleckCodec(parts.vae)
    denoiser = AceStepDenoiser(parts.transformer, parts.condition_encoder.null_condition_emb,
                               parts.silence_latent, audio_tokenizer=parts.audio_tokenizer,
                               audio_token_detokenizer=parts.audio_token_detokenizer)
    frames = frames_for(seconds, codec.sample_rate, codec.hop)
    text = AceStepTextEncoder(parts.tokenizer, parts.text_model, parts.condition_encoder,
                              frame_rate=codec.sample_rate / codec.hop, duration=frames * codec.hop / codec.sample_rate,
                              device=device, dtype=dtype)
    defaults = {**defaults_for(parts.variant), "variant": parts.variant, "device": str(device),
                "dtype": str(dtype).replace("torch.", "")}
    return Model("acestep", denoiser, codec, text, frames, defaults)


def load(checkpoints=None, variant: str | None = None, device=None, dtype=None, seconds: float = 30.0):
    """Load ACE-Step 1.5 from an official checkpoint folder or a diffusers folder.

    ``variant``: one of ``turbo, base, sft, xl-turbo, xl-base, xl-sft``; None picks
    turbo (or the only variant folder present) in the official layout, and what a
    diffusers folder holds. ``seconds``: loop length. ``device``/``dtype``: CUDA with
    bf16 when available, else CPU with fp32.
    """
    check_variant(variant)
    pick_device(device, dtype)  # validate before the slow part
    parts = load_parts(checkpoints, variant)
    return model_from_parts(parts, device=device, dtype=dtype, seconds=seconds)


__all__ = ["load", "load_parts", "model_from_parts", "defaults_for", "pick_device", "VARIANT_DIRS"]
