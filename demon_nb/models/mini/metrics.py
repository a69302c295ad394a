"""Musical measures on raw mini latents (pure functions, numpy in, float out)."""

from __future__ import annotations

import numpy as np

from . import layout as L
from .composer import scale_pitch_classes


def key_share(raw: np.ndarray, tonic: int, mode: str) -> float:
    """Share of pitched energy ``sum a^2`` (channels 0-57, a = max(raw, 0)) on the key's 7 pitch classes."""
    a = np.clip(np.asarray(raw, dtype=np.float64)[:, L.PITCHED], 0.0, None) ** 2
    energy = a.sum(0)
    total = energy.sum()
    if total <= 0:
        return 0.0
    pcs = (L.MIDI_LOW + np.arange(energy.shape[0])) % 12
    return float(energy[np.isin(pcs, scale_pitch_classes(tonic, mode))].sum() / total)


def onset_envelope(raw: np.ndarray) -> np.ndarray:
    """Kick + snare triggers (the composer's beat carriers), clipped at 0 -> ``[T]``."""
    r = np.clip(np.asarray(raw, dtype=np.float64), 0.0, None)
    return r[:, L.KICK] + r[:, L.SNARE]


def estimate_bpm(raw: np.ndarray, lo: float = 60.0, hi: float = 180.0, keep: float = 0.85) -> float:
    """Comb tempo: for each bpm the best-phase mean of the onset envelope on its beat grid
    (tolerating one frame of jitter); the fastest bpm scoring ``>= keep * best`` wins, so the
    beat beats its half tempo (equal score) and its double (half the grid lands on nothing).
    """
    o = onset_envelope(raw)
    if o.max() <= 0:
        return float("nan")
    o = np.minimum(o / (0.5 * o.max()), 1.0)  # saturate: every clear hit counts as one
    t = o.shape[0]
    tol = np.maximum(o, 0.7 * np.maximum(np.roll(o, 1), np.roll(o, -1)))
    bpms = np.arange(lo, hi + 1e-9, 0.1)
    scores = np.empty_like(bpms)
    for i, bpm in enumerate(bpms):
        period = 60.0 * L.FRAME_RATE / bpm
        phases = np.arange(0.0, period, 0.5)
        pos = phases[:, None] + period * np.arange(int(t / period) + 1)[None, :]
        valid = pos <= t - 1
        idx = np.clip(np.round(pos).astype(int), 0, t - 1)
        scores[i] = ((tol[idx] * valid).sum(1) / valid.sum(1)).max()
    good = np.nonzero(scores >= keep * scores.max())[0]
    return float(bpms[good[-1]])


def tempo_ok(raw: np.ndarray, bpm: float, tolerance: float = 0.04) -> bool:
    """Estimated tempo within ``tolerance`` (relative) of ``bpm``."""
    est = estimate_bpm(raw)
    return bool(np.isfinite(est) and abs(est - bpm) <= tolerance * bpm)
