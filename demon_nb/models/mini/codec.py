"""``SynthCodec``: a transparent synthesizer codec on the ACE-Step latent grid (decode: issue #16).

Notes: ``a = relu(notes)``; **haze gate** ``a *= smoothstep((a - GATE[0]) / (GATE[1] - GATE[0]))`` (silent
under 0.08, untouched over 0.15, a C1 fade between); **caps** ``a /= max(1, ||a||_2)`` (the composer keeps
1) and ``a /= max(1, ||a||_1 / L1_MAX)``; ``gain = clamp(dynamics, 0, 1)``.  Channel ``m`` is a sine at its
MIDI frequency, amplitude ``gain a_m`` interpolated linearly from frame ``f`` (sample ``f*hop``) to ``f+1``,
phase ``omega n`` with ``n`` the absolute sample (a decoded window equals the same samples of a full
decode), plus a shimmer partial (MIDI 96-107) at ``SHIMMER b`` (``b = brightness``).  **Timbre** by ``b``
(:func:`drawbars`, organ drawbars: a sine pad for lofi/ambient, a fuller tone for rock/disco/techno):
octave partials ``2f``, ``4f`` at ``c2 = DRAWBARS[0] b``, ``c4 = DRAWBARS[1] b^2`` where they land under
MIDI 74 (the melody register stays clean), all partials ``/ sqrt(1 + c2^2 + c4^2)``; octaves keep pitch
classes and fold exactly onto the sines 12 and 24 channels up.  One matmul per frame block:
``sin(w(n0+j)) = sin(w n0) cos(w j) + cos(w n0) sin(w j)``.

Drums (trigger ``x``): **peak picking** ``m[f] = h((x[f] - x[f-1]) / PEAK_TAU) h((x[f] - x[f+1]) / PEAK_TAU)``,
``h(d) = (1 + d / sqrt(1 + d^2)) / 2``: ~1 on a local maximum over +-1 frame, ~0 elsewhere (a smeared
block becomes one hit per peak), continuous, and with a derivative that does not vanish, so the
autograd probe of ``engine.receptive_field`` measures the declared reach.  **Gate** ``relu(x) sigmoid((x -
DRUM_GATE) / DRUM_GATE_TAU)`` (the trigger floor under the composer's softest hit), **squash**
``sat(., DRUM_KNEE, 1)`` into ``[0, 1)``: ``p = squash(gate(x) m) gain``.  A hit at ``g`` plays the fixed
one-shot ``T_d`` (``DRUM_FRAMES`` frames) times ``p[g]``; a later hit ``g'`` of the same drum **chokes** it,
times ``1 - k[g']`` with ``k = 1 - (1 - p)^3 >= p``, through a ``CHOKE_SAMPLES`` fade ``r`` (1 -> 0).

**Output**: ``y = sat(OUT_GAIN (tonal + drums), OUT_KNEE, OUT_CEIL)`` per sample, ``sat(x, k, c) = x`` for
``|x| <= k``, else ``sign(x) (k + (c - k) tanh((|x| - k) / (c - k)))``: identity in the normal range
(the composer's music but rare peaks), C1, under ``c``.  **Bound**, any finite latent: ``|y| <= OUT_CEIL
= 0.99`` (``tanh <= 1``).  Before ``sat``, the sum of the maximum contributions (:meth:`SynthCodec.mix_bound`,
2.52) is ``|x| <= OUT_GAIN (P L1_MAX + sum_d B_d)``.  Tonal: a frame's partials sum to ``gain (1 + c2 + c4
+ SHIMMER b) ||a||_1 / sqrt(1 + c2^2 + c4^2) <= P ||a||_1``, ``P = 1.87`` (increasing in ``b``; at ``b = 1``),
and interpolation is a convex combination.  Drum ``d`` at sample ``n`` of frame ``f``: the new hit
``p[f] |T_d0(n)|`` plus the earlier ones ``S (1 - k[f] + k[f] r(n)) M_d(n)``, ``T_dj`` the one-shot's
``j``-th frame, ``M_d(n) = max_{j>=1} |T_dj(n)|``, ``S = sum_{j>=1} p[f-j] prod_{0<e<j} (1 - k[f-e]) <= 1 -
prod_j (1 - k[f-j]) <= 1`` as ``p <= k <= 1``: so ``<= B_d = max_n max(|T_d0(n)| + r(n) M_d(n), M_d(n))``
= 1.85, 2.34, 1.54, 1.26 (kick, snare, hat, perc; pan <= 1): one hit's worth however many overlap.
Reach ``(DRUM_FRAMES, 1)``: frame ``f`` hears the hits of ``f - 3 .. f``, whose peak picking reads one
frame more each side, and the note interpolation reads ``f + 1``; the rest is pointwise in time.

encode: windowed projections onto the note frequencies (window per octave, ``W = 2 / semitone_spacing``
so a neighbouring semitone sits on the Hann null), band-energy onsets for drums, shimmer/fundamental ratio
for brightness (the 12 shimmer frequencies counted once each; drawbars taken back off the notes they land
on, :func:`undrawbar`), the L2 norm of the pitched amplitudes for dynamics, and the groove clock fitted to
the kick + snare onsets (``metrics.beat_grid``; zeros without drums), silent in ``decode``.
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
GATE = (0.08, 0.15)  # note amplitudes under 0.08 are silent, over 0.15 untouched (smoothstep between)
L1_MAX = 3.0  # cap of the sum of the note amplitudes (the composer's chords stay under 2.7)
PEAK_TAU = 0.02  # peak picking: trigger difference to a neighbour that counts as "clearly above"
DRUM_GATE, DRUM_GATE_TAU = 0.45, 0.015  # trigger gate, logistic: the composer's softest hit (0.48) keeps 0.88
DRUM_KNEE = 0.8  # trigger squash: identity up to 0.8, then smoothly into [0.8, 1)
CHOKE_SAMPLES = 96  # 2 ms crossfade from a choked hit to the next hit of the same drum
OUT_KNEE, OUT_CEIL = 0.8, 0.99  # output saturation: identity up to 0.8, never above 0.99
DRAWBARS = (0.35, 0.15)  # octave partials 2f, 4f at DRAWBARS[0] b and DRAWBARS[1] b^2 (b = brightness)
DRAWBAR_TOP = 38  # ... that land on the note channels under MIDI 74 only (the melody register stays clean)


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


def choke_ramp(n: int) -> np.ndarray:
    """``r[j]``: raised cosine from 1 (j = 0) to 0 over ``CHOKE_SAMPLES`` samples, then 0 (``[n]``)."""
    return 0.5 + 0.5 * np.cos(np.pi * np.minimum(np.arange(n), CHOKE_SAMPLES) / CHOKE_SAMPLES)


def saturate(x: torch.Tensor, knee: float, ceil: float) -> torch.Tensor:
    """``x`` for ``|x| <= knee``, else ``sign(x) (knee + (ceil - knee) tanh((|x| - knee) / (ceil - knee)))``:
    odd, monotone, C1, ``|sat(x)| < ceil`` (``<= ceil`` in floating point) for every ``x``."""
    ax, width = x.abs(), ceil - knee
    return torch.sign(x) * (ax.clamp(max=knee) + width * torch.tanh((ax - knee).clamp(min=0.0) / width))


def soft_step(d: torch.Tensor) -> torch.Tensor:
    """Algebraic sigmoid ``(1 + d / sqrt(1 + d^2)) / 2``: 0..1; unlike the logistic's, its derivative
    ``1 / (2 (1 + d^2)^1.5)`` stays non-zero in float32 for the trigger differences of real latents."""
    return 0.5 + 0.5 * d * torch.rsqrt(1.0 + d * d)


def note_amplitudes(pitched: torch.Tensor) -> torch.Tensor:
    """Raw pitched channels ``[..., 54]`` -> sounding amplitudes: relu, haze gate, L2 cap 1, L1 cap ``L1_MAX``."""
    a = pitched.clamp(min=0.0)
    u = ((a - GATE[0]) / (GATE[1] - GATE[0])).clamp(0.0, 1.0)
    a = a * (u * u * (3.0 - 2.0 * u))
    a = a / torch.linalg.vector_norm(a, dim=-1, keepdim=True).clamp(min=1.0)
    return a / (a.sum(-1, keepdim=True) / L1_MAX).clamp(min=1.0)


def drawbar_levels(b):
    """``(c2, c4, norm)`` at brightness ``b``: ``DRAWBARS[0] b``, ``DRAWBARS[1] b^2``, ``sqrt(1 + c2^2 + c4^2)``."""
    c2, c4 = DRAWBARS[0] * b, DRAWBARS[1] * b * b
    return c2, c4, (1.0 + c2 * c2 + c4 * c4) ** 0.5


def drawbars(amps: torch.Tensor, bright: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Amplitudes ``[..., 54]``, brightness ``[..., 1]`` -> ``(note-grid partials, shimmer)``: note ``m``'s
    ``2f``, ``4f`` are the frequencies and phases of channels ``m + 12``, ``m + 24`` (no extra oscillator)."""
    c2, c4, norm = drawbar_levels(bright)
    zero = torch.zeros_like(amps)
    up = c2 * torch.cat([zero[..., :12], amps[..., :-12]], -1) + c4 * torch.cat([zero[..., :24], amps[..., :-24]], -1)
    low = (torch.arange(amps.shape[-1], device=amps.device) < DRAWBAR_TOP).to(amps)
    return (amps + up * low) / norm, amps * (SHIMMER * bright) / norm


