"""Musical measures on raw mini latents (pure functions, numpy in, float out)."""

from __future__ import annotations

import numpy as np

from . import layout as L
from .composer import scale_pitch_classes


def key_share(raw: np.ndarray, tonic: int, mode: str) -> float:
    """Share of pitched energy ``sum a^2`` (pitched channels, a = max(raw, 0)) on the key's 7 pitch classes."""
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


def beat_grid(raw: np.ndarray, lo: float = 60.0, hi: float = 180.0, keep: float = 0.85,
              min_hit: float = 0.4) -> tuple[float, float]:
    """``(bpm, phase)`` of the kick + snare onsets by a comb: for each bpm the best-phase mean of
    the onset envelope on its beat grid (tolerating one frame of jitter); the fastest bpm scoring
    ``>= keep * best`` wins, so the beat beats its half tempo (equal score) and its double (half
    the grid lands on nothing).  ``phase`` is the frame of the first beat; ``(nan, nan)`` with
    fewer than 4 hits of at least ``min_hit`` or when ``raw`` is shorter than two beats at ``lo`` bpm.
    """
    o = np.nan_to_num(onset_envelope(raw), nan=0.0, posinf=0.0, neginf=0.0)
    if (o >= min_hit).sum() < 4 or o.shape[0] < 2 * 60.0 * L.FRAME_RATE / lo:
        return float("nan"), float("nan")
    o = np.minimum(o / (0.5 * o.max()), 1.0)  # saturate: every clear hit counts as one
    t = o.shape[0]
    tol = np.maximum(o, 0.7 * np.maximum(np.roll(o, 1), np.roll(o, -1)))
    bpms = np.arange(lo, hi + 1e-9, 0.1)
    scores = np.empty_like(bpms)
    best_phase = np.empty_like(bpms)
    for i, bpm in enumerate(bpms):
        period = 60.0 * L.FRAME_RATE / bpm
        phases = np.arange(0.0, period, 0.5)
        pos = phases[:, None] + period * np.arange(int(t / period) + 1)[None, :]
        valid = pos <= t - 1
        idx = np.clip(np.round(pos).astype(int), 0, t - 1)
        per_phase = (o[idx] * valid).sum(1) / valid.sum(1) + (tol[idx] * valid).sum(1) / valid.sum(1)
        j = int(per_phase.argmax())
        scores[i] = ((tol[idx[j]] * valid[j]).sum() / valid[j].sum())
        best_phase[i] = phases[j]
    win = int(np.nonzero(scores >= keep * scores.max())[0][-1])
    return _refine(o, 60.0 * L.FRAME_RATE / bpms[win], best_phase[win])


def _refine(o: np.ndarray, period: float, phase: float) -> tuple[float, float]:
    """Least-squares line ``f = phase + period * k`` through the clear onsets near the comb's grid."""
    f = np.nonzero(o >= 0.5)[0].astype(np.float64)
    k = np.round((f - phase) / period)
    near = np.abs(f - phase - period * k) <= 1.5
    if near.sum() >= 3 and np.ptp(k[near]) >= 2:
        period, phase = np.polyfit(k[near], f[near], 1)
    return float(60.0 * L.FRAME_RATE / period), float(phase)


def estimate_bpm(raw: np.ndarray, **kwargs) -> float:
    """Tempo of :func:`beat_grid`."""
    return beat_grid(raw, **kwargs)[0]


def backbeat_phase(raw: np.ndarray, bpm: float, phase: float) -> float:
    """Frame of a downbeat: ``phase`` or one beat later, whichever puts less snare on the
    downbeats (kick on the beat, snare on the backbeat: the 2-beat clock of layout.py)."""
    snare = np.clip(np.nan_to_num(np.asarray(raw, dtype=np.float64)[:, L.SNARE]), 0.0, None)
    period = 60.0 * L.FRAME_RATE / bpm
    t = snare.shape[0]
    on = []
    for k in (0, 1):
        idx = np.round(phase + period * (k + 2 * np.arange(t))).astype(int)
        on.append(snare[idx[(idx >= 0) & (idx < t)]].sum())
    return phase + period * int(on[1] < on[0])


def tempo_ok(raw: np.ndarray, bpm: float, tolerance: float = 0.04) -> bool:
    """Estimated tempo within ``tolerance`` (relative) of ``bpm``."""
    est = estimate_bpm(raw)
    return bool(np.isfinite(est) and abs(est - bpm) <= tolerance * bpm)
