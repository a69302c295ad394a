"""Channel layout of the mini model's 64-channel latent (ACE-Step grid: 25 Hz, hop 1920).

====================  ========  =============================================
channels              name      meaning (raw, before normalization)
====================  ========  =============================================
0-11                  bass      sine amplitude, MIDI 36-47 (C2-B2)
12-57                 notes     sine amplitude, MIDI 48-93 (C3-A6)
58, 59, 60, 61        drums     trigger velocity: kick, snare, hat, perc
62                    bright    level of the "shimmer" partials (0..1)
63                    dynamics  master gain (0..1)
====================  ========  =============================================

Pitched amplitudes are loudness-normalized: the composer keeps the L2 norm of
channels 0-57 at 1 per sounding frame and puts the loudness in ``dynamics``.
"""

from __future__ import annotations

import numpy as np

SAMPLE_RATE = 48_000
HOP = 1920
FRAME_RATE = SAMPLE_RATE / HOP  # 25 Hz
CHANNELS = 64
AUDIO_CHANNELS = 2

BASS = slice(0, 12)
NOTES = slice(12, 58)
PITCHED = slice(0, 58)
MIDI_LOW = 36
MIDI_HIGH = 93  # inclusive
KICK, SNARE, HAT, PERC = 58, 59, 60, 61
DRUMS = slice(58, 62)
DRUM_NAMES = ("kick", "snare", "hat", "perc")
BRIGHT = 62
DYNAMICS = 63

CHANNEL_NAMES = tuple(
    [f"midi{m}" for m in range(MIDI_LOW, MIDI_HIGH + 1)] + list(DRUM_NAMES) + ["brightness", "dynamics"]
)


def midi_to_hz(midi: np.ndarray) -> np.ndarray:
    """Equal temperament, A4 = MIDI 69 = 440 Hz."""
    return 440.0 * 2.0 ** ((np.asarray(midi, dtype=np.float64) - 69.0) / 12.0)


def pitched_midi() -> np.ndarray:
    """MIDI numbers of channels 0-57."""
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
