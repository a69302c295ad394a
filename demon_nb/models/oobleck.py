"""The ACE-Step 1.5 VAE (diffusers ``AutoencoderOobleck``) behind the ``Codec`` protocol.

Latents are ``[B, T, 64]`` at 25 frames/s (48 kHz stereo, hop 1920 = 2*4*4*6*10);
the diffusers model works on ``[B, C, T]``, so this class transposes at the edges.
``receptive_field`` comes from walking the decoder's convolutions
(:func:`demon_nb.engine.receptive_field.analytic_reach`).
"""

from __future__ import annotations

import math
import os

import torch

from demon_nb.engine.receptive_field import analytic_reach


def ace_step_vae_config() -> dict:
    """The ``vae/config.json`` of ACE-Step 1.5 (as keyword arguments of ``AutoencoderOobleck``)."""
    return {
        "encoder_hidden_size": 128,
        "downsampling_ratios": [2, 4, 4, 6, 10],
        "channel_multiples": [1, 2, 4, 8, 16],
        "decoder_channels": 128,
        "decoder_input_channels": 64,
        "audio_channels": 2,
        "sampling_rate": 48000,
    }


def _vae_class():
    from diffusers import AutoencoderOobleck

    return AutoencoderOobleck


class OobleckCodec:
    """``Codec`` around a loaded ``AutoencoderOobleck``; ``encode`` returns the posterior mean."""

    def __init__(self, vae):
        if not isinstance(vae, _vae_class()):
            raise ValueError(f"vae: expected a diffusers AutoencoderOobleck, got {type(vae).__name__}")
        config = vae.config
        if config.encoder_hidden_size != 2 * config.decoder_input_channels:
            raise ValueError(
                f"vae: encoder_hidden_size ({config.encoder_hidden_size}) must be 2 * decoder_input_channels "
                f"({config.decoder_input_channels}): the encoder emits mean and scale per latent channel"
            )
        self.vae = vae.eval()
        self.sample_rate = int(config.sampling_rate)
        self.hop = int(math.prod(config.downsampling_ratios))
        self.channels = int(config.decoder_input_channels)
        self.audio_channels = int(config.audio_channels)
        self.receptive_field = analytic_reach(self.vae.decoder, self.hop)

    # -- construction ---------------------------------------------------------------
    @classmethod
    def random(cls, seed: int = 0, **config_overrides) -> "OobleckCodec":
        """Random weights (same ``seed`` -> same weights), ACE-Step config with overrides."""
        config = ace_step_vae_config()
        unknown = sorted(set(config_overrides) - set(config))
        if unknown:
            raise ValueError(f"config_overrides: unknown keys {unknown}; allowed: {sorted(config)}")
        config.update(config_overrides)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            vae = _vae_class()(**config)
        return cls(vae)

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, *, dtype: torch.dtype = torch.float32) -> "OobleckCodec":
        """Load a diffusers-format VAE folder (``config.json`` + weights), local files only."""
        path = os.fspath(path)
        if not os.path.isfile(os.path.join(path, "config.json")):
            raise ValueError(f"path: {path!r} is not a diffusers VAE folder (no config.json)")
        vae = _vae_class().from_pretrained(path, torch_dtype=dtype, local_files_only=True)
        return cls(vae)

    def to(self, device=None, dtype: torch.dtype | None = None) -> "OobleckCodec":
        """Move the VAE in place; returns ``self``."""
        self.vae.to(device=device, dtype=dtype)
        return self

    # -- protocol -------------------------------------------------------------------
    @property
    def decoder_module(self) -> torch.nn.Module:
        """The conv net that ``decode`` runs (walked by the receptive-field analysis)."""
        return self.vae.decoder

    @property
    def dtype(self) -> torch.dtype:
        return next(self.vae.parameters()).dtype

    @property
    def device(self) -> torch.device:
        return next(self.vae.parameters()).device

    def encode(self, audio: torch.Tensor) -> torch.Tensor:
        """``audio [B, A, N]`` -> posterior mean ``[B, N // hop, C]`` (trailing samples dropped)."""
        if audio.ndim != 3 or audio.shape[1] != self.audio_channels:
            raise ValueError(f"audio: expected [B, {self.audio_channels}, N], got {tuple(audio.shape)}")
        n = (audio.shape[-1] // self.hop) * self.hop
        if n == 0:
            raise ValueError(f"audio: needs at least hop={self.hop} samples, got {audio.shape[-1]}")
        x = audio[..., :n].to(device=self.device, dtype=self.dtype)
        mean = self.vae.encode(x).latent_dist.mean
        return mean.transpose(1, 2)

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        """``latent [B, T, C]`` -> ``audio [B, A, T * hop]``."""
        if latent.ndim != 3 or latent.shape[-1] != self.channels:
            raise ValueError(f"latent: expected [B, T, {self.channels}], got {tuple(latent.shape)}")
        z = latent.to(device=self.device, dtype=self.dtype).transpose(1, 2)
        return self.vae.decode(z).sample

    def __repr__(self) -> str:
        return (
            f"OobleckCodec(sample_rate={self.sample_rate}, hop={self.hop}, channels={self.channels}, "
            f"audio_channels={self.audio_channels}, receptive_field={self.receptive_field})"
        )
