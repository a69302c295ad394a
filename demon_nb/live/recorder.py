"""Record what is heard to a WAV or FLAC file.

What is heard is the loop buffer read at the playhead. The kernel keeps a
mirror of that buffer (``player.LoopMirror``, same crossfade as the worklet),
so ``Recorder.follow`` copies the mirror from the last recorded position up to
the browser's playhead. The file is written to a temporary name in the target
folder and renamed on ``close()``: a crash never leaves a broken WAV at ``path``.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

from .player import LoopMirror

SUBTYPES = ("PCM_16", "PCM_24", "FLOAT")
FORMATS = {".wav": "WAV", ".flac": "FLAC"}


class Recorder:
    """``Recorder(path, sample_rate, channels)``; ``write(pcm [A, N])`` or
    ``follow(mirror, playhead, elapsed)``; ``close()`` -> the final path."""

    def __init__(self, path: str | os.PathLike, sample_rate: int = 48_000, channels: int = 2,
                 subtype: str = "PCM_16", max_frames: int | None = None):
        self.path = Path(path)
        fmt = FORMATS.get(self.path.suffix.lower())
        if fmt is None:
            raise ValueError(f"path must end in .wav or .flac, got {str(path)!r}")
        if not self.path.parent.is_dir():
            raise ValueError(f"path's folder must exist, got {str(self.path.parent)!r}")
        if subtype not in SUBTYPES or (fmt == "FLAC" and subtype == "FLOAT"):
            allowed = SUBTYPES if fmt == "WAV" else SUBTYPES[:2]
            raise ValueError(f"subtype must be one of {allowed} for {fmt}, got {subtype!r}")
        if not (isinstance(sample_rate, int) and sample_rate > 0):
            raise ValueError(f"sample_rate must be an int > 0, got {sample_rate!r}")
        if not (isinstance(channels, int) and channels > 0):
            raise ValueError(f"channels must be an int > 0, got {channels!r}")
        self.sample_rate, self.channels = sample_rate, channels
        try:
            fd, tmp = tempfile.mkstemp(prefix=f".{self.path.stem}.", suffix=f".part{self.path.suffix}",
                                       dir=self.path.parent)
        except OSError as error:
            raise ValueError(f"path: cannot write in {str(self.path.parent)!r} ({error.strerror})") from None
        os.close(fd)
        self._tmp = Path(tmp)
        self._file = sf.SoundFile(tmp, "w", samplerate=sample_rate, channels=channels, subtype=subtype, format=fmt)
        self.frames = 0
        self.max_frames = max_frames  # the file stops growing there (None: no limit)
        self._position: int | None = None

    @property
    def full(self) -> bool:
        return self.max_frames is not None and self.frames >= self.max_frames

    @property
    def closed(self) -> bool:
        return self._file is None

    def write(self, pcm: np.ndarray) -> None:
        """Append ``pcm [A, N]`` (float, clipped to [-1, 1])."""
        if self._file is None:
            raise ValueError("recorder is closed")
        pcm = np.asarray(pcm, dtype=np.float32)
        if pcm.ndim != 2 or pcm.shape[0] != self.channels:
            raise ValueError(f"pcm must have shape [{self.channels}, N], got {pcm.shape}")
        if not np.isfinite(pcm).all():
            raise ValueError("pcm must be finite (sanitize it first)")
        if self.max_frames is not None:
            pcm = pcm[:, : max(0, self.max_frames - self.frames)]
        self._file.write(np.clip(pcm.T, -1.0, 1.0))
        self.frames += pcm.shape[1]

    def follow(self, mirror: LoopMirror, playhead: int, elapsed: int | None = None) -> int:
        """Record the mirror from the last position up to ``playhead``.

        ``elapsed`` (samples rendered since the last call, from the browser's
        counter) disambiguates whole loops; without it the forward distance
        modulo the loop is used. The first call only sets the position.
        Returns the number of samples written.
        """
        if mirror.channels != self.channels:
            raise ValueError(f"mirror channels must be {self.channels}, got {mirror.channels}")
        playhead = int(playhead) % mirror.loop_samples
        if self._position is None:
            self._position = playhead
            return 0
        n = (playhead - self._position) % mirror.loop_samples if elapsed is None else int(elapsed)
        if n < 0:
            raise ValueError(f"elapsed must be >= 0, got {elapsed}")
        if n:
            self.write(mirror.read(self._position, n))
        self._position = playhead
        return n

    def status_callback(self, mirror: LoopMirror):
        """A callback for ``AudioOut.on_status``: records what was heard since the
        last report, using the browser's rendered-sample counter."""
        last: list[int | None] = [None]

        def on_status(status: dict) -> None:
            rendered = int(status.get("rendered", 0))
            elapsed = None if last[0] is None else max(0, rendered - last[0])
            last[0] = rendered
            if not self.closed:
                self.follow(mirror, int(status["playhead"]), elapsed)

        return on_status

    def close(self) -> Path:
        """Finish the file and move it to ``path`` (atomic rename)."""
        if self._file is not None:
            self._file.close()
            self._file = None
            os.replace(self._tmp, self.path)
        return self.path

    def abort(self) -> None:
        """Drop the recording; ``path`` is left untouched."""
        if self._file is not None:
            self._file.close()
            self._file = None
            self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> "Recorder":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
