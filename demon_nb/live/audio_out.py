"""``AudioOut``: the browser's loop buffer as an anywidget.

The front end (``widgets/audio_out.js``) builds one AudioContext and one
AudioWorklet loop buffer per widget model and says ``ready`` (with its sample
rate) once it can take patches, again after a page reload. ``send_patch``
ships a ``Patch`` as one binary buffer (channel-planar float32 or int16) and
may be called from any thread. The browser reports about 10 times a second;
the reports land in the kernel-side traitlets ``playhead``, ``heard_versions``,
``heard_at``, ``silent_samples``, ... (not synced back to the browser).
Control-to-ear latency of a control write at epoch time ``w`` that bumped
version ``v``: ``heard_at[name] - w`` once ``heard_versions[name] >= v``
(kernel and browser on one machine's clock).

Transport encoding (Colab's widget manager drops the binary buffers of custom
messages): a front end that says ``ready`` with ``probe: true`` gets a probe, a
small binary buffer of known bytes (also in the content as base64); it answers
``{type: "probe", nonce, binary}``: did the buffer arrive intact. Patches stay
binary meanwhile (no delay when buffers work) and are kept; a ``binary: false``
answer switches every patch, the kept ones first, to base64 text in the
content (``b64``: the same PCM bytes). Each ready negotiates again.
``transport_encoding="binary"|"base64"`` forces one; ``encoding`` says which
is in use (``"pending"`` while the probe is unanswered).

Few messages back: every message from the page costs the kernel a busy/idle status
pair and the page a redraw of its kernel indicators, so only about two patches a
second ask for an ack (``ack: true``; the lead estimator's round-trip samples) and
the page reports its status every second (after 250 ms when a heard version changed).
"""

from __future__ import annotations

import base64
import threading
import time
import uuid
from importlib.resources import files
from typing import Callable

import anywidget
import numpy as np
import traitlets as t

from ..engine.checks import check_choice, check_int
from .player import Patch, Player, fade_samples

DTYPES = ("float32", "int16")
ENCODINGS = ("auto", "binary", "base64")
# AudioContext latencyHint: "lowest" asks the browser for its smallest output buffer (latencyHint 0);
# headless Chromium: 10.7 ms of base + output latency instead of 42 ms for "interactive"
LATENCY_HINTS = ("lowest", "interactive", "balanced", "playback")
PROBE = bytes(range(256))                 # every byte value: a text re-encoding shows too
ACK_EVERY_S = 0.5   # patches asked to be acked (round-trip samples for the lead): about two a second


def _asset(name: str) -> str:
    return (files("demon_nb.widgets") / name).read_text(encoding="utf-8")


