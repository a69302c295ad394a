"""Source picker: built-in pieces, an uploaded file, or a microphone recording -> a source latent.

Uploads are written to a private temporary folder under a fixed name
(``upload.<suffix>``, the suffix reduced to ``[a-z0-9]``), so a file name never
becomes a path outside that folder; they are decoded with soundfile, else PyAV
(any format FFmpeg reads, e.g. the microphone's webm/opus), resampled to the
codec's rate, fitted to the loop (tiled or cut) and encoded with
``model.codec.encode``. The latent goes to ``write("source" | "x0_target", latent)``.
Errors (broken file, unknown format, a denied microphone) show in the picker.
"""

from __future__ import annotations

import html
import math
import os
import re
import tempfile
import threading
from typing import Any, Callable

import ipywidgets as W
import numpy as np
import torch

Write = Callable[[str, Any], int]
MAX_UPLOAD_BYTES = 200 * 2**20
MIC_TIMEOUT_S = 4.0


def safe_suffix(name: str) -> str:
    """The file's extension reduced to ``[a-z0-9]{1,8}`` ("bin" when there is none)."""
    base = re.split(r"[\\/]", str(name))[-1]
    suffix = base.rsplit(".", 1)[-1].lower() if "." in base else ""
    suffix = re.sub(r"[^a-z0-9]", "", suffix)[:8]
    return suffix or "bin"


def _read_soundfile(path: str) -> tuple[np.ndarray, int]:
    import soundfile as sf

    data, sr = sf.read(path, dtype="float32", always_2d=True)
    return data.T, int(sr)


def _read_av(path: str) -> tuple[np.ndarray, int]:
    import av

    with av.open(path) as container:
        if not container.streams.audio:
            raise ValueError("no audio stream")
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="fltp")
        chunks, sr = [], stream.rate
        for frame in container.decode(stream):
            for out in resampler.resample(frame):
                chunks.append(out.to_ndarray())
                sr = out.sample_rate
        for out in resampler.resample(None):
            chunks.append(out.to_ndarray())
    if not chunks:
        raise ValueError("no audio samples")
    return np.concatenate(chunks, axis=1).astype(np.float32), int(sr)


def decode_audio(data: bytes, name: str = "audio") -> tuple[np.ndarray, int]:
    """Bytes of an audio file -> ``(pcm [A, N] float32, sample_rate)``; ValueError naming the file."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ValueError(f"file: expected the file's bytes, got {type(data).__name__}")
    data = bytes(data)
    if not data:
        raise ValueError(f"file {name!r}: is empty")
    if len(data) > MAX_UPLOAD_BYTES:
        raise ValueError(f"file {name!r}: larger than {MAX_UPLOAD_BYTES // 2**20} MiB")
    with tempfile.TemporaryDirectory(prefix="demon-upload-") as folder:
        path = os.path.join(folder, f"upload.{safe_suffix(name)}")
        with open(path, "wb") as f:
            f.write(data)
        errors = []
        for reader in (_read_soundfile, _read_av):
            try:
                pcm, sr = reader(path)
                break
            except Exception as exc:  # noqa: BLE001 - any decoder failure means: try the next one
                errors.append(f"{reader.__name__.strip('_')}: {exc}")
        else:
            raise ValueError(f"file {name!r}: not a readable audio file ({'; '.join(errors)})")
    if pcm.size == 0 or sr <= 0:
        raise ValueError(f"file {name!r}: no audio samples")
    if not np.all(np.isfinite(pcm)):
        raise ValueError(f"file {name!r}: contains non-finite samples")
    return pcm, sr


def fit_audio(pcm: np.ndarray, sample_rate: int, target_rate: int, channels: int, samples: int) -> torch.Tensor:
    """Resample (polyphase), match channels (downmix or repeat) and tile/cut to ``samples`` -> ``[1, A, samples]``."""
    from scipy.signal import resample_poly

    x = np.asarray(pcm, dtype=np.float32)
    if sample_rate != target_rate:
        g = math.gcd(int(sample_rate), int(target_rate))
        x = resample_poly(x, target_rate // g, sample_rate // g, axis=-1).astype(np.float32)
    if x.shape[0] != channels:
        x = np.repeat(x.mean(0, keepdims=True), channels, axis=0)
    if x.shape[1] < samples:
        x = np.tile(x, (1, -(-samples // x.shape[1])))
    return torch.from_numpy(np.ascontiguousarray(x[:, :samples]))[None]


def encode_source(model, pcm: np.ndarray, sample_rate: int) -> torch.Tensor:
    """Audio -> the model's latent ``[T, C]`` for one loop."""
    codec = model.codec
    audio = fit_audio(pcm, sample_rate, codec.sample_rate, codec.audio_channels, model.frames * codec.hop)
    with torch.inference_mode():
        latent = codec.encode(audio)
    latent = latent[0] if latent.ndim == 3 else latent
    if latent.shape[0] < model.frames:
        raise ValueError(f"source: the codec gave {latent.shape[0]} frames, expected {model.frames}")
    return latent[: model.frames].float().clone()


def builtin_pieces(model, count: int = 6) -> list[tuple[str, Callable[[], torch.Tensor]]]:
    """(label, make latent) for the model's built-in pieces: the composer for "mini",
    data samples for a model with ``denoiser.sample_data``, else none."""
    if model.name == "mini":
        from ..models.mini.composer import compose

        pieces = []
        for seed in range(count):
            latent, caption, _meta = compose(seed, frames=model.frames)
            pieces.append((f"{seed}: {caption}"[:70], lambda latent=latent: latent))
        return pieces
    sample = getattr(model.denoiser, "sample_data", None)
    if sample is not None:
        labels = getattr(model.denoiser, "labels", 1)
        return [(f"data sample, label {k}", lambda k=k: sample(k, model.frames, seed=k)) for k in range(labels)]
    return []


