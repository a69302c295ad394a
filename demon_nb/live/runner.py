"""The runner: the tick loop on its own thread, an asyncio facade for cells.

A background task on the kernel's asyncio loop would stall whenever a cell
blocks, so ticks run on a thread. Each tick's newest completion is decoded in a
window just ahead of the playhead (windowed decode) and published as a patch to
every listener (the audio widget) and to async consumers:

    runner = Runner(load("mini")); runner.start()
    latent = (await runner.completion()).latent
    async for patch in runner.patches(): ...

Control writes from any thread go through ``runner.set(name, value)`` (see
``controls.py``). An exception inside a tick is recorded (``runner.errors``,
``on_error`` listeners) and the loop goes on with the next tick.
"""

from __future__ import annotations

import asyncio
import threading
import time
import traceback
from collections import deque
from dataclasses import dataclass
from typing import Any, AsyncIterator, Callable

import numpy as np
import torch

from ..engine.decode import decode_window
from ..engine.ring import Completion, Ring
from ..engine.state import state_defaults
from ..models.lora import LoraAdapters
from .controls import Controls
from .player import DEFAULT_PATCH_INTERVAL_S, DEFAULT_WINDOW_S, Patch, Player

PREVIEW_PATCH_ID = -2  # previews are never acked (the lead learns from completion patches)


@dataclass(frozen=True)
class TickError:
    tick: int
    message: str
    traceback: str
    at: float


