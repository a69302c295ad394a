"""Live views: ring (slots with step and noise level), latent heatmap, metrics.

The views never run on the tick thread: a :class:`Refresher` thread calls the
instrument's refresh at a bounded rate (about 10 Hz), which copies what it needs
(``ring.slots_view()``, the newest completion, ``runner.metrics()``) into the
widgets' traitlets. Binary data (the latent) travels as a ``Bytes`` traitlet,
i.e. a binary buffer, quantized to uint8 between ``lo`` and ``hi``.
"""

from __future__ import annotations

import html
import threading
import time
import traceback
from collections import deque
from importlib.resources import files
from typing import Callable

import anywidget
import ipywidgets as W
import numpy as np
import psutil
import torch
import traitlets as t


def _asset(name: str) -> str:
    return (files("demon_nb.widgets") / name).read_text(encoding="utf-8")


class RingView(anywidget.AnyWidget):
    """The D slots: per slot ``{step, steps, t, born_tick, draining, tag}`` or None (empty)."""

    _esm = t.Unicode(_asset("ring_view.js")).tag(sync=True)
    slots = t.List().tag(sync=True)
    tick = t.Int(0).tag(sync=True)
    completions = t.Int(0).tag(sync=True)

    def update(self, slots: list, tick: int, completions: int) -> None:
        clean = [None if s is None else {"step": int(s["step"]), "steps": int(s["steps"]), "t": float(s["t"]),
                                         "draining": bool(s["draining"]), "born_tick": int(s["born_tick"])}
                 for s in slots]
        with self.hold_sync():
            if clean != self.slots:
                self.slots = clean
            self.tick, self.completions = int(tick), int(completions)


def quantize(latent: np.ndarray) -> tuple[bytes, float, float]:
    """``[T, C]`` -> uint8 bytes (row = frame), with the symmetric range ``lo = -hi``, ``hi = max |x|``."""
    x = np.asarray(latent, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"latent: expected [T, C], got shape {x.shape}")
    hi = float(np.max(np.abs(x))) if x.size and np.isfinite(x).all() else 1.0
    hi = hi if hi > 0 else 1.0
    q = np.clip(np.round((x + hi) / (2 * hi) * 255.0), 0, 255).astype(np.uint8)
    return q.tobytes(), -hi, hi


class LatentView(anywidget.AnyWidget):
    """Heatmap of the newest completion's latent ``[T, C]`` (x = frame, y = channel) with the playhead.

    ``audio`` (the audio widget's ``_uid``) and ``hop``: the page draws the playhead from the
    audio widget's own reports, so no kernel message moves it (``set_playhead`` is the fallback
    without them). ``visible``: whether the page shows it (reported by the page); ``show``
    sends nothing while it is hidden."""

    _esm = t.Unicode(_asset("latent_view.js")).tag(sync=True)
    data = t.Bytes(b"").tag(sync=True)
    frames = t.Int(0).tag(sync=True)
    channels = t.Int(0).tag(sync=True)
    lo = t.Float(-1.0).tag(sync=True)
    hi = t.Float(1.0).tag(sync=True)
    playhead = t.Float(0.0).tag(sync=True)  # in frames
    completion = t.Int(-1).tag(sync=True)
    audio = t.Unicode("").tag(sync=True)
    hop = t.Int(0).tag(sync=True)
    visible = t.Bool(True)                   # reported by the page (kernel side only)

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.on_msg(self._on_page_msg)

    def _on_page_msg(self, _widget, content, _buffers) -> None:
        if isinstance(content, dict) and content.get("type") == "visible":
            self.visible = content.get("visible") is True

    def show(self, latent: torch.Tensor | np.ndarray, completion: int) -> None:
        if completion == self.completion or not self.visible:
            return
        x = latent.detach().float().cpu().numpy() if isinstance(latent, torch.Tensor) else np.asarray(latent)
        data, lo, hi = quantize(x)
        with self.hold_sync():
            self.frames, self.channels = int(x.shape[0]), int(x.shape[1])
            self.lo, self.hi, self.data, self.completion = lo, hi, data, int(completion)

    def set_playhead(self, frame: float) -> None:
        if abs(frame - self.playhead) >= 0.5:
            self.playhead = float(frame)


class LatencyTracker:
    """Control-to-ear latency: when a version was written (kernel clock) vs when it was first heard.

    ``heard(versions, at, since)`` takes the browser's ``heard_versions``/``heard_at`` and the
    time the loop first sounded; for each key the write with the largest version <= the heard
    version gives ``latency = heard_at - max(written_at, since)``: a write made before any
    sound reached the page (e.g. in a cell queued behind the instrument's) does not count the
    start-up as latency.
    """

    def __init__(self, history: int = 512):
        self._writes: dict[str, deque[tuple[int, float]]] = {}
        self._history = history
        self._lock = threading.Lock()
        self.latest: dict[str, float] = {}

    def wrote(self, key: str, version: int, at: float | None = None) -> None:
        with self._lock:
            self._writes.setdefault(key, deque(maxlen=self._history)).append((int(version), time.time() if at is None else at))

    def heard(self, versions: dict, at: dict, since: float | None = None) -> dict[str, float]:
        with self._lock:
            for key, version in versions.items():
                writes = [w for w in self._writes.get(key, ()) if w[0] <= int(version)]
                if writes and key in at:
                    start = max(writes)[1] if since is None else max(max(writes)[1], since)
                    self.latest[key] = float(at[key]) - start
            return dict(self.latest)


