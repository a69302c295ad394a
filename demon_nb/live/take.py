"""A take: one recording of what the listener hears, with what it was made from.

``Take(path, mirror, ...)`` follows the player's mirror of the browser's loop at the
playhead the browser reports (:class:`Recorder`), so the audio file holds exactly the
samples played, and keeps beside it what a later re-render needs:

- ``<stem>.latents.safetensors``: every completion latent (``latents [N, T, C]``) and its
  time since the take started (``seconds [N]``);
- ``<stem>.controls.json``: the preset of the controls at the start (``presets`` schema)
  and every control write during the take (``[seconds, name, value]``).

Every file is written to a temporary name and renamed. Threads: the comm thread calls
``on_status``, the tick thread ``on_completion``, widgets and cells ``on_write``; the
lists are appended under one lock.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors.torch import save_file

from .player import LoopMirror
from .presets import _atomic_write, _plain, capture, check_target
from .recorder import Recorder


class Take:
    def __init__(self, path, mirror: LoopMirror, sample_rate: int, get: Callable[[str], Any], model: str,
                 seconds: float | None = None):
        self.path = check_target(path, (".wav", ".flac"))
        if seconds is not None and (isinstance(seconds, bool) or not isinstance(seconds, (int, float))
                                    or not 0 < seconds <= 24 * 3600):
            raise ValueError(f"seconds: expected a number of seconds in (0, 86400] or None, got {seconds!r}")
        self.recorder = Recorder(self.path, sample_rate, mirror.channels,
                                 max_frames=None if seconds is None else int(round(seconds * sample_rate)))
        stem = self.path.with_suffix("")
        self.files_planned = {"audio": self.path, "latents": stem.with_name(f"{stem.name}.latents.safetensors"),
                              "controls": stem.with_name(f"{stem.name}.controls.json")}
        self.preset, self._start_latents = capture(get, model, self.files_planned["latents"].name)
        self.started = time.monotonic()
        self.latents: list[torch.Tensor] = []
        self.times: list[float] = []
        self.history: list[list] = []
        self.files: dict[str, Path] | None = None
        self._lock = threading.Lock()
        self._follow = self.recorder.status_callback(mirror)

    @property
    def recording(self) -> bool:
        return self.files is None

    def on_status(self, status: dict) -> None:
        """A browser status report: record the samples played since the last one."""
        with self._lock:
            if self.files is not None:
                return
            self._follow(status)
            done = self.recorder.full
        if done:
            self.stop()

    def on_completion(self, latent: torch.Tensor) -> None:
        with self._lock:
            if self.files is None:
                self.latents.append(latent.detach().cpu().float().clone())
                self.times.append(time.monotonic() - self.started)

    def on_write(self, name: str, value: Any) -> None:
        with self._lock:
            if self.files is None:
                self.history.append([round(time.monotonic() - self.started, 4), name, _plain(value)
                                     if not isinstance(value, torch.Tensor) or value.numel() <= 4096 else "<latent>"])

    def stop(self) -> dict[str, Path]:
        """Finish the audio (at most ``seconds`` long), write the latents and the control history;
        returns the paths. Idempotent."""
        with self._lock:
            if self.files is not None:
                return self.files
            self.recorder.close()
            files = dict(self.files_planned)
            tensors = dict(self._start_latents)  # the source / x0 target of the preset at the start
            if self.latents:
                tensors.update(latents=torch.stack(self.latents), seconds=torch.tensor(self.times))
            if tensors:
                _atomic_write(files["latents"], lambda tmp: save_file(tensors, tmp))
            else:
                files.pop("latents")
            document = {"preset": self.preset, "history": self.history, "samples": self.recorder.frames}
            _atomic_write(files["controls"], lambda tmp: Path(tmp).write_text(json.dumps(document)))
            self.files = files
            return files