class Runner:
    def __init__(self, model, *, depth: int = 4, steps: int | None = None, shift: float | None = None,
                 device="cpu", dtype=torch.float32, window_s: float = DEFAULT_WINDOW_S, prompt: str | None = None, seed: int = 0,
                 max_ticks_per_s: float | None = None, patch_interval_s: float = DEFAULT_PATCH_INTERVAL_S):
        d = model.defaults
        self.model = model
        self.ring = Ring(model.denoiser, frames=model.frames, channels=model.denoiser.channels, depth=depth,
                         steps=steps or d.get("steps", 8), shift=shift or d.get("shift", 3.0), device=device, dtype=dtype)
        self.ring.state.update(**state_defaults(d))  # e.g. guidance_scale, solver
        prompt = d.get("prompt", "") if prompt is None else prompt  # None: the model's default prompt
        self.controls = Controls(self.ring, model.text_encoder.encode, prompt=prompt, seed=seed,
                                 cfg_mode=d.get("cfg_mode", "none"))
        self.ring.feed = self.controls.request
        codec = model.codec
        self.player = Player(model.frames * codec.hop, codec.hop, codec.sample_rate, codec.audio_channels, window_s=window_s,
                             patch_interval_s=patch_interval_s)
        self.max_ticks_per_s = max_ticks_per_s
        self.tick_ms: deque[float] = deque(maxlen=256)
        self.decode_ms: deque[float] = deque(maxlen=256)
        self.completion_times: deque[float] = deque(maxlen=256)
        self.errors: deque[TickError] = deque(maxlen=32)
        self.completions = 0
        self.previews = 0  # step-write previews played (Ring.preview)
        self._fresh_patch_tick = -(10**9)  # the tick of the last patch that carried a new state version
        self.full_version = 0   # the newest submission version of a full-schedule completion
        self.started_at: float | None = None           # epoch s of the first start()
        self.first_patch_at: float | None = None       # epoch s of the first patch
        self.last_tick_started = time.perf_counter()
        self.last_completion: Completion | None = None
        self._listeners: list[Callable[[Patch], None]] = []
        self._error_listeners: list[Callable[[TickError], None]] = []
        self._before_tick: list[Callable[[], None]] = []
        self.lora = LoraAdapters(model.denoiser, on_switch=self.controls.set_adapter)
        self.ring.select_adapter = self.lora.select
        self.before_tick(lambda: self.lora.apply(self.ring.adapters_in_use()))
        self._consumers: list[tuple[asyncio.AbstractEventLoop, asyncio.Queue, str]] = []
        self._consumers_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._wake = threading.Event()  # a control write ends the tick-rate pause
        self._running = threading.Event()  # set = ticking, clear = paused
        self._tick_lock = threading.RLock()  # held by the loop for each tick (pause() waits on it)
        self._completed = threading.Condition()
        self._first_patch = threading.Event()

    # -- lifecycle ------------------------------------------------------------------------
    def start(self) -> "Runner":
        if self._thread is None or not self._thread.is_alive():
            if self.started_at is None and self.ring.tick_count == 0:
                # sound sooner: the first slot is a first look (as after a submission change)
                self.ring.express(first_look=self.controls.get("first_look"))
            self.started_at = self.started_at or time.time()
            self._stop.clear()
            self._running.set()
            self._thread = threading.Thread(target=self._loop, name="demon-tick", daemon=True)
            self._thread.start()
        else:
            self._running.set()
        return self

    def pause(self) -> None:
        """Stop ticking; returns once no tick is in flight (from any thread, also the tick thread's
        own before-tick callbacks, e.g. a MIDI note mapped to pause)."""
        self._running.clear()
        with self._tick_lock:
            pass

    def resume(self) -> None:
        self._running.set()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._wake.set()
        self._running.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self._thread = None

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def paused(self) -> bool:
        return not self._running.is_set()

    # -- control ----------------------------------------------------------------------------
    def set(self, name: str, value: Any) -> int:
        """Write a control from any thread; ValueError (naming it) if the value is not allowed.
        A tick-rate pause in progress ends at once, so the write lands at the very next tick."""
        version = self.controls.set(name, value)
        self._wake.set()
        return version

    def wake(self) -> None:
        """End a tick-rate pause in progress (a write queued for the next tick, e.g. MIDI's)."""
        self._wake.set()

    def on_patch(self, callback: Callable[[Patch], None]) -> None:
        self._listeners.append(callback)

    def on_error(self, callback: Callable[[TickError], None]) -> None:
        self._error_listeners.append(callback)

    def load_lora(self, path) -> str:
        """Read and check a LoRA adapter on the caller's thread (a bad file raises here, the music
        keeps playing on the previous adapter). A submission change: loaded between two ticks, it
        is taken by the slots born from then on; the slots in flight finish on their adapter."""
        name = self.lora.stage(self.lora.read(path))
        self._wake.set()
        return name

    def unload_lora(self) -> None:
        """Slots born from the next tick on run the base network (submission class, as a swap)."""
        self.lora.unload()
        self._wake.set()

    def before_tick(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` on the tick thread before every tick (e.g. MIDI's coalesced writes)."""
        self._before_tick.append(callback)

    def prepare_tick(self) -> None:
        """What happens between two ticks: the ``before_tick`` callbacks (LoRA swaps and strength,
        MIDI writes); an error in one is printed and the tick goes on."""
        for callback in list(self._before_tick):
            _call_quietly(callback)

    # -- the loop -----------------------------------------------------------------------------
    def _loop(self) -> None:
        torch.set_grad_enabled(False)
        while not self._stop.is_set():
            if not self._running.wait(timeout=0.1):
                continue
            started = time.perf_counter()
            with self._tick_lock:
                if not self._running.is_set() or self._stop.is_set():
                    continue
                self.step()
            if self.max_ticks_per_s:
                remaining = 1.0 / self.max_ticks_per_s - (time.perf_counter() - started)
                if remaining > 0:
                    self._wake.wait(remaining)
                self._wake.clear()

    def step(self) -> list[Completion]:
        """One tick, then decode and publish the newest completion. Never raises."""
        try:
            self.prepare_tick()
            with torch.inference_mode():
                started = self.last_tick_started = time.perf_counter()
                done = self.ring.tick()
                tick_s = time.perf_counter() - started
                self.tick_ms.append(tick_s * 1e3)
                if done:
                    self.completions += len(done)
                    now = time.monotonic()
                    self.completion_times.extend([now] * len(done))
                    newest = done[-1]
                    if not bool(torch.isfinite(newest.latent).all()):
                        # stale, never silent: keep playing the last good version
                        raise FloatingPointError(f"completion {self.completions} is not finite; dropped")
                    self.controls.newest = newest.latent  # for the source feedback of the next requests
                    with self._completed:
                        self.last_completion = newest
                        self._completed.notify_all()
                    if not newest.first_look:   # the newest submission heard at full quality
                        self.full_version = max(self.full_version, newest.request.version)
                    versions = self._versions(newest)
                    patch = self._render(newest, versions) if self.player.due(versions) else None  # budget: Player
                    self._publish(patch, newest)
                elif self._preview_playable(self.ring.preview):
                    self._publish_preview(self.ring.preview)
            return done
        except Exception as exc:  # the instrument keeps playing: record, tell the UI, go on
            error = TickError(self.ring.tick_count, f"{type(exc).__name__}: {exc}", traceback.format_exc(), time.time())
            self.errors.append(error)
            for callback in list(self._error_listeners):
                _call_quietly(callback, error)
            return []

    def _preview_playable(self, preview: Completion | None) -> bool:
        """A step write's preview (``Ring.preview``) is played when it is finite, its slot was not born
        under an older submission than what the listener hears (that would sound like a step back),
        and the tick before sent no patch with a new state version (a sweep, a write before every
        tick: each completion carries a new value anyway, previews would double the patches for a
        one-tick gain). A patch of an unchanged completion at the tick before (a write that landed
        while it ran) does not hold the preview back."""
        return (preview is not None and preview.finished_tick - self._fresh_patch_tick >= 2
                and preview.request.version >= self.player.patched_versions.get("submission", 0)
                and bool(torch.isfinite(preview.latent).all()))

    def _publish_preview(self, preview: Completion) -> None:
        """Decode and send the preview now (patch id -2: never acked, the lead learns from completions
        only); the next completion is patched whatever the budget."""
        patch = self._render(preview, self._versions(preview), patch_id=PREVIEW_PATCH_ID)
        self.player.expect_full()
        self.previews += 1
        self._publish(patch, None)

    def _versions(self, completion: Completion) -> dict[str, int]:
        """The control versions a patch of ``completion`` is heard under (the page reports when each is heard)."""
        return {"state": completion.state_versions[-1], "submission": completion.request.version,
                "submission_full": self.full_version, "decode": self.controls.decode_version}

    def _render(self, completion: Completion, versions: dict[str, int], patch_id: int | None = None) -> Patch:
        window = self.player.plan()
        started = time.perf_counter()
        audio = decode_window(self.model.codec, completion.latent, window.a, window.b, loop=True)
        pcm = (audio.float() * self.controls.gain).cpu().numpy().astype(np.float32, copy=False)
        decode_s = time.perf_counter() - started
        self.decode_ms.append(decode_s * 1e3)
        if versions["state"] > self.player.patched_versions.get("state", -1):
            self._fresh_patch_tick = self.ring.tick_count - 1
        return self.player.make_patch(window, pcm, versions, self.completions if patch_id is None else patch_id, decode_s)

    def _publish(self, patch: Patch | None, completion: Completion | None) -> None:
        """Every completion to the completion consumers; a patch (when one was made) to the
        listeners (the audio widget) and the patch consumers. A preview has a patch only."""
        if patch is not None:
            self.first_patch_at = self.first_patch_at or time.time()
            self._first_patch.set()
            for callback in list(self._listeners):
                _call_quietly(callback, patch)
        with self._consumers_lock:
            consumers = list(self._consumers)
        for loop, queue, kind in consumers:
            item = completion if kind == "completion" else patch
            if item is None:
                continue
            try:
                loop.call_soon_threadsafe(_put_latest, queue, item)
            except RuntimeError:  # the consumer's loop is closed
                self._remove_consumer(queue)

    def wait_patch(self, timeout: float = 30.0) -> bool:
        """Block until the first patch has been published (True) or ``timeout`` s passed (False)."""
        deadline = time.monotonic() + timeout
        while not self._first_patch.wait(min(0.1, max(0.0, deadline - time.monotonic()))):
            if time.monotonic() >= deadline or not self.alive:  # a runner that died sends nothing
                break
        return self._first_patch.is_set()

    def wait_completion(self, timeout: float = 30.0) -> Completion:
        """Block until the next completion (for plain cells: an ``await`` in a cell holds
        back widget messages in ipykernel 7, a blocking wait does not)."""
        with self._completed:
            previous = self.last_completion
            if not self._completed.wait_for(lambda: self.last_completion is not previous, timeout):
                raise TimeoutError(f"no completion within {timeout} s (is the runner started and not paused?)")
            return self.last_completion

    # -- asyncio facade -------------------------------------------------------------------------
    async def completion(self) -> Completion:
        """The next completion (awaits on the caller's event loop; the ring keeps ticking)."""
        queue = self._add_consumer("completion", 1)
        try:
            return await queue.get()
        finally:
            self._remove_consumer(queue)

    async def patches(self, maxsize: int = 16) -> AsyncIterator[Patch]:
        """Every patch from now on (a slow consumer skips the oldest)."""
        queue = self._add_consumer("patch", maxsize)
        try:
            while True:
                yield await queue.get()
        finally:
            self._remove_consumer(queue)

    def _add_consumer(self, kind: str, maxsize: int) -> asyncio.Queue:
        queue: asyncio.Queue = asyncio.Queue(maxsize)
        with self._consumers_lock:
            self._consumers.append((asyncio.get_running_loop(), queue, kind))
        return queue

    def _remove_consumer(self, queue: asyncio.Queue) -> None:
        with self._consumers_lock:
            self._consumers = [c for c in self._consumers if c[1] is not queue]

    # -- metrics ---------------------------------------------------------------------------------
    def metrics(self) -> dict:
        """tick and decode ms (p50), completions per second (last 5 s), lead ms, errors, warning."""
        now = time.monotonic()
        recent = [t for t in self.completion_times if now - t <= 5.0]
        span = min(5.0, now - recent[0]) if len(recent) > 1 else 0.0
        result = {
            "tick_ms": _median(self.tick_ms), "decode_ms": _median(self.decode_ms),
            "completions_per_s": (len(recent) - 1) / span if span > 0 else 0.0,
            "lead_ms": self.player.lead.seconds * 1e3, "completions": self.completions,
            "errors": len(self.errors), "depth": self.ring.depth, "steps": self.controls.get("steps"),
            "backend": getattr(self.model.denoiser, "backend", "eager"), "lora": self.lora.active,
            "lora_in_flight": sorted(self.ring.adapters_in_use()), "lora_swap_ms": self.lora.swap_ms,
            "previews": self.previews,
        }
        result["warning"] = realtime_warning(result["tick_ms"], result["decode_ms"], result["steps"], len(self.tick_ms))
        return result


# A step-class change is heard after about one tick plus one decode; past this it stops feeling live.
REALTIME_BUDGET_MS = 250.0


def realtime_warning(tick_ms: float, decode_ms: float, steps: int, samples: int) -> str | None:
    """A message when this hardware cannot play the model in real time, else None."""
    if samples < 8:
        return None
    if tick_ms + decode_ms > REALTIME_BUDGET_MS:
        return (f"This machine is too slow for live play with this model: a tick takes {tick_ms:.0f} ms and a decode "
                f"{decode_ms:.0f} ms (budget {REALTIME_BUDGET_MS:.0f} ms), so every change takes about "
                f"{(tick_ms * steps + decode_ms) / 1e3:.1f} s to settle. Lower the depth or the loop length, or use a GPU.")
    return None


def _median(values) -> float:
    return float(np.median(list(values))) if values else 0.0


def _put_latest(queue: asyncio.Queue, item) -> None:
    if queue.full():
        queue.get_nowait()
    queue.put_nowait(item)


def _call_quietly(callback, *args) -> None:
    try:
        callback(*args)
    except Exception:
        traceback.print_exc()
