"""Channel layout of the mini model's 64-channel latent (ACE-Step grid: 25 Hz, hop 1920).

====================  ========  =============================================
channels              name      meaning (raw, before normalization)
====================  ========  =============================================
0-11                  bass      sine amplitude, MIDI 36-47 (C2-B2)
12-53                 notes     sine amplitude, MIDI 48-89 (C3-F6)
54, 55                beat      cos, sin of the beat phase (silent: the groove clock)
56, 57                pulse     cos, sin of the 2-beat phase (0 = downbeat, silent)
58, 59, 60, 61        drums     trigger velocity: kick, snare, hat, perc
62                    bright    level of the "shimmer" partials (0..1)
63                    dynamics  master gain (0..1)
====================  ========  =============================================

Pitched amplitudes are loudness-normalized: the composer keeps the L2 norm of
channels 0-53 at 1 per sounding frame and puts the loudness in ``dynamics``.

The clock channels make the tempo a smooth, low-frequency structure that a small
denoiser learns far more easily than sparse drum triggers alone: drums sit where
the beat phase wraps.  The codec does not render them; ``encode`` recovers them
from the drum onsets (:func:`metrics.beat_grid`).
"""

from __future__ import annotations

import numpy as np

SAMPLE_RATE = 48_000
HOP = 1920
FRAME_RATE = SAMPLE_RATE / HOP  # 25 Hz
CHANNELS = 64
AUDIO_CHANNELS = 2

BASS = slice(0, 12)
NOTES = slice(12, 54)
PITCHED = slice(0, 54)
MIDI_LOW = 36
MIDI_HIGH = 89  # inclusive
BEAT_COS, BEAT_SIN, PULSE_COS, PULSE_SIN = 54, 55, 56, 57
CLOCK = slice(54, 58)
PULSE_BEATS = 2  # kick ... snare: the half bar every composer style repeats
KICK, SNARE, HAT, PERC = 58, 59, 60, 61
DRUMS = slice(58, 62)
DRUM_NAMES = ("kick", "snare", "hat", "perc")
BRIGHT = 62
DYNAMICS = 63

CHANNEL_NAMES = tuple(
    [f"midi{m}" for m in range(MIDI_LOW, MIDI_HIGH + 1)] + ["beat_cos", "beat_sin", "pulse_cos", "pulse_sin"]
    + list(DRUM_NAMES) + ["brightness", "dynamics"]
)
assert len(CHANNEL_NAMES) == CHANNELS


def clock(frames: int, bpm: float, phase: float) -> np.ndarray:
    """Groove clock ``[frames, 4]``: ``cos, sin(2 pi b)`` and ``cos, sin(2 pi b / 2)`` with
    ``b = (f - phase) bpm / (60 FRAME_RATE)`` the beat position of frame ``f`` (``phase`` = a downbeat)."""
    b = (np.arange(frames) - phase) * bpm / (60.0 * FRAME_RATE)
    pulse = b / PULSE_BEATS
    return np.stack([np.cos(2 * np.pi * b), np.sin(2 * np.pi * b),
                     np.cos(2 * np.pi * pulse), np.sin(2 * np.pi * pulse)], axis=1)


def midi_to_hz(midi: np.ndarray) -> np.ndarray:
    """Equal temperament, A4 = MIDI 69 = 440 Hz."""
    return 440.0 * 2.0 ** ((np.asarray(midi, dtype=np.float64) - 69.0) / 12.0)


def pitched_midi() -> np.ndarray:
    """MIDI numbers of the pitched channels (0-53)."""
    return np.arange(MIDI_LOW, MIDI_HIGH + 1)


def shimmer_ratio(midi: np.ndarray) -> np.ndarray:
    """Power-of-two partial ratio that lifts each note into the octave above MIDI 95.

    ``2 ** ceil((96 - m) / 12)``: all shimmer partials land in MIDI 96-107, above
    every analysed note, so brightness never leaks into the note channels.
    """
    return 2.0 ** np.ceil((96 - np.asarray(midi, dtype=np.float64)) / 12.0)


def pitch_class(channel: int) -> int:
    """Pitch class (0 = C) of a pitched channel."""
    return (MIDI_LOW + channel) % 12
