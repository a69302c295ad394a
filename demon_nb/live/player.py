"""Loop-buffer playback model (pure logic, no widgets).

The browser holds the whole loop as PCM and loops it; the kernel decodes a
window of each new completion just ahead of the playhead and sends it as a
``Patch``. This module plans those windows, places patches (splitting at the
loop end), keeps a kernel-side mirror of the browser's loop buffer (same
crossfade as the worklet), estimates the lead from measured times, and cleans
PCM (non-finite samples zeroed, soft limiter keeping output in [-1, 1]).
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np

SAMPLE_RATE = 48_000
CHANNELS = 2
DEFAULT_WINDOW_S = 0.5  # audio decoded per completion, ahead of the playhead (one place for the default)
DEFAULT_PATCH_INTERVAL_S = 0.15  # with unchanged controls, at most one patch per this many seconds


def _positive_int(name: str, value, allow_zero: bool = False) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an int, got {type(value).__name__}")
    if value < 0 or (value == 0 and not allow_zero):
        allowed = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be {allowed}, got {value}")
    return int(value)


@dataclass(frozen=True)
class Patch:
    """``pcm [A, N]`` float32 to be placed at ``start_sample`` of the loop.

    ``versions`` are the control versions the audio was rendered under
    (name -> int); the browser timestamps when each new version is first heard.
    """

    start_sample: int
    pcm: np.ndarray
    versions: dict[str, int] = field(default_factory=dict)
    completion_id: int = 0
    created_at: float = 0.0

    def __post_init__(self):
        _positive_int("start_sample", self.start_sample, allow_zero=True)
        pcm = np.asarray(self.pcm)
        if pcm.ndim != 2 or pcm.shape[1] == 0:
            raise ValueError(f"pcm must have shape [channels, samples] with samples > 0, got {pcm.shape}")
        if pcm.dtype != np.float32:
            raise ValueError(f"pcm must be float32, got {pcm.dtype}")
        for name, version in self.versions.items():
            if not isinstance(name, str) or isinstance(version, bool) or not isinstance(version, (int, np.integer)):
                raise ValueError(f"versions must map str -> int, got {name!r}: {version!r}")

    @property
    def samples(self) -> int:
        return int(self.pcm.shape[1])


def plan_window(playhead_sample: int, loop_samples: int, lead_samples: int,
                window_samples: int, hop: int) -> tuple[int, int]:
    """Latent frame window ``[a, b)`` starting at the first frame at or after
    ``playhead + lead`` (mod loop). ``0 <= a < T`` and ``a < b <= a + T`` with
    ``T = loop_samples // hop``; frames ``>= T`` wrap to ``f - T``."""
    hop = _positive_int("hop", hop)
    loop_samples = _positive_int("loop_samples", loop_samples)
    if loop_samples % hop:
        raise ValueError(f"loop_samples must be a multiple of hop={hop}, got {loop_samples}")
    playhead_sample = _positive_int("playhead_sample", playhead_sample, allow_zero=True)
    lead_samples = _positive_int("lead_samples", lead_samples, allow_zero=True)
    window_samples = _positive_int("window_samples", window_samples)
    frames = loop_samples // hop
    a = -(-(playhead_sample + lead_samples) // hop) % frames   # ceil, then wrap
    n = min(frames, -(-window_samples // hop))
    return a, a + n


def window_frames(a: int, b: int, frames: int) -> np.ndarray:
    """Frame indices of window ``[a, b)`` on a loop of ``frames`` (wrapped)."""
    return np.arange(a, b) % frames


def place(start_sample: int, samples: int, loop_samples: int) -> list[tuple[int, int, int]]:
    """Segments ``(loop_start, patch_offset, length)`` of a patch on the loop;
    a patch crossing the loop end is split in two."""
    loop_samples = _positive_int("loop_samples", loop_samples)
    samples = _positive_int("samples", samples)
    if samples > loop_samples:
        raise ValueError(f"patch samples must be <= loop_samples={loop_samples}, got {samples}")
    start = _positive_int("start_sample", start_sample, allow_zero=True) % loop_samples
    first = min(samples, loop_samples - start)
    segments = [(start, 0, first)]
    if first < samples:
        segments.append((0, first, samples - first))
    return segments


def fade_weights(samples: int, fade: int) -> np.ndarray:
    """Weight of the new PCM per patch sample: ``sin^2`` ramps of ``fade`` samples
    at both edges (``w(i) = sin^2(pi/2 * (i + 0.5) / fade)``), 1 in between.
    The worklet uses the same formula: ``out = old * (1 - w) + new * w``."""
    samples = _positive_int("samples", samples)
    fade = min(_positive_int("fade", fade, allow_zero=True), samples // 2)
    w = np.ones(samples, dtype=np.float32)
    if fade:
        ramp = np.sin(0.5 * np.pi * (np.arange(fade) + 0.5) / fade) ** 2
        w[:fade] = ramp
        w[samples - fade:] = ramp[::-1]
    return w


def fade_samples(sample_rate: int = SAMPLE_RATE, ms: float = 5.0) -> int:
    """Crossfade length in samples for ``ms`` milliseconds (a few ms)."""
    if not (0.0 <= ms <= 50.0):
        raise ValueError(f"fade ms must be in [0, 50], got {ms}")
    return int(round(_positive_int("sample_rate", sample_rate) * ms / 1000.0))


def sanitize(pcm: np.ndarray) -> tuple[np.ndarray, int]:
    """Float32 copy with NaN/inf replaced by 0, and the count replaced."""
    out = np.array(pcm, dtype=np.float32, copy=True)
    bad = ~np.isfinite(out)
    count = int(bad.sum())
    if count:
        out[bad] = 0.0
    return out, count


def soft_limit(pcm: np.ndarray, threshold: float = 0.9, inplace: bool = False) -> tuple[np.ndarray, int]:
    """Soft limiter: ``|x| <= th`` unchanged, above it
    ``sign(x) * (th + (1 - th) * tanh((|x| - th) / (1 - th)))`` so the output stays
    inside [-1, 1] with a continuous slope; returns (out, count limited).  ``inplace``
    limits a float32 array in place (the player's own copy) instead of copying it."""
    if not (0.0 < threshold < 1.0):
        raise ValueError(f"threshold must be in (0, 1), got {threshold}")
    if inplace and not (isinstance(pcm, np.ndarray) and pcm.dtype == np.float32):
        raise ValueError(f"pcm: inplace limiting needs a float32 ndarray, got {getattr(pcm, 'dtype', type(pcm))}")
    out = pcm if inplace else np.asarray(pcm, dtype=np.float32).copy()
    mag = np.abs(out)
    over = mag > threshold
    count = int(over.sum())
    if count:
        knee = 1.0 - threshold
        out[over] = np.sign(out[over]) * (threshold + knee * np.tanh((mag[over] - threshold) / knee))
    return out, count


class LeadEstimator:
    """Adaptive lead: the ``quantile`` (p10) of the recent sums decode + transport, plus
    ``margin_s`` (0), clamped to ``[min_s, max_s]``.

    A patch is heard at ``max(arrival, start)``: every ms of lead beyond the arrival is a ms of
    control-to-ear latency. A patch that arrives after its start sample is crossfaded in at the
    playhead by the worklet (on the output side; the buffer stays the kernel's mirror), so the
    lead aims *below* the typical arrival: heard = arrival for ~90 % of patches. It still
    adapts, so that on a slow link a patch's window (0.5 s) keeps covering its arrival point.

    The window is planned after the tick that finished the completion, so the
    lead only has to cover what happens after planning: the decode and the trip
    to the worklet (estimated as half the send-to-ack round trip).
    """

    def __init__(self, initial_s: float = 0.25, margin_s: float = 0.0, min_s: float = 0.02,
                 max_s: float = 2.0, quantile: float = 0.1, history: int = 16):
        if not (0.0 < min_s <= max_s):
            raise ValueError(f"need 0 < min_s <= max_s, got min_s={min_s}, max_s={max_s}")
        if not (0.0 < quantile <= 1.0):
            raise ValueError(f"quantile must be in (0, 1], got {quantile}")
        if margin_s < 0:
            raise ValueError(f"margin_s must be >= 0, got {margin_s}")
        self.initial_s, self.margin_s = float(initial_s), float(margin_s)
        self.min_s, self.max_s, self.quantile = float(min_s), float(max_s), float(quantile)
        self._sums: deque[float] = deque(maxlen=_positive_int("history", history))

    def observe(self, decode_s: float, transport_s: float) -> None:
        parts = {"decode_s": decode_s, "transport_s": transport_s}
        for name, value in parts.items():
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {value}")
        self._sums.append(float(decode_s + transport_s))

    @property
    def count(self) -> int:
        return len(self._sums)

    @property
    def seconds(self) -> float:
        if not self._sums:
            base = self.initial_s
        else:
            base = float(np.quantile(np.fromiter(self._sums, float), self.quantile)) + self.margin_s
        return min(self.max_s, max(self.min_s, base))

    def samples(self, sample_rate: int = SAMPLE_RATE) -> int:
        return int(math.ceil(self.seconds * sample_rate))


def extrapolate_playhead(reported: int, reported_at: float, now: float, sample_rate: int,
                         loop_samples: int, playing: bool) -> int:
    """Playhead now, from the last report: ``(p + (now - t) * sr) mod L`` while playing."""
    if not playing:
        return int(reported) % loop_samples
    elapsed = max(0.0, now - reported_at)
    return int(reported + round(elapsed * sample_rate)) % loop_samples


class LoopMirror:
    """Kernel-side copy of the browser's loop buffer ``[A, L]``; applies patches
    with the worklet's crossfade and tracks which samples have been filled.
    Samples never filled before take the new PCM as is (no fade from silence)."""

    def __init__(self, loop_samples: int, channels: int = CHANNELS, fade: int = 240):
        self.loop_samples = _positive_int("loop_samples", loop_samples)
        self.channels = _positive_int("channels", channels)
        self.fade = _positive_int("fade", fade, allow_zero=True)
        self.pcm = np.zeros((self.channels, self.loop_samples), dtype=np.float32)
        self.filled = np.zeros(self.loop_samples, dtype=bool)
        self._lock = threading.Lock()  # the tick thread writes, the comm thread (reload) and the recorder read

    def apply(self, patch: Patch) -> None:
        if patch.pcm.shape[0] != self.channels:
            raise ValueError(f"patch channels must be {self.channels}, got {patch.pcm.shape[0]}")
        w = fade_weights(patch.samples, self.fade)
        with self._lock:
            for loop_start, offset, length in place(patch.start_sample, patch.samples, self.loop_samples):
                dst = slice(loop_start, loop_start + length)
                ww = np.where(self.filled[dst], w[offset:offset + length], np.float32(1.0))
                new = patch.pcm[:, offset:offset + length]
                self.pcm[:, dst] = self.pcm[:, dst] * (1.0 - ww) + new * ww
                self.filled[dst] = True

    @property
    def fill_fraction(self) -> float:
        return float(self.filled.mean())

    def read(self, start: int, samples: int) -> np.ndarray:
        """``[A, samples]`` from ``start`` onwards, wrapping around the loop end."""
        idx = (int(start) + np.arange(_positive_int("samples", samples, allow_zero=True))) % self.loop_samples
        with self._lock:
            return self.pcm[:, idx]

    def patches(self, chunk: int, versions: dict[str, int] | None = None) -> Iterator[Patch]:
        """The whole filled loop as patches (to resend after a page reload)."""
        chunk = _positive_int("chunk", chunk)
        with self._lock:  # one consistent snapshot, even while the tick thread keeps patching
            pcm, filled = self.pcm.copy(), self.filled.copy()
        for start in range(0, self.loop_samples, chunk):
            n = min(chunk, self.loop_samples - start)
            if filled[start:start + n].any():
                yield Patch(start, pcm[:, start:start + n], dict(versions or {}), -1, time.time())


class Window(tuple):
    """A planned decode window: the pair ``(a, b)`` of frames (wrapped), plus ``skip``, the
    samples of frame ``a`` to drop so the patch starts at the planned sample. Immutable."""

    def __new__(cls, a: int, b: int, skip: int = 0):
        window = super().__new__(cls, (int(a), int(b)))
        window.skip = int(skip)
        return window

    @property
    def a(self) -> int:
        return self[0]

    @property
    def b(self) -> int:
        return self[1]


class Player:
    """Plans windows, builds clean patches and mirrors the loop.

    The runner (tick thread, the owner) asks ``due(versions)`` when a completion is ready;
    if it is, calls ``plan()``, decodes frames ``[a, b)`` of the returned :class:`Window`,
    then ``make_patch(window, pcm, versions, id, decode_s)``. The comm thread calls
    ``report`` (the browser's playhead: one immutable tuple, swapped atomically) and
    ``acked(id)``; the pending sends and the lead estimator are shared between the two
    under one lock. The mirror locks itself.

    Patch budget: a completion rendered under new control versions is always patched (a
    change is heard at once); with unchanged controls at most one patch per
    ``patch_interval_s`` (a newer completion lands before most of a patch would play: only
    its first ``interval`` seconds are heard, the rest is overwritten), so the bytes the
    server relays and the page applies stop scaling with the completion rate.
    Before the browser's first report the playhead is unknown: windows rotate through
    the loop, so a front end that starts listening at any moment gets sound within one patch.
    """

    def __init__(self, loop_samples: int, hop: int, sample_rate: int = SAMPLE_RATE,
                 channels: int = CHANNELS, window_s: float = DEFAULT_WINDOW_S, fade_ms: float = 5.0,
                 lead: LeadEstimator | None = None, limiter_threshold: float = 0.9,
                 patch_interval_s: float = DEFAULT_PATCH_INTERVAL_S):
        self.hop = _positive_int("hop", hop)
        self.loop_samples = _positive_int("loop_samples", loop_samples)
        if self.loop_samples % self.hop:
            raise ValueError(f"loop_samples must be a multiple of hop={hop}, got {loop_samples}")
        self.sample_rate = _positive_int("sample_rate", sample_rate)
        if not window_s > 0:
            raise ValueError(f"window_s must be > 0, got {window_s}")
        self.window_samples = int(window_s * sample_rate)
        if not (math.isfinite(patch_interval_s) and 0.0 <= patch_interval_s < window_s):
            raise ValueError(f"patch_interval_s must be in [0, window_s={window_s}), got {patch_interval_s}")
        self.patch_interval_s = float(patch_interval_s)
        self.skipped_patches = 0    # completions not patched (unchanged controls, a patch sent recently)
        self._last_patch: tuple[float, dict] | None = None   # (monotonic time, versions) of the last patch
        self.patched_versions: dict[str, int] = {}  # the newest version of each key patched so far
        self._rotation = 0          # next frame of the rotating windows before the first report
        self.fade = fade_samples(sample_rate, fade_ms)
        self.mirror = LoopMirror(loop_samples, channels, self.fade)
        self.lead = lead or LeadEstimator()
        self.limiter_threshold = limiter_threshold
        self.nonfinite = 0          # samples zeroed by sanitize
        self.limited = 0            # samples touched by the limiter
        self._clock = (0, time.monotonic(), False)          # (playhead, reported_at, playing): swapped whole
        self.reports = 0            # browser reports seen
        self._pending: dict[int, tuple[float, float]] = {}   # id -> (sent_at, decode_s), under _lock
        self._lock = threading.Lock()

    @property
    def frames(self) -> int:
        return self.loop_samples // self.hop

    def report(self, playhead: int, playing: bool, now: float | None = None) -> None:
        """The browser's playhead (comm thread): one tuple assignment, atomic for readers."""
        self._clock = (int(playhead) % self.loop_samples, time.monotonic() if now is None else now, bool(playing))
        self.reports += 1

    def playhead(self, now: float | None = None) -> int:
        now = time.monotonic() if now is None else now
        playhead, reported_at, playing = self._clock
        return extrapolate_playhead(playhead, reported_at, now, self.sample_rate, self.loop_samples, playing)

    def expect_full(self) -> None:
        """The last patch was a preview (a step write's x0 estimate): the next completion is due
        whatever its versions and the budget say."""
        self._last_patch = None

    def due(self, versions: dict[str, int], now: float | None = None) -> bool:
        """Should the completion rendered under ``versions`` be patched? Yes when the versions
        changed since the last patch, or ``patch_interval_s`` has passed, or no patch was made
        yet; otherwise it is counted in ``skipped_patches``."""
        now = time.monotonic() if now is None else now
        last = self._last_patch
        if last is None or last[1] != versions or now - last[0] >= self.patch_interval_s:
            return True
        self.skipped_patches += 1
        return False

    def plan(self, now: float | None = None) -> Window:
        """Window ahead of the playhead; the whole loop until the mirror is filled; before the
        browser's first report (playhead unknown) the next window of a rotation through the loop.

        A window starts at the frame holding ``playhead + lead``; ``make_patch`` then drops
        the samples before that point, so a patch starts at sample, not frame, precision
        (half a frame, 20 ms, earlier on average).
        """
        with self._lock:
            lead = self.lead.samples(self.sample_rate)
        if not self.mirror.filled.all():
            return Window(*plan_window(self.playhead(now), self.loop_samples, lead, self.loop_samples, self.hop))
        if not self.reports:
            a, b = plan_window(self._rotation * self.hop, self.loop_samples, 0, self.window_samples, self.hop)
            self._rotation = b % self.frames
            return Window(a, b)
        playhead = self.playhead(now)
        a, b = plan_window(playhead, self.loop_samples, max(0, lead - self.hop + 1), self.window_samples, self.hop)
        return Window(a, b, (playhead + lead - a * self.hop) % self.loop_samples)

    def make_patch(self, window: Window | int, pcm: np.ndarray, versions: dict[str, int], completion_id: int,
                   decode_s: float = 0.0, now: float | None = None) -> Patch:
        """Sanitize + limit decoded ``pcm [A, N]`` for the window (or a frame ``a``: no skip),
        mirror it, return the patch."""
        a, skip = (window.a, window.skip) if isinstance(window, Window) else (int(window), 0)
        if not 0 < skip < pcm.shape[1]:
            skip = 0  # the planned start sample lies inside frame ``a`` only when 0 < skip < N
        pcm, bad = sanitize(pcm[:, skip:])  # the one copy of the decoded audio
        pcm, lim = soft_limit(pcm, self.limiter_threshold, inplace=True)
        self.nonfinite += bad
        self.limited += lim
        patch = Patch((int(a) * self.hop + skip) % self.loop_samples, pcm, dict(versions), int(completion_id),
                      time.time() if now is None else now)
        self.mirror.apply(patch)
        self._last_patch = (time.monotonic(), dict(versions))
        for key, version in versions.items():
            self.patched_versions[key] = max(version, self.patched_versions.get(key, version))
        if patch.completion_id >= 0:  # only these may be acked (previews, resends: < 0)
            with self._lock:
                self._pending[patch.completion_id] = (time.monotonic(), float(decode_s))
                while len(self._pending) > 64:
                    self._pending.pop(next(iter(self._pending)))
        return patch

    def acked(self, completion_id: int, now: float | None = None) -> float | None:
        """The browser applied patch ``completion_id``: feed the lead estimator with the
        decode time and half the send-to-ack round trip (the one-way trip to the worklet);
        returns the round trip in seconds, or None if unknown."""
        with self._lock:
            entry = self._pending.pop(int(completion_id), None)
            if entry is None:
                return None
            sent_at, decode_s = entry
            transport = max(0.0, (time.monotonic() if now is None else now) - sent_at)
            self.lead.observe(decode_s, transport / 2)
        return transport