class SourcePicker:
    """``SourcePicker(model, write)``; ``.widget``; ``choose(latent, what)`` is the common path."""

    def __init__(self, model, write: Write, microphone: bool = True):
        self.model, self.write = model, write
        self.chosen: str | None = None
        self.message = W.HTML("")
        self.message.add_class("demon-source-message")
        self.pieces = dict(builtin_pieces(model))
        self.target = W.ToggleButtons(options=["source", "x0_target"], value="source", description="use as",
                                      style={"button_width": "90px"})
        self.builtin = W.Dropdown(options=["(none)", *self.pieces], value="(none)", description="built-in",
                                  layout=W.Layout(width="420px"))
        self.builtin.observe(self._on_builtin, names="value")
        self.upload = W.FileUpload(accept="audio/*,.wav,.flac,.ogg,.mp3,.m4a,.webm,.opus,.aiff", multiple=False,
                                   description="upload audio")
        self.upload.observe(self._on_upload, names="value")
        self.clear = W.Button(description="clear")
        self.clear.on_click(lambda _b: self._apply(None, "nothing"))
        self.recorder = None
        self._mic_seen = 0
        rows = [W.HTML("<b>source</b> <small>(submission class: heard from the next slots born)</small>"),
                W.HBox([self.target, self.clear]), self.builtin, self.upload]
        if microphone:
            rows.append(self._microphone())
        rows.append(self.message)
        self.widget = W.VBox(rows)
        self.widget.add_class("demon-source-picker")

    # -- shared path ----------------------------------------------------------------------
    def _apply(self, latent: torch.Tensor | None, what: str) -> bool:
        try:
            self.write(self.target.value, latent)
        except ValueError as exc:
            return self._error(str(exc))
        self.chosen = what
        self.message.value = f'<span class="demon-ok">{self.target.value}: {html.escape(what)}</span>'
        return True

    def _error(self, text: str) -> bool:
        self.message.value = f'<span class="demon-error" style="color:#b03a2e">⚠ {html.escape(text)}</span>'
        return False

    def choose_audio(self, data: bytes, name: str) -> bool:
        """Decode + encode an audio file's bytes and use it; False (and a message) if it fails."""
        try:
            pcm, sr = decode_audio(data, name)
            latent = encode_source(self.model, pcm, sr)
        except ValueError as exc:
            return self._error(str(exc))
        return self._apply(latent, f"{name} ({pcm.shape[1] / sr:.1f} s at {sr} Hz)")

    # -- observers ----------------------------------------------------------------------------
    def _on_builtin(self, change) -> None:
        label = change["new"]
        if label in self.pieces:
            self._apply(self.pieces[label](), label)

    def _on_upload(self, change) -> None:
        files = change["new"]
        if not files:
            return
        item = files[0]
        name = item.get("name", "upload") if isinstance(item, dict) else getattr(item, "name", "upload")
        content = item.get("content") if isinstance(item, dict) else getattr(item, "content", None)
        self.choose_audio(bytes(content or b""), str(name))

    # -- microphone (ipywebrtc) -------------------------------------------------------------
    def _microphone(self) -> W.Widget:
        """Our own record toggle drives ipywebrtc's recorder from the kernel (``recorder.recording``
        syncs to the page, whose recorder model starts and stops the MediaRecorder). The recorder's
        own view is hidden (kept in the tree so closing the picker closes it): its button changes
        ``recording`` in the page only, so the kernel never learns that a recording started or
        stopped."""
        try:
            from ipywebrtc import AudioRecorder, CameraStream
        except ImportError:
            return W.HTML("<small>microphone: ipywebrtc is not installed</small>")
        stream = CameraStream(constraints={"audio": True, "video": False})
        self.recorder = AudioRecorder(stream=stream, format="webm", codecs="opus")
        self.recorder.audio.observe(self._on_recording, names="value")
        self.recorder.layout.display = "none"
        self.record_button = W.ToggleButton(value=False, description="● record", tooltip="record from the microphone",
                                            layout=W.Layout(width="120px"))
        self.record_button.add_class("demon-mic-record")
        self.record_button.observe(self._on_record_button, names="value")
        return W.HBox([self.record_button, self.recorder,
                       W.HTML("<small>microphone: record, then stop (the browser asks for permission)</small>")])

    def _on_record_button(self, change) -> None:
        recording = bool(change["new"])
        self.record_button.description = "■ stop" if recording else "● record"
        self.recorder.recording = recording
        self._on_recording_state({"new": recording})

    def _on_recording(self, change) -> None:
        self._mic_seen += 1
        if change["new"]:
            self.choose_audio(bytes(change["new"]), "microphone.webm")

    def _on_recording_state(self, change) -> None:
        if change["new"]:
            self.message.value = "<small>recording…</small>"
            return
        seen = self._mic_seen
        timer = threading.Timer(MIC_TIMEOUT_S, self._check_microphone, args=(seen,))
        timer.daemon = True
        timer.start()

    def _check_microphone(self, seen: int) -> None:
        """No recording arrived after stop: the microphone was denied or is missing."""
        if self._mic_seen == seen:
            self._error("microphone: no audio arrived. The browser may have denied the microphone or there is "
                        "none; allow it in the site settings and record again.")