def undrawbar(fund: torch.Tensor, shim_sum: torch.Tensor, iterations: int = 12) -> tuple[torch.Tensor, torch.Tensor]:
    """Measured note-grid amplitudes ``[..., 54]``, summed shimmer ``[...]`` -> ``(amplitudes, brightness)``:
    the octaves add in phase, ``y_m = (x_m + c2 x_{m-12} + c4 x_{m-24}) / norm``, solved octave by octave
    from the bass up (clamped at 0), alternating with ``b = shim_sum norm / (SHIMMER sum x)``."""
    b = (shim_sum / (SHIMMER * fund.sum(-1) + 1e-6)).clamp(0.0, 1.0)
    for _ in range(iterations + 1):
        c2, c4, norm = (v[..., None] for v in drawbar_levels(b))
        x = fund * norm
        parts = [x[..., :12]]
        for lo in range(12, DRAWBAR_TOP, 12):
            hi = min(lo + 12, DRAWBAR_TOP)
            sub = c2 * parts[-1][..., : hi - lo] + (c4 * parts[-2][..., : hi - lo] if lo >= 24 else 0.0)
            parts.append((x[..., lo:hi] - sub).clamp(min=0.0))
        x = torch.cat(parts + [x[..., DRAWBAR_TOP:]], -1)
        b = (shim_sum * norm[..., 0] / (SHIMMER * x.sum(-1) + 1e-6)).clamp(0.0, 1.0)
    return x, b