def metrics_html(m: dict) -> str:
    """The metrics line (plain HTML): what a player needs, no raw counters. ``audio`` (playing,
    loading, waiting), ``control_to_ear_s`` per version key, ``cpu_headroom`` (idle share of
    the machine's cores), tick and completions per second, depth x steps."""
    def fmt(key: str, unit: str, digits: int = 1) -> str:
        v = m.get(key)
        return "–" if v is None else f"{v:.{digits}f} {unit}".rstrip()
    latency = m.get("control_to_ear_s") or {}
    ear = ", ".join(f"{k} {v * 1e3:.0f} ms" for k, v in sorted(latency.items())) or "–"
    if latency and m.get("output_latency_ms"):
        ear += f" (of which the browser's output {m['output_latency_ms']:.0f} ms)"
    headroom = m.get("cpu_headroom")
    items = [("audio", html.escape(str(m.get("audio", "–")))), ("control→ear", ear),
             ("CPU headroom", "–" if headroom is None else f"{100 * headroom:.0f}%"),
             ("tick", fmt("tick_ms", "ms")), ("completions/s", fmt("completions_per_s", "", 1)),
             ("depth × steps", f"{m.get('depth', '–')} × {m.get('steps', '–')}")]
    cells = " · ".join(f"<b>{k}</b> {v}" for k, v in items)
    return f'<div class="demon-metrics" style="font-family:monospace;font-size:12px">{cells}</div>'


class CpuMeter:
    """CPU headroom of the whole machine: the idle share (idle + iowait) of all cores between
    two calls of ``read()`` (psutil's system CPU times), in [0, 1]."""

    def __init__(self):
        self._last = psutil.cpu_times()
        self.headroom: float | None = None

    def read(self) -> float | None:
        now = psutil.cpu_times()
        total = sum(now) - sum(self._last)
        idle = (now.idle + getattr(now, "iowait", 0.0)) - (self._last.idle + getattr(self._last, "iowait", 0.0))
        self._last = now
        if total > 0:
            self.headroom = min(1.0, max(0.0, idle / total))
        return self.headroom


class MetricsView:
    """Plain ipywidgets HTML; ``update(metrics)`` re-renders only when the text changed."""

    def __init__(self):
        self.widget = W.HTML(metrics_html({}))
        self.widget.add_class("demon-metrics-view")

    def update(self, metrics: dict) -> None:
        text = metrics_html(metrics)
        if text != self.widget.value:
            self.widget.value = text


class Refresher:
    """Calls ``fn()`` on its own daemon thread, ``hz`` times a second until ``stop()``.

    Adaptive (``headroom`` given, a callable returning the machine's idle CPU share or None):
    about once a second the rate drops by a third when the headroom is under ``LOW`` (the
    views yield to the tick thread and the browser's audio) and climbs back by a quarter,
    up to ``hz``, when it is over ``HIGH``; never under ``min_hz``."""

    LOW, HIGH = 0.15, 0.35

    def __init__(self, fn: Callable[[], None], hz: float = 10.0, name: str = "demon-views",
                 headroom: Callable[[], float | None] | None = None, min_hz: float = 2.0):
        if not 0 < hz <= 30:
            raise ValueError(f"hz: expected a rate in (0, 30], got {hz!r}")
        if not 0 < min_hz <= hz:
            raise ValueError(f"min_hz: expected a rate in (0, hz={hz}], got {min_hz!r}")
        self.fn, self.max_hz, self.min_hz, self.hz = fn, float(hz), float(min_hz), float(hz)
        self.headroom = headroom
        self.calls = 0
        self.failures = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)

    @property
    def interval(self) -> float:
        return 1.0 / self.hz

    def adapt(self, headroom: float | None) -> float:
        """The new rate for a measured ``headroom`` (None: unchanged)."""
        if headroom is not None:
            if headroom < self.LOW:
                self.hz = max(self.min_hz, self.hz / 1.5)
            elif headroom > self.HIGH:
                self.hz = min(self.max_hz, self.hz * 1.25)
        return self.hz

    def start(self) -> "Refresher":
        self._thread.start()
        return self

    def _loop(self) -> None:
        adapted = time.monotonic()
        while not self._stop.wait(self.interval):
            try:
                self.fn()
                if self.headroom is not None and time.monotonic() - adapted >= 1.0:
                    adapted = time.monotonic()
                    self.adapt(self.headroom())
            except Exception:  # a view glitch must never stop the refresh
                self.failures += 1
                if self.failures <= 3:
                    traceback.print_exc()
            self.calls += 1

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()
