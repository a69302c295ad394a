"""Procedural latent pieces with captions: the mini model's training data and demo pieces.

``compose(seed) -> (latent [T, 64] normalized, caption, meta)`` is deterministic by
seed.  A piece is a style (drum pattern, progression pool, bass and melody
rhythm, envelope, brightness), a key (12 tonics x major/minor), a tempo in
70-160 bpm, dynamics, and the groove clock of its beat grid (layout.py).  Every
pitched note is diatonic in the piece's key.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass

import numpy as np
import torch

from . import layout as L
from .norm import MEAN, STD

SCALES = {"major": (0, 2, 4, 5, 7, 9, 11), "minor": (0, 2, 3, 5, 7, 8, 10)}
SHARP = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")
FLAT = ("C", "Db", "D", "Eb", "E", "F", "Gb", "G", "Ab", "A", "Bb", "B")


def _steps(s: str) -> tuple[float, ...]:
    """16-step pattern string: 'x' accent 1.0, 'o' 0.6, '.' rest."""
    return tuple({"x": 1.0, "o": 0.6, ".": 0.0}[c] for c in s)


@dataclass(frozen=True)
class Style:
    name: str
    bpm: tuple[int, int]
    kick: tuple[float, ...]
    snare: tuple[float, ...]
    hat: tuple[float, ...]
    perc: tuple[float, ...]
    swing: float  # delay of odd 16ths as a fraction of a step
    # kick + snare sit on quarter notes only (every beat covered): the tempo is measurable
    chord_rhythm: tuple[float, ...]  # chord (re)attacks on the 16-step grid
    bass_rhythm: tuple[float, ...]
    melody_rate: float  # chance of a melody note per 8th
    decay_s: float  # note envelope time constant
    sevenths: bool
    bright: tuple[float, float]
    level: tuple[float, float]
    instruments: tuple[str, ...]
    moods: tuple[str, ...]


STYLES = (
    Style("house", (118, 128), _steps("x...x...x...x..."), _steps("....x.......x..."), _steps("..x...x...x...x."),
          _steps("...o.......o...."), 0.0, _steps("x.....x.....x..."), _steps("..x...x...x...x."), 0.35, 0.5, True,
          (0.5, 0.8), (0.75, 0.95), ("piano stabs", "synth bass", "drum machine", "organ"), ("uplifting", "groovy", "warm")),
    Style("techno", (125, 140), _steps("x...x...x...x..."), _steps("............x..."), _steps("oxoxoxoxoxoxoxox"),
          _steps("..o...o...o...o."), 0.0, _steps("x..............."), _steps("x.x.x.x.x.x.x.x."), 0.2, 0.25, False,
          (0.6, 1.0), (0.8, 1.0), ("analog synth", "acid bass", "909 drums", "arpeggiator"), ("dark", "driving", "hypnotic")),
    Style("lofi hip hop", (70, 90), _steps("x.......x......."), _steps("....x.......x..."), _steps("x...x...x...x..."),
          _steps("..............o."), 0.35, _steps("x..............."), _steps("x.....x...x....."), 0.3, 1.2, True,
          (0.1, 0.35), (0.5, 0.7), ("rhodes", "vinyl crackle drums", "upright bass", "muted guitar"), ("chill", "nostalgic", "dreamy")),
    Style("ambient", (70, 100), _steps("x.......x......."), _steps("....o.......o..."), _steps("o...o...o...o..."),
          _steps("........o......."), 0.0, _steps("x..............."), _steps("x..............."), 0.2, 2.5, True,
          (0.2, 0.5), (0.35, 0.6), ("pads", "bells", "soft synth", "drones"), ("calm", "spacious", "ethereal")),
    Style("funk", (95, 115), _steps("x.......x......."), _steps("....x.......x..."), _steps("xoxoxoxoxoxoxoxo"),
          _steps("...o.....o...o.."), 0.1, _steps("x..x..x...x..x.."), _steps("x..xx.x...x.x.x."), 0.45, 0.3, True,
          (0.5, 0.8), (0.7, 0.9), ("slap bass", "clavinet", "wah guitar", "horns"), ("funky", "playful", "energetic")),
    Style("rock", (100, 150), _steps("x.......x......."), _steps("....x.......x..."), _steps("x.x.x.x.x.x.x.x."),
          _steps("................"), 0.0, _steps("x.......x......."), _steps("x.x.x.x.x.x.x.x."), 0.35, 0.8, False,
          (0.6, 0.9), (0.8, 1.0), ("electric guitar", "bass guitar", "drum kit", "distortion"), ("energetic", "bold", "anthemic")),
    Style("jazz", (110, 160), _steps("x.......o......."), _steps("....o.......o..."), _steps("x...x..xx...x..x"),
          _steps("....x.......x..."), 0.33, _steps("x.....o...x....."), _steps("x...x...x...x..."), 0.55, 0.7, True,
          (0.3, 0.6), (0.55, 0.8), ("upright bass", "piano trio", "brushes", "saxophone"), ("smooth", "sophisticated", "late night")),
    Style("disco", (110, 128), _steps("x...x...x...x..."), _steps("....x.......x..."), _steps("..x...x...x...x."),
          _steps("x.o.x.o.x.o.x.o."), 0.0, _steps("x.x...x.x...x..."), _steps("x.x.x.x.x.x.x.x."), 0.4, 0.4, True,
          (0.6, 0.9), (0.8, 1.0), ("strings", "octave bass", "four on the floor", "rhythm guitar"), ("happy", "danceable", "bright")),
    Style("reggae", (70, 90), _steps("x.......x......."), _steps("....x.......x..."), _steps("x...x...x...x..."),
          _steps("......x.......x."), 0.15, _steps("..x...x...x...x."), _steps("x..x....x..x...."), 0.3, 0.35, False,
          (0.3, 0.6), (0.6, 0.8), ("skank guitar", "dub bass", "organ bubble", "one drop drums"), ("laid back", "sunny", "relaxed")),
    Style("trap", (130, 160), _steps("x.......x......."), _steps("....x.......x..."), _steps("xxxxxxxxxxxxxxxx"),
          _steps("...o......o....."), 0.0, _steps("x..............."), _steps("x......x..x....."), 0.3, 1.0, False,
          (0.4, 0.7), (0.75, 0.95), ("808 bass", "hi-hat rolls", "dark synth", "bells"), ("aggressive", "dark", "moody")),
)
STYLE_NAMES = tuple(s.name for s in STYLES)

PROGRESSIONS = {
    "major": ((0, 4, 5, 3), (0, 5, 3, 4), (1, 4, 0, 0), (0, 3, 4, 3), (0, 3, 0, 4), (5, 3, 0, 4)),
    "minor": ((0, 5, 2, 6), (0, 3, 4, 0), (0, 6, 5, 6), (0, 3, 6, 2), (0, 5, 3, 4), (0, 0, 3, 4)),
}


def key_name(tonic: int, mode: str, flats: bool = False) -> str:
    return f"{(FLAT if flats else SHARP)[tonic % 12]} {mode}"


def scale_pitch_classes(tonic: int, mode: str) -> np.ndarray:
    return (tonic + np.asarray(SCALES[mode])) % 12


def _frames_of(step: np.ndarray, step_frames: float, swing: float, phase: float) -> np.ndarray:
    """Frame index of 16th step ``step`` (odd steps delayed by ``swing`` of a step)."""
    return np.round(phase + (step + swing * (step % 2)) * step_frames).astype(int)


def _add_note(raw: np.ndarray, ch: int, start: int, length: int, vel: float, tau: float, floor: float = 0.0) -> None:
    """Envelope ``vel * max(exp(-(f-start)/tau), floor)`` over ``length`` frames, max-combined."""
    t = raw.shape[0]
    if ch < 0 or ch >= L.PITCHED.stop or start >= t or length <= 0:
        return
    f = np.arange(start, min(start + length, t))
    env = vel * np.maximum(np.exp(-(f - start) / max(tau, 1e-3)), floor)
    raw[f, ch] = np.maximum(raw[f, ch], env)


def _chord_channels(tonic: int, mode: str, degree: int, sevenths: bool, center: int) -> list[int]:
    """Diatonic triad (or 7th) on ``degree``, voiced near MIDI ``center``, as channel indices."""
    scale = SCALES[mode]
    idx = [degree, degree + 2, degree + 4] + ([degree + 6] if sevenths else [])
    notes = []
    for i in idx:
        pc = (tonic + scale[i % 7]) % 12
        m = center - 6 + ((pc - (center - 6)) % 12)
        notes.append(m - L.MIDI_LOW)
    return notes


def compose_raw(seed: int, frames: int = 250, style: str | None = None, tonic: int | None = None,
                mode: str | None = None, bpm: int | None = None):
    """Raw (unnormalized) latent ``[frames, 64]`` float32, caption and metadata."""
    if frames < 1:
        raise ValueError(f"frames: expected >= 1, got {frames}")
    rng = np.random.default_rng(seed)
    st = STYLES[rng.integers(len(STYLES))] if style is None else _style(style)
    tonic = int(rng.integers(12)) if tonic is None else int(tonic) % 12
    mode = ("major", "minor")[rng.integers(2)] if mode is None else mode
    if mode not in SCALES:
        raise ValueError(f"mode: expected 'major' or 'minor', got {mode!r}")
    bpm = int(rng.integers(st.bpm[0], st.bpm[1] + 1)) if bpm is None else int(bpm)
    if not 40 <= bpm <= 240:
        raise ValueError(f"bpm: expected 40..240, got {bpm}")
    step_frames = L.FRAME_RATE * 60.0 / bpm / 4.0
    phase = float(rng.uniform(0, 2))
    n_steps = int(np.ceil((frames - phase) / step_frames)) + 1
    steps = np.arange(n_steps)
    at = _frames_of(steps, step_frames, st.swing, phase)
    raw = np.zeros((frames, L.CHANNELS), dtype=np.float64)
    tau = st.decay_s * L.FRAME_RATE * float(rng.uniform(0.7, 1.4))
    scale = SCALES[mode]

    # drums: pattern velocity x small humanized accent
    for ch, pattern in ((L.KICK, st.kick), (L.SNARE, st.snare), (L.HAT, st.hat), (L.PERC, st.perc)):
        vel = np.asarray(pattern)[steps % 16] * rng.uniform(0.8, 1.0, n_steps)
        ok = (vel > 0) & (at < frames)
        np.maximum.at(raw[:, ch], at[ok], vel[ok])

    # harmony: one chord per bar (two at slow tempi when the bar is short)
    prog = PROGRESSIONS[mode][rng.integers(len(PROGRESSIONS[mode]))]
    center = int(rng.integers(60, 67))
    bar_steps = 16
    for s in steps:
        bar = s // bar_steps
        deg = prog[bar % len(prog)]
        if s % bar_steps == 0 or st.chord_rhythm[s % 16] > 0:
            start = at[s]
            nxt = at[min(s + 1, n_steps - 1)]
            # sustain (with a pad floor) until the next chord attack
            k = s + 1
            while k < n_steps and not (k % bar_steps == 0 or st.chord_rhythm[k % 16] > 0):
                k += 1
            length = (at[k] if k < n_steps else frames) - start
            vel = 0.55 * (st.chord_rhythm[s % 16] or 1.0) * rng.uniform(0.85, 1.0)
            for ch in _chord_channels(tonic, mode, deg, st.sevenths, center):
                _add_note(raw, ch, start, max(length, nxt - start), vel, tau, floor=0.35)
        if st.bass_rhythm[s % 16] > 0:
            root_pc = (tonic + scale[deg % 7]) % 12
            ch = root_pc if rng.random() > 0.15 else (tonic + scale[(deg + 4) % 7]) % 12  # root or fifth
            _add_note(raw, ch, at[s], int(np.ceil(2 * step_frames)), 0.8 * st.bass_rhythm[s % 16], tau * 0.6, floor=0.2)

    # melody: scale random walk on 8ths, in MIDI 67-89
    deg_m = int(rng.integers(7, 14))
    for s in steps[::2]:
        if rng.random() > st.melody_rate:
            continue
        deg_m = int(np.clip(deg_m + rng.choice([-2, -1, -1, 1, 1, 2, 0, 3, -3]), 4, 22))
        midi = 60 + tonic + 12 * (deg_m // 7) + scale[deg_m % 7]
        while midi > L.MIDI_HIGH:
            midi -= 12
        while midi < 67:
            midi += 12
        _add_note(raw, midi - L.MIDI_LOW, at[s], int(np.ceil(2 * step_frames * rng.integers(1, 3))), 0.9, tau * 0.8)

    # loudness-normalize pitched channels; loudness goes to dynamics (see layout.py)
    norm = np.linalg.norm(raw[:, L.PITCHED], axis=1, keepdims=True)
    raw[:, L.PITCHED] = np.where(norm > 1e-6, raw[:, L.PITCHED] / np.maximum(norm, 1e-6), 0.0)
    f = np.arange(frames)
    level = rng.uniform(*st.level)
    swell = 1.0 + 0.15 * np.sin(2 * np.pi * f / (16 * step_frames * 2) + rng.uniform(0, 2 * np.pi))
    raw[:, L.DYNAMICS] = np.where(norm[:, 0] > 1e-6, np.clip(level * swell, 0.2, 1.0), 0.0)
    b0, b1 = st.bright
    raw[:, L.BRIGHT] = np.clip(rng.uniform(b0, b1) + 0.1 * np.sin(2 * np.pi * f / frames + rng.uniform(0, 6.3)), 0, 1)
    raw[:, L.CLOCK] = L.clock(frames, bpm, phase)  # step 0 (frame ``phase``) is a downbeat

    flats = bool(rng.random() < 0.5)
    mood = st.moods[rng.integers(len(st.moods))]
    inst = rng.choice(len(st.instruments), 2, replace=False)
    words = (mood, st.name, key_name(tonic, mode, flats), bpm, st.instruments[inst[0]], st.instruments[inst[1]])
    template = rng.integers(3)
    caption = (
        "{0} {1} in {2}, {3} bpm, {4} and {5}",
        "{1} track, {0}, key of {2}, {3} bpm, with {4}, {5}",
        "{3} bpm {0} {1} in {2} featuring {4} and {5}",
    )[template].format(*words)
    meta = {"seed": int(seed), "style": st.name, "key": int(tonic), "key_name": key_name(tonic, mode, flats),
            "mode": mode, "bpm": int(bpm), "mood": mood}
    return raw.astype(np.float32), caption, meta


def compose(seed: int, frames: int = 250, **kwargs):
    """``(latent [frames, 64] normalized float32 tensor, caption, meta)``; deterministic by seed."""
    raw, caption, meta = compose_raw(seed, frames, **kwargs)
    z = (torch.from_numpy(raw) - torch.tensor(MEAN)) / torch.tensor(STD)
    return z, caption, meta


def _style(name: str) -> Style:
    for s in STYLES:
        if s.name == name:
            return s
    raise ValueError(f"style: unknown style {name!r}; expected one of {list(STYLE_NAMES)}")


def stats(n: int = 400, frames: int = 250) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of raw composer latents (std floored at 0.05)."""
    data = np.concatenate([compose_raw(s, frames)[0] for s in range(n)])
    return data.mean(0).tolist(), np.maximum(data.std(0), 0.05).tolist()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m demon_nb.models.mini.composer")
    p.add_argument("--stats", action="store_true", help="print norm.py for the current composer")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    if a.stats:
        mean, std = stats()
        print('"""Per-channel normalization constants of the mini latent (raw -> ~N(0, 1) over composer data).\n\n'
              'Regenerate with ``python -m demon_nb.models.mini.composer --stats > norm.py``.\n"""\n')
        print("MEAN = [" + ", ".join(f"{v:.5f}" for v in mean) + "]")
        print("STD = [" + ", ".join(f"{v:.5f}" for v in std) + "]")
        return 0
    z, caption, meta = compose(a.seed)
    print(caption, meta, tuple(z.shape))
    return 0


if __name__ == "__main__":
    sys.exit(main())