def drum_velocities(trig: torch.Tensor) -> torch.Tensor:
    """Raw triggers ``[B, T, 4]`` -> velocities in ``[0, 1)``: peak picking over +-1 frame (0-padded), gate, squash."""
    pad = F.pad(trig, (0, 0, 1, 1))
    peak = soft_step((trig - pad[:, :-2]) / PEAK_TAU) * soft_step((trig - pad[:, 2:]) / PEAK_TAU)
    gated = trig.clamp(min=0.0) * torch.sigmoid((trig - DRUM_GATE) / DRUM_GATE_TAU)
    return saturate(gated * peak, DRUM_KNEE, 1.0)


class SynthCodec:
    """Codec protocol: 48 kHz stereo, hop 1920, 64 channels, ``receptive_field = (4, 1)``."""

    sample_rate = L.SAMPLE_RATE
    hop = L.HOP
    channels = L.CHANNELS
    audio_channels = L.AUDIO_CHANNELS
    receptive_field = (DRUM_FRAMES, 1)  # one-shots + peak picking; note interpolation

    def __init__(self) -> None:
        hop = self.hop
        midi = L.pitched_midi()
        f0 = L.midi_to_hz(midi)
        self._omega = 2 * np.pi * np.concatenate([f0, f0 * L.shimmer_ratio(midi)]) / self.sample_rate  # [108]
        j = np.arange(hop, dtype=np.float64)
        u = j / hop
        wj = self._omega[:, None] * j[None, :]
        cos, sin = np.cos(wj), np.sin(wj)
        basis = np.concatenate([(1 - u) * cos, (1 - u) * sin, u * cos, u * sin], axis=0)
        self._basis = torch.from_numpy(basis).float()  # [4K, hop]
        tm, ramp = drum_templates().reshape(4, DRUM_FRAMES, hop), choke_ramp(hop)
        # rows (shift d, drum) playing on, then (shift d >= 1, drum) fading out; one matrix per stereo side
        rows = [tm[:, d, :] for d in range(DRUM_FRAMES)] + [tm[:, d, :] * ramp for d in range(1, DRUM_FRAMES)]
        self._drums = [torch.from_numpy(np.concatenate([r * np.asarray(DRUM_PAN)[:, k, None] for r in rows])).float()
                       for k in (0, 1)]
        self.mean, self.std = torch.tensor(MEAN, dtype=torch.float32), torch.tensor(STD, dtype=torch.float32)
        self._groups = self._analysis_groups(midi, f0)
        self._pc_count = torch.from_numpy(np.bincount(midi % 12)[midi % 12]).float()  # channels per pitch class
        self._drum_ref = self._calibrate_drums()
        a = np.abs(tm)
        later = a[:, 1:].max(1)  # M_d(n): the loudest earlier hit at sample n of a frame
        self.drum_bounds = np.maximum(a[:, 0] + ramp * later, later).max(1)  # B_d, module docstring

    def mix_bound(self) -> float:
        """Upper bound of ``|mix_raw|`` over every latent: ``OUT_GAIN (P L1_MAX + sum_d B_d)`` (module docstring)."""
        c2, c4, norm = drawbar_levels(1.0)
        return float(OUT_GAIN * ((1.0 + c2 + c4 + SHIMMER) / norm * L1_MAX + self.drum_bounds.sum()))

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
        return self.decode_raw(self.denormalize(_as_latent(latent).float()), offset=offset)

    def decode_raw(self, raw: torch.Tensor, offset: int = 0) -> torch.Tensor:
        """Synthesis from raw (unnormalized) channels, see module docstring: ``|audio| <= OUT_CEIL``."""
        return saturate(self.mix_raw(raw, offset=offset), OUT_KNEE, OUT_CEIL)

    def mix_raw(self, raw: torch.Tensor, offset: int = 0) -> torch.Tensor:
        """The mix before the output saturation, ``[B, 2, T*hop]``; ``|mix| <= self.mix_bound()`` (2.52)."""
        if not isinstance(offset, (int, np.integer)) or offset < 0:
            raise ValueError(f"offset: expected a non-negative int frame index, got {offset!r}")
        b, t, _ = raw.shape
        gain = raw[..., L.DYNAMICS].clamp(0.0, 1.0)[..., None]
        amps = note_amplitudes(raw[..., L.PITCHED]) * gain
        a = torch.cat(drawbars(amps, raw[..., L.BRIGHT].clamp(0.0, 1.0)[..., None]), dim=-1)  # [B, T, K]
        a_next = torch.cat([a[:, 1:], a[:, -1:]], dim=1)
        n0 = (np.arange(t, dtype=np.float64) + offset) * self.hop
        phase = np.mod(self._omega[None, :] * n0[:, None], 2 * np.pi)
        s = torch.from_numpy(np.sin(phase)).float()
        c = torch.from_numpy(np.cos(phase)).float()
        coef = torch.cat([a * s, a * c, a_next * s, a_next * c], dim=-1)  # [B, T, 4K]
        tonal = (coef @ self._basis).reshape(b, t * self.hop)
        coef = self._drum_coefficients(drum_velocities(raw[..., L.DRUMS]) * gain)
        return OUT_GAIN * torch.stack([tonal + (coef @ side).reshape(b, -1) for side in self._drums], dim=1)

    @staticmethod
    def _drum_coefficients(p: torch.Tensor) -> torch.Tensor:
        """Velocities ``p [B, T, 4]`` -> weights of ``self._drums``' rows: hit ``f - d`` at frame ``f`` is ``p[f-d]
        prod_{0<e<d} (1 - k[f-e])`` (not choked since) times ``1 - k[f]`` (plays on) or ``k[f]`` (fades out)."""
        t, keep = p.shape[1], (1.0 - p) ** 3  # 1 - k, k = 1 - (1 - p)^3 >= p
        on, choked, alive = [p], [], torch.ones_like(p)  # alive = prod_{0<e<d} (1 - k[f-e])
        for d in range(1, DRUM_FRAMES):
            w = F.pad(p, (0, 0, d, 0))[:, :t] * alive
            on.append(w * keep)
            choked.append(w * (1.0 - keep))
            alive = alive * F.pad(keep, (0, 0, d, 0))[:, :t]
        return torch.cat(on + choked, dim=-1)

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
        # every note of a pitch class has its shimmer partial on the same frequency (MIDI 96-107), so
        # each of the 12 is measured by 4-5 channels: count it once (the mean over its channels)
        shim = torch.cat(shim, -1) / OUT_GAIN
        fund, bright = undrawbar(torch.cat(fund, -1) / OUT_GAIN, (shim / self._pc_count).sum(-1))  # gain * a, b
        dyn = torch.linalg.vector_norm(fund, dim=-1)  # composer keeps ||a|| = 1
        safe = dyn.clamp(min=1e-4)[..., None]
        sounding = (dyn > 1e-3)[..., None]
        notes = torch.where(sounding, fund / safe, torch.zeros_like(fund))
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
