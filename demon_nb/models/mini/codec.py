"""``SynthCodec``: a transparent synthesizer codec on the ACE-Step latent grid.

decode: every pitched channel is a sine at its MIDI frequency whose amplitude is
interpolated linearly from frame ``f`` (at sample ``f*hop``) to frame ``f+1``;
the phase is ``omega * n`` with ``n`` the absolute sample index, so a decoded
window equals the same samples of a full decode.  Per frame block the synthesis
is one matmul: ``sin(w(n0+j)) = sin(w n0) cos(w j) + cos(w n0) sin(w j)``.
Drums are fixed band-limited one-shots started at frame boundaries
(``out[f] = sum_d trig[f-d] * template[d]``, also one matmul).

encode: windowed projections onto the note frequencies (window per octave,
``W = 2 / semitone_spacing`` so a neighbouring semitone sits on the Hann null),
band-energy onsets for drums, shimmer/fundamental ratio for brightness, the
L2 norm of the pitched amplitudes for dynamics, and the groove clock fitted to the
kick + snare onsets (``metrics.beat_grid``; zeros when there are no drums).
The clock channels are silent in ``decode``.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from . import layout as L
from .metrics import backbeat_phase, beat_grid
from .norm import MEAN, STD

OUT_GAIN = 0.2  # tonal amplitude 1 -> 0.2 full scale
SHIMMER = 0.5  # shimmer partial level at brightness 1 (relative to the note)
DRUM_FRAMES = 4  # drum one-shots last 4 frames (160 ms)
DRUM_BANDS = ((20.0, 56.0), (4200.0, 7000.0), (11500.0, 20000.0), (7500.0, 10500.0))
DRUM_LEVELS = (2.0, 0.9, 0.5, 0.6)
DRUM_PAN = ((1.0, 1.0), (1.0, 0.9), (0.8, 1.0), (1.0, 0.7))
ONSET_WINDOWS = (1920, 960, 480, 480)  # samples after/before a frame start used to measure each drum onset


def _band_noise(rng: np.random.Generator, n: int, lo: float, hi: float, sr: int) -> np.ndarray:
    """White noise band-limited to ``[lo, hi]`` Hz by an FFT mask, unit RMS."""
    spec = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1.0 / sr)
    spec[(freqs < lo) | (freqs > hi)] = 0.0
    y = np.fft.irfft(spec, n)
    return y / (np.sqrt(np.mean(y**2)) + 1e-12)


def drum_templates(sr: int = L.SAMPLE_RATE, hop: int = L.HOP) -> np.ndarray:
    """``[4, DRUM_FRAMES*hop]`` one-shots: kick, snare, hat, perc (deterministic)."""
    n = DRUM_FRAMES * hop
    t = np.arange(n) / sr
    rng = np.random.default_rng(1234)
    fade = np.clip((n - np.arange(n)) / (0.2 * n), 0.0, 1.0)  # reach exactly 0 at the end
    # kick: 45 Hz sine, 5 ms attack ramp, 70 ms decay (front-loaded energy, stays in its band)
    kick = np.sin(2 * np.pi * 45.0 * t) * np.exp(-t / 0.07) * np.clip(t / 0.005, 0.0, 1.0)
    snare = _band_noise(rng, n, *DRUM_BANDS[1], sr) * np.exp(-t / 0.06)
    hat = _band_noise(rng, n, *DRUM_BANDS[2], sr) * np.exp(-t / 0.025)
    perc = _band_noise(rng, n, *DRUM_BANDS[3], sr) * np.exp(-t / 0.04)
    out = np.stack([kick, snare, hat, perc]) * fade
    return out * np.asarray(DRUM_LEVELS)[:, None]


class SynthCodec:
    """Codec protocol: 48 kHz stereo, hop 1920, 64 channels, ``receptive_field = (3, 1)``."""

    sample_rate = L.SAMPLE_RATE
    hop = L.HOP
    channels = L.CHANNELS
    audio_channels = L.AUDIO_CHANNELS
    receptive_field = (DRUM_FRAMES - 1, 1)

    def __init__(self) -> None:
        hop = self.hop
        midi = L.pitched_midi()
        f0 = L.midi_to_hz(midi)
        self._omega = 2 * np.pi * np.concatenate([f0, f0 * L.shimmer_ratio(midi)]) / self.sample_rate  # [116]
        j = np.arange(hop, dtype=np.float64)
        u = j / hop
        wj = self._omega[:, None] * j[None, :]
        cos, sin = np.cos(wj), np.sin(wj)
        basis = np.concatenate([(1 - u) * cos, (1 - u) * sin, u * cos, u * sin], axis=0)
        self._basis = torch.from_numpy(basis).float()  # [4K, hop]
        tm = drum_templates().reshape(4, DRUM_FRAMES, hop)
        # rows ordered (shift d, drum); columns = samples; one matrix per stereo side
        self._drums = [
            torch.from_numpy(np.concatenate([tm[:, d, :] * np.asarray(DRUM_PAN)[:, side, None] for d in range(DRUM_FRAMES)])).float()
            for side in (0, 1)
        ]
        self.mean = torch.tensor(MEAN, dtype=torch.float32)
        self.std = torch.tensor(STD, dtype=torch.float32)
        self._groups = self._analysis_groups(midi, f0)
        self._drum_ref = self._calibrate_drums()

    # ------------------------------------------------------------------ normalization
    def normalize(self, raw: torch.Tensor) -> torch.Tensor:
        """``z = (raw - mean) / std`` per channel."""
        return (raw - self.mean.to(raw)) / self.std.to(raw)

    def denormalize(self, z: torch.Tensor) -> torch.Tensor:
        """``raw = z * std + mean`` per channel."""
        return z * self.std.to(z) + self.mean.to(z)

    # ------------------------------------------------------------------ decode
    def decode(self, latent: torch.Tensor, offset: int = 0) -> torch.Tensor:
        """latent ``[B, T, 64]`` (normalized) -> audio ``[B, 2, T*hop]``; ``offset`` = absolute first frame."""
        z = _as_latent(latent)
        raw = self.denormalize(z.float())
        return self.decode_raw(raw, offset=offset)

    def decode_raw(self, raw: torch.Tensor, offset: int = 0) -> torch.Tensor:
        """Synthesis from raw (unnormalized) channels, see module docstring."""
        if not isinstance(offset, (int, np.integer)) or offset < 0:
            raise ValueError(f"offset: expected a non-negative int frame index, got {offset!r}")
        b, t, _ = raw.shape
        gain = raw[..., L.DYNAMICS].clamp(0.0, 1.5)[..., None]
        amps = raw[..., L.PITCHED].clamp(min=0.0) * gain
        shimmer = amps * (SHIMMER * raw[..., L.BRIGHT].clamp(0.0, 1.0))[..., None]
        a = torch.cat([amps, shimmer], dim=-1)  # [B, T, K]
        a_next = torch.cat([a[:, 1:], a[:, -1:]], dim=1)
        n0 = (np.arange(t, dtype=np.float64) + offset) * self.hop
        phase = np.mod(self._omega[None, :] * n0[:, None], 2 * np.pi)
        s = torch.from_numpy(np.sin(phase)).float()
        c = torch.from_numpy(np.cos(phase)).float()
        coef = torch.cat([a * s, a * c, a_next * s, a_next * c], dim=-1)  # [B, T, 4K]
        tonal = (coef @ self._basis).reshape(b, t * self.hop)
        trig = raw[..., L.DRUMS].clamp(min=0.0) * gain  # [B, T, 4]
        shifted = torch.cat([F.pad(trig, (0, 0, d, 0))[:, :t] for d in range(DRUM_FRAMES)], dim=-1)
        left = (shifted @ self._drums[0]).reshape(b, -1)
        right = (shifted @ self._drums[1]).reshape(b, -1)
        return OUT_GAIN * torch.stack([tonal + left, tonal + right], dim=1)

    # ------------------------------------------------------------------ encode
    def encode(self, audio: torch.Tensor) -> torch.Tensor:
        """audio ``[B, A, N]`` (or ``[A, N]``, ``[N]``) at 48 kHz -> normalized latent ``[B, N // hop, 64]``.

        Stereo is downmixed; audio shorter than one hop is zero-padded to one frame.
        """
        return self.normalize(self.encode_raw(audio))

    def encode_array(self, audio, sample_rate: int) -> torch.Tensor:
        """Any-rate audio (numpy/torch, ``[N]``, ``[A, N]`` or ``[B, A, N]``): resample to 48 kHz, then encode."""
        from .audio_io import resample

        return self.encode(resample(audio, sample_rate, self.sample_rate))

    def encode_file(self, path) -> torch.Tensor:
        """Any audio file soundfile or PyAV can read (resampled, downmixed) -> normalized ``[1, T, 64]``."""
        from .audio_io import load_audio

        return self.encode(load_audio(path, self.sample_rate))

    def encode_raw(self, audio: torch.Tensor) -> torch.Tensor:
        x = _as_audio(audio)  # [B, N] mono float32
        b = x.shape[0]
        t = max(x.shape[1] // self.hop, 1)
        x = F.pad(x, (0, t * self.hop - x.shape[1])) if x.shape[1] < t * self.hop else x[:, : t * self.hop]
        fund, shim = [], []
        for idx, w, e, norm in self._groups:
            frames = F.pad(x, (w // 2, w - w // 2)).unfold(-1, w, self.hop)[:, :t]  # [B, T, W]
            proj = frames @ e  # [B, T, 2*2k]
            k2 = proj.shape[-1] // 2
            amp = 2.0 * torch.sqrt(proj[..., :k2] ** 2 + proj[..., k2:] ** 2) / norm
            k = k2 // 2
            fund.append(amp[..., :k])
            shim.append(amp[..., k:])
        fund = torch.cat(fund, -1) / OUT_GAIN  # = gain * a
        shim = torch.cat(shim, -1) / OUT_GAIN
        dyn = torch.linalg.vector_norm(fund, dim=-1)  # composer keeps ||a|| = 1
        safe = dyn.clamp(min=1e-4)[..., None]
        sounding = (dyn > 1e-3)[..., None]
        notes = torch.where(sounding, fund / safe, torch.zeros_like(fund))
        bright = (shim.sum(-1) / (SHIMMER * fund.sum(-1) + 1e-6)).clamp(0.0, 1.0)
        bright = torch.where(sounding[..., 0], bright, torch.zeros_like(bright))
        drums = self._onsets(x, t) / self._drum_ref / OUT_GAIN
        drums = torch.where(sounding, drums / safe, drums)
        out = torch.zeros(b, t, self.channels)
        out[..., L.PITCHED] = notes
        out[..., L.DRUMS] = drums
        out[..., L.BRIGHT] = bright
        out[..., L.DYNAMICS] = dyn
        for i in range(b):
            out[i, :, L.CLOCK] = groove_clock(out[i].numpy())
        return out

    def _analysis_groups(self, midi: np.ndarray, f0: np.ndarray):
        """Per octave: channel indices, window length ``W = 2 sr / (f_low (2^(1/12) - 1))``, projection matrix."""
        groups = []
        for lo in range(0, len(midi), 12):
            idx = np.arange(lo, min(lo + 12, len(midi)))
            spacing = f0[idx[0]] * (2 ** (1 / 12) - 1)
            w = int(math.ceil(2.0 * self.sample_rate / spacing))
            w = min(w, 16 * self.hop) + (w % 2)
            omega = np.concatenate([self._omega[idx], self._omega[idx + len(midi)]])
            j = np.arange(w) - w // 2
            hann = 0.5 - 0.5 * np.cos(2 * np.pi * (np.arange(w) + 0.5) / w)
            arg = omega[None, :] * j[:, None]
            e = np.concatenate([hann[:, None] * np.cos(arg), hann[:, None] * np.sin(arg)], axis=1)
            groups.append((torch.from_numpy(idx), w, torch.from_numpy(e).float(), float(hann.sum())))
        return groups

    def _onsets(self, x: torch.Tensor, t: int) -> torch.Tensor:
        """``sqrt(max(E_after - E_before, 0))`` per drum band at each frame start -> ``[B, T, 4]``."""
        n = x.shape[1]
        spec = torch.fft.rfft(x.double())
        freqs = torch.fft.rfftfreq(n, 1.0 / self.sample_rate)
        bands = torch.stack([((freqs >= lo) & (freqs <= hi)).double() for lo, hi in DRUM_BANDS])  # [4, F]
        y = torch.fft.irfft(spec[:, None, :] * bands[None], n).float()  # [B, 4, N]
        e = y**2
        w = torch.tensor(ONSET_WINDOWS)[:, None]  # [4, 1]
        csum = F.pad(torch.cumsum(e.double(), -1), (1, 0))
        starts = (torch.arange(t) * self.hop)[None, :]  # [1, T]
        after = (_take(csum, (starts + w).clamp(max=n)) - _take(csum, starts.expand(4, -1))) / w
        before = (_take(csum, starts.expand(4, -1)) - _take(csum, (starts - w).clamp(min=0))) / w
        return torch.sqrt((after - before).clamp(min=0.0)).float().transpose(1, 2)

    def _calibrate_drums(self) -> torch.Tensor:
        """Onset measure of one unit hit of each drum (decode then measure; tonal silent)."""
        raw = torch.zeros(4, 8, self.channels)
        raw[..., L.DYNAMICS] = 1.0
        for d in range(4):
            raw[d, 2, L.KICK + d] = 1.0
        audio = self.decode_raw(raw).mean(1)
        meas = self._onsets(audio, 8)[:, 2, :] / OUT_GAIN  # [4 hits, 4 bands]
        return torch.diagonal(meas).clamp(min=1e-6)


def groove_clock(raw: np.ndarray) -> torch.Tensor:
    """Clock channels ``[T, 4]`` of the beat grid in a raw latent's drum triggers (zeros if none)."""
    bpm, phase = beat_grid(raw)
    if not np.isfinite(bpm):
        return torch.zeros(raw.shape[0], 4)
    return torch.from_numpy(L.clock(raw.shape[0], bpm, backbeat_phase(raw, bpm, phase))).float()


def _take(csum: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """``csum [B, 4, N+1]`` gathered at per-band indices ``idx [4, T]`` -> ``[B, 4, T]``."""
    return torch.gather(csum, 2, idx[None].expand(csum.shape[0], -1, -1))


def _as_latent(latent) -> torch.Tensor:
    if not isinstance(latent, torch.Tensor):
        latent = torch.as_tensor(np.asarray(latent, dtype=np.float32))
    if latent.ndim == 2:
        latent = latent[None]
    if latent.ndim != 3 or latent.shape[-1] != L.CHANNELS or latent.shape[1] < 1:
        raise ValueError(f"latent: expected shape [B, T, {L.CHANNELS}] or [T, {L.CHANNELS}], got {tuple(latent.shape)}")
    if not torch.isfinite(latent).all():
        raise ValueError("latent: contains NaN or inf values")
    return latent


def _as_audio(audio) -> torch.Tensor:
    """-> mono ``[B, N]`` float32; accepts ``[N]``, ``[A, N]`` (A <= 2) or ``[B, A, N]``."""
    if not isinstance(audio, torch.Tensor):
        try:
            audio = torch.as_tensor(np.asarray(audio, dtype=np.float32))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"audio: expected a numeric array or tensor, got {type(audio).__name__}") from exc
    if not (audio.is_floating_point() or audio.dtype in (torch.int16, torch.int32)):
        raise ValueError(f"audio: expected float or int16/int32 samples, got dtype {audio.dtype}")
    if audio.dtype == torch.int16:
        audio = audio.float() / 32768.0
    elif audio.dtype == torch.int32:
        audio = audio.float() / 2147483648.0
    audio = audio.float()
    if audio.ndim == 1:
        audio = audio[None, None]
    elif audio.ndim == 2:
        if audio.shape[0] > 2:
            raise ValueError(f"audio: 2-D input must be [channels<=2, samples], got {tuple(audio.shape)}")
        audio = audio[None]
    if audio.ndim != 3 or audio.shape[-1] == 0:
        raise ValueError(f"audio: expected [B, A, N], [A, N] or [N] with N > 0, got {tuple(audio.shape)}")
    if not torch.isfinite(audio).all():
        raise ValueError("audio: contains NaN or inf samples")
    return audio.mean(1)