def encode_pcm(pcm: np.ndarray, dtype: str = "float32") -> bytes:
    """Channel-planar bytes of ``pcm [A, N]``: float32, or int16 = round(x * 32767)."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
    pcm = np.asarray(pcm, dtype=np.float32)
    if dtype == "int16":
        return np.round(np.clip(pcm, -1.0, 1.0) * 32767.0).astype("<i2").tobytes()
    return np.ascontiguousarray(pcm, dtype="<f4").tobytes()


class AudioOut(anywidget.AnyWidget):
    """``AudioOut(sample_rate=48000, channels=2, loop_samples=..., dtype="float32",
    transport_encoding="auto")``."""

    _esm = t.Unicode(_asset("audio_out.js")).tag(sync=True)
    _worklet = t.Unicode(_asset("audio_worklet.js")).tag(sync=True)
    _uid = t.Unicode().tag(sync=True)
    sample_rate = t.Int(48_000).tag(sync=True)
    channels = t.Int(2).tag(sync=True)
    loop_samples = t.Int(480_000).tag(sync=True)
    playing = t.Bool(True).tag(sync=True)
    volume = t.Float(0.8).tag(sync=True)
    latency_hint = t.Unicode("lowest").tag(sync=True)  # read when the page builds its AudioContext

    # reported by the browser (kernel side only)
    ready = t.Bool(False)
    ready_events = t.Int(0)             # first load + one per page reload
    browser_sample_rate = t.Int(0)
    playhead = t.Int(0)
    rendered_samples = t.Int(0)
    silent_samples = t.Int(0)
    skipped = t.Int(0)
    frame_gaps = t.Int(0)
    fill = t.Float(0.0)
    rms = t.Float(0.0)
    peak = t.Float(0.0)
    patches_applied = t.Int(0)
    heard_versions = t.Dict()
    heard_at = t.Dict()                 # name -> epoch s the first sample reached the speakers
    output_latency_ms = t.Float(0.0)    # the page's AudioContext: baseLatency + outputLatency
    heard_ctx_time = t.Dict()           # name -> AudioContext time of that sample
    sounding_since = t.Float(None, allow_none=True)  # epoch s of the first report with sound in the loop
    error = t.Unicode("")
    transport_encoding = t.Unicode("auto")  # as constructed: "auto" | "binary" | "base64"
    encoding = t.Unicode("pending")         # in use: "binary" | "base64" | "pending" (auto, probe unanswered)

    @t.validate("latency_hint")
    def _valid_latency_hint(self, proposal):
        return check_choice("latency_hint", proposal["value"], LATENCY_HINTS)

    def __init__(self, sample_rate: int = 48_000, channels: int = 2, loop_samples: int = 480_000,
                 fade_ms: float = 5.0, dtype: str = "float32", transport_encoding: str = "auto",
                 latency_hint: str = "lowest", **kwargs):
        for name, value in (("sample_rate", sample_rate), ("channels", channels), ("loop_samples", loop_samples)):
            check_int(name, value, 1)
        if channels > 8:
            raise ValueError(f"channels must be <= 8, got {channels}")
        if not (8_000 <= sample_rate <= 192_000):
            raise ValueError(f"sample_rate must be in [8000, 192000] (AudioContext range), got {sample_rate}")
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
        check_choice("transport_encoding", transport_encoding, ENCODINGS)
        check_choice("latency_hint", latency_hint, LATENCY_HINTS)
        volume = kwargs.get("volume", 0.8)
        if not (0.0 <= volume <= 1.0):
            raise ValueError(f"volume must be in [0, 1], got {volume}")
        self.fade = fade_samples(sample_rate, fade_ms)
        self.dtype = dtype
        self._lock = threading.Lock()
        self._ready_callbacks: list[Callable[[int], None]] = []
        self._status_callbacks: list[Callable[[dict], None]] = []
        self._ack_callbacks: list[Callable[[int], None]] = []
        self.reported_at = time.monotonic()
        self.patches_sent = 0
        self.ack_every_s = ACK_EVERY_S
        self._ack_asked_at = -1e9
        self._mode = "pending" if transport_encoding == "auto" else transport_encoding  # under _lock
        self._probes = 0                    # probes sent: the next nonce
        self._nonce = 0                     # of the probe awaiting its answer (0: none)
        self._kept: list[tuple[dict, bytes]] = []   # binary patches sent while pending
        super().__init__(sample_rate=sample_rate, channels=channels, loop_samples=loop_samples,
                         _uid=uuid.uuid4().hex, transport_encoding=transport_encoding, latency_hint=latency_hint,
                         encoding=self._mode, **kwargs)
        self.on_msg(self._on_custom_msg)

    # --- kernel -> browser -------------------------------------------------
    def send_patch(self, patch: Patch) -> None:
        """Send ``patch`` (thread-safe). Raises ValueError on a shape mismatch. Sending before
        the first ready is allowed: a front end that is already listening plays it (one whose
        kernel is busy with queued cells says ready late), one that is not drops it."""
        if not isinstance(patch, Patch):
            raise ValueError(f"patch must be a Patch, got {type(patch).__name__}")
        channels, samples = patch.pcm.shape
        if channels != self.channels:
            raise ValueError(f"patch channels must be {self.channels}, got {channels}")
        if samples > self.loop_samples:
            raise ValueError(f"patch samples must be <= loop_samples={self.loop_samples}, got {samples}")
        now = time.monotonic()
        # no ack before the first ready: such a patch may sit in the page's queue for seconds
        ack = self.ready and now - self._ack_asked_at >= self.ack_every_s and patch.completion_id >= 0
        content = {
            "type": "patch", "ack": bool(ack), "start": int(patch.start_sample) % self.loop_samples,
            "samples": int(samples), "channels": int(channels), "dtype": self.dtype,
            "fade": self.fade, "versions": {k: int(v) for k, v in patch.versions.items()},
            "id": int(patch.completion_id),
        }
        payload = encode_pcm(patch.pcm, self.dtype)
        with self._lock:
            self._send_encoded(content, payload)
            self.patches_sent += 1
            if ack:
                self._ack_asked_at = now

    def _send_encoded(self, content: dict, payload: bytes) -> None:
        """One patch in the current encoding (under ``_lock``)."""
        if self._mode == "base64":
            self.send({**content, "b64": base64.b64encode(payload).decode("ascii")})
            return
        self.send(content, [payload])
        if self._mode == "pending" and self.ready:  # kept for a base64 resend; at most 2 loops of samples
            # (before the first ready nothing is kept: the first ready resends the whole loop anyway)
            self._kept.append((content, payload))
            while sum(c["samples"] for c, _ in self._kept) > 2 * self.loop_samples:
                self._kept.pop(0)

    def _negotiate(self, answers_probe: bool) -> None:
        """On every ready: probe a front end that answers probes (unless base64 is forced)."""
        with self._lock:
            if not answers_probe:           # an older front end: it only reads binary
                self._nonce, self._kept = 0, []
                self._mode = "binary" if self.transport_encoding == "auto" else self._mode
            elif self.transport_encoding != "base64":
                self._probes += 1
                self._nonce = self._probes
                self._mode = "pending" if self.transport_encoding == "auto" else self._mode
                self.send({"type": "probe", "nonce": self._nonce,
                           "b64": base64.b64encode(PROBE).decode("ascii")}, [PROBE])
            mode = self._mode
        self.encoding = mode

    def _on_probe(self, content: dict) -> None:
        """The browser's answer: ``binary`` is True only if the probe's buffer arrived intact."""
        binary = content.get("binary") is True
        with self._lock:
            if not self._nonce or content.get("nonce") != self._nonce:
                return                      # an answer to an older probe
            self._nonce = 0
            if self.transport_encoding == "auto":
                self._mode = "binary" if binary else "base64"
                kept, self._kept = self._kept, []
                if not binary:              # they were lost: resend in order, before any newer patch
                    for c, payload in kept:
                        self._send_encoded(c, payload)
            mode = self._mode
        self.encoding = mode
        if not binary and self.transport_encoding == "binary":
            self.error = ("binary buffers do not reach this browser (Colab?): "
                          "use transport_encoding='auto' or 'base64'")

    # --- callbacks -----------------------------------------------------------
    def on_ready(self, callback: Callable[[int], None]) -> None:
        """Call ``callback(sample_rate)`` on every ready (first load, page reload);
        at once if the browser is ready already."""
        self._ready_callbacks.append(callback)
        if self.ready:
            callback(self.browser_sample_rate)

    def on_status(self, callback: Callable[[dict], None]) -> None:
        self._status_callbacks.append(callback)

    def on_ack(self, callback: Callable[[int], None]) -> None:
        """``callback(completion_id)`` when the worklet has applied a patch."""
        self._ack_callbacks.append(callback)

    def attach(self, player: Player, resend_chunk_s: float = 1.0) -> None:
        """Feed ``player`` the browser's playhead and patch acks; after a page
        reload (a second ``ready``) resend the loop from the player's mirror."""
        if player.mirror.channels != self.channels or player.loop_samples != self.loop_samples:
            raise ValueError("player must have the widget's channels and loop_samples")
        chunk = max(1, int(resend_chunk_s * self.sample_rate))

        def resend(_sample_rate: int) -> None:
            if self.ready_events > 1:
                for patch in player.mirror.patches(chunk):
                    self.send_patch(patch)

        self.on_status(lambda s: player.report(s["playhead"], s["playing"]))
        self.on_ack(player.acked)
        self._ready_callbacks.append(resend)

    # --- browser -> kernel ---------------------------------------------------
    def _on_custom_msg(self, _widget, content, _buffers) -> None:
        kind = content.get("type") if isinstance(content, dict) else None
        if kind == "ready":
            self.browser_sample_rate = int(content.get("sample_rate", 0))
            if self.browser_sample_rate != self.sample_rate:
                self.error = f"browser runs at {self.browser_sample_rate} Hz, expected {self.sample_rate} Hz"
            self._negotiate(content.get("probe") is True)
            self.ready = True
            self.ready_events += 1
            for cb in list(self._ready_callbacks):
                cb(self.browser_sample_rate)
        elif kind == "probe":
            self._on_probe(content)
        elif kind == "ack":
            for cb in list(self._ack_callbacks):
                cb(int(content["id"]))
        elif kind == "status":
            self._apply_status(content)
        elif kind == "error":
            self.error = str(content.get("message", ""))

    def _apply_status(self, s: dict) -> None:
        self.reported_at = time.monotonic()
        with self.hold_trait_notifications():
            self.playhead = int(s.get("playhead", 0))
            self.rendered_samples = int(s.get("rendered", 0))
            self.silent_samples = int(s.get("silent", 0))
            self.skipped = int(s.get("skips", 0))
            self.frame_gaps = int(s.get("gaps", 0))
            self.fill = float(s.get("filled", 0.0))
            self.rms = float(s.get("rms", 0.0))
            self.peak = float(s.get("peak", 0.0))
            self.patches_applied = int(s.get("patches", 0))
            self.output_latency_ms = float(s.get("output_latency", 0.0)) * 1e3
            if self.sounding_since is None and self.fill > 0:
                self.sounding_since = float(s.get("epoch", time.time()))
            if s.get("heard") != self.heard_versions:
                self.heard_versions = dict(s.get("heard", {}))
                self.heard_at = dict(s.get("heard_at", {}))
                self.heard_ctx_time = dict(s.get("heard_ctx", {}))
        for cb in list(self._status_callbacks):
            cb(s)
