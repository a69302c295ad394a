"""The instrument: runner + audio out + controls + curves + views + source picker, in one widget.

    inst = demon_nb.instrument()          # displays it and starts playing
    inst.set("velocity_scale", 1.2)       # same path as the widgets (thread-safe)
    latent = inst.wait_completion().latent
    inst.close()                          # stops both threads, closes the widgets

Patches go from the runner (tick thread) to ``AudioOut.send_patch`` from the start
(a front end already listening plays them even while queued cells hold back its
ready message); the first ready resends the whole loop rendered so far from the
player's mirror (``AudioOut.attach`` does the same after a reload). Views refresh on their own
thread at about 10 Hz, never on the tick thread.
"""

from __future__ import annotations

import atexit
import html
import threading
import weakref
from pathlib import Path
from typing import Any

import ipywidgets as W
import torch

from ..engine.checks import check_choice, check_int
from ..engine.control_table import CONTROLS
from ..models import Model, load
from ..models.tone import playable
from .audio_out import DTYPES, LATENCY_HINTS, AudioOut
from .curve_editor import CurveEditors
from .bars import midi_bar, session_bar
from .midi import MidiMap
from .midi_widget import MidiIn
from .panel import ControlsPanel
from . import presets
from .player import DEFAULT_WINDOW_S
from .recorder import Recorder
from .runner import Runner, TickError
from .source_picker import SourcePicker
from .take import Take
from .views import CpuMeter, LatencyTracker, LatentView, MetricsView, Refresher, RingView

VERSION_KEYS = {"step": "state", "submission": "submission", "decode": "decode"}  # control class -> patch version key


def _close_tree(widget: Any, seen: set[int] | None = None) -> None:
    """Close a widget and every widget reachable through its traits (children, marks, scales, ...)."""
    seen = set() if seen is None else seen
    if not isinstance(widget, W.Widget) or id(widget) in seen:
        return
    seen.add(id(widget))
    for name in widget.trait_names():
        value = getattr(widget, name, None)
        values = value if isinstance(value, (list, tuple)) else value.values() if isinstance(value, dict) else [value]
        for v in values:
            _close_tree(v, seen)
    widget.close()


def _stop_at_exit(ref) -> None:
    inst = ref()
    if inst is not None and not inst.closed:
        inst.stop()


HEAVY_VIEWS_EVERY = 3  # latent heatmap + metrics at a third of the refresh rate
FIRST_PATCH_WAIT_S = 3.0  # the most the constructor waits for the first patch before building the rest


class Instrument:
    """Assembles the instrument around ``model`` (a loaded :class:`Model`).

    ``window_s``: audio decoded per completion, ahead of the playhead; ``transport``: PCM sent to
    the browser as ``"int16"`` (half the bytes of ``"float32"``: at ~25 patches a second the
    websocket and the page share the kernel's two cores); ``transport_encoding``: ``"auto"``
    (binary buffers, or base64 text where the front end drops buffers, as Colab's does),
    ``"binary"`` or ``"base64"``; ``latency_hint``: the page's AudioContext, ``"lowest"`` (the
    smallest output buffer the browser offers) or ``"interactive"`` / ``"balanced"`` /
    ``"playback"`` where a machine crackles with it.
    """

    def __init__(self, model: Model, *, depth: int = 4, steps: int | None = None, prompt: str | None = None,
                 seed: int = 0, window_s: float = DEFAULT_WINDOW_S, max_ticks_per_s: float | None = 50.0,
                 refresh_hz: float = 10.0, microphone: bool = True, note: str = "", autostart: bool = True,
                 transport: str = "int16", transport_encoding: str = "auto", latency_hint: str = "lowest"):
        if transport not in DTYPES:
            raise ValueError(f"transport: expected one of {DTYPES}, got {transport!r}")
        check_choice("latency_hint", latency_hint, LATENCY_HINTS)
        self.model = playable(model)
        self.note = note
        prompt = model.defaults.get("prompt", "") if prompt is None else prompt
        self.runner = Runner(self.model, depth=depth, steps=steps, prompt=prompt, seed=seed, window_s=window_s,
                             max_ticks_per_s=max_ticks_per_s)
        codec = self.model.codec
        self.latency = LatencyTracker()
        self.patches_sent = 0
        self.resends = 0
        self.closed = False
        self._ready = False
        self._send_lock = threading.Lock()
        self._take: Take | None = None
        self.audio: AudioOut | None = None
        self.runner.on_patch(self._on_patch)
        if autostart:
            # Sound first: the loop is rendered before the audio widget exists, so the page's
            # audio starts with the whole loop waiting for it (patches that reach the page before
            # its audio widget has started are lost; the next ones are buffered until it plays).
            self.runner.start()
            self.runner.wait_patch(timeout=FIRST_PATCH_WAIT_S)
        self.audio = AudioOut(sample_rate=codec.sample_rate, channels=codec.audio_channels,
                              loop_samples=self.runner.player.loop_samples, dtype=transport,
                              transport_encoding=transport_encoding, latency_hint=latency_hint)
        self.audio.attach(self.runner.player)
        if self.runner.first_patch_at is not None:
            self._send_loop()
        self.panel = ControlsPanel(self.runner, self.set)
        self.curves = CurveEditors(self.model.frames, self.set)
        self.sources = SourcePicker(self.model, self.set, microphone=microphone)
        self.ring_view, self.metrics_view = RingView(), MetricsView()
        self.latent_view = LatentView(audio=self.audio._uid, hop=codec.hop)   # its playhead moves in the page
        self.cpu = CpuMeter()
        self.status = W.HTML(self._status_html())
        self.status.add_class("demon-status")
        self._last_error: TickError | None = None
        self.midi = MidiMap(self.set, self.get, actions={"new_seed": self._new_seed, "pause": self._toggle_pause,
                                                         "record": self._toggle_record}, wake=self.runner.wake)
        self.midi_in = MidiIn(self.midi)
        self.runner.before_tick(self.midi.flush)
        self.audio.on_ready(self._on_ready)
        self.audio.on_status(self._on_status)
        self.runner.on_error(self._on_error)
        Refresher(self.refresh, refresh_hz)  # validates refresh_hz now
        self._refresh_hz = refresh_hz
        self._refreshes = 0
        self._refresher: Refresher | None = None
        self.widget = self._layout()
        atexit.register(_stop_at_exit, weakref.ref(self))  # no torch call in flight at interpreter exit
        if autostart:
            self.start()

    def _layout(self) -> W.Widget:
        title = W.HTML(f"<b>DEMON</b> · model <code>{html.escape(self.model.name)}</code> · "
                       f"loop {self.model.loop_seconds:.2f} s ({self.model.frames} frames)")
        views = W.VBox([W.HTML("<b>ring</b>"), self.ring_view, W.HTML("<b>newest completion</b>"), self.latent_view])
        body = W.HBox([self.panel.widget, W.VBox([self.curves.widget, views], layout=W.Layout(flex="1 1 auto"))])
        box = W.VBox([title, self.status, self.audio, self.metrics_view.widget, body, session_bar(self),
                      midi_bar(self), self.sources.widget])
        box.add_class("demon-instrument")
        return box

    def _new_seed(self) -> None:
        self.set("seed", (int(self.get("seed")) + 7919) % 2**31)

    def _toggle_pause(self) -> None:
        self.resume() if self.runner.paused else self.pause()

    def _toggle_record(self) -> None:
        if self._take is not None and self._take.recording:
            self.stop_recording()
        else:
            self.record(Path(self.session_widgets["path"].value).with_suffix("").as_posix() + "-take.wav")

    # -- lifecycle --------------------------------------------------------------------------
    def start(self) -> "Instrument":
        if self.closed:
            raise ValueError("instrument: closed; build a new one with demon_nb.instrument()")
        self.runner.start()
        if self._refresher is None or not self._refresher.alive:
            self._refresher = Refresher(self.refresh, self._refresh_hz, headroom=self.cpu.read).start()
        return self

    def stop(self) -> None:
        """Stop the tick and view threads (the widgets stay; ``start()`` plays again)."""
        if self._refresher is not None:
            self._refresher.stop()
        self.runner.stop()

    def pause(self) -> None:
        self.runner.pause()

    def resume(self) -> None:
        self.runner.resume()

    def close(self) -> None:
        """Stop the tick and view threads and close every widget (idempotent)."""
        if self.closed:
            return
        self.closed = True
        self.stop()
        _close_tree(self.widget)

    def show(self) -> None:
        """Display the instrument (again)."""
        from IPython.display import display

        display(self.widget)

    def __repr__(self) -> str:
        state = "closed" if self.closed else "paused" if self.runner.paused else "playing"
        return f"<Instrument model={self.model.name!r} {state}, {self.runner.completions} completions>"

    # -- controls and the asyncio facade -------------------------------------------------------
    def set(self, name: str, value: Any) -> int:
        """``runner.set`` plus the write time of the new version (for control-to-ear latency)."""
        version = self.runner.set(name, value)
        take = self._take
        if take is not None:
            take.on_write(name, value)
        key = VERSION_KEYS.get(CONTROLS[name].klass)
        if key is not None:
            self.latency.wrote(key, version)
        if getattr(self, "panel", None) is not None:
            self.panel.reflect(name, value)
        return version

    def get(self, name: str) -> Any:
        return self.runner.controls.get(name)

    async def completion(self):
        return await self.runner.completion()

    def wait_completion(self, timeout: float = 30.0):
        """Block until the next completion (use this in notebook cells rather than ``await``)."""
        return self.runner.wait_completion(timeout)

    def patches(self, maxsize: int = 16):
        return self.runner.patches(maxsize)

    # -- presets, recording and export -----------------------------------------------------------
    def save(self, path) -> Path:
        """Save every control (curves, prompts, source and x0 target by content hash) and the MIDI
        map to ``path`` (.json)."""
        return presets.save(path, self.get, self.model.name, extra={"midi": self.midi.to_json()})

    def load(self, path) -> presets.LoadReport:
        """Apply a preset through the same validated path as the widgets; what it skips (and why)
        is in the report and in the panel's message line. Nothing already set is lost."""
        report = presets.load(path, self.set)
        for name in [n for n in self.panel.errors if n.startswith("preset:")]:
            self.panel.show_message(name, None)  # the previous load's skips
        if "midi" in report.extra:
            report.skipped.update(self.midi.load_json(report.extra["midi"]))
        for name, reason in report.skipped.items():
            self.panel.show_message(f"preset:{name}", f"preset skipped {name}: {reason}")
        return report

    def record(self, path, seconds: float | None = None) -> Path:
        """Record what the listener hears to ``path`` (.wav or .flac), with the completion latents
        and the control history beside it (see ``demon_nb.live.take``); ``seconds``: stop by
        itself after that much audio. ``stop_recording()`` finishes it."""
        if self._take is not None and self._take.recording:
            raise ValueError(f"record: already recording to {str(self._take.path)!r}; call stop_recording() first")
        self._take = Take(path, self.runner.player.mirror, self.model.codec.sample_rate, self.get, self.model.name,
                          seconds)
        return self._take.path

    def stop_recording(self) -> dict:
        """Finish the take; returns its files (``audio``, ``latents``, ``controls``)."""
        if self._take is None:
            raise ValueError("stop_recording: nothing is being recorded (call record(path) first)")
        return self._take.stop()

    def export_loop(self, path) -> Path:
        """Write the loop as the listener hears it now (the player's mirror) to ``path`` (.wav or .flac)."""
        mirror = self.runner.player.mirror
        target = presets.check_target(path, (".wav", ".flac"))
        with Recorder(target, self.model.codec.sample_rate, mirror.channels) as recorder:
            recorder.write(mirror.read(0, mirror.loop_samples))
        return target

    def load_lora(self, path) -> str:
        """Load a LoRA adapter for the model's DiT (safetensors; a bad file raises here and the
        music keeps playing). A submission change: slots born from the next tick on take it, the
        slots in flight finish on the adapter they began with. ``lora_strength`` scales it live."""
        return self.runner.load_lora(path)

    def unload_lora(self) -> None:
        self.runner.unload_lora()

    def _on_status(self, status: dict) -> None:
        take = self._take
        if take is not None:
            take.on_status(status)

    # -- audio path ---------------------------------------------------------------------------
    def _on_patch(self, patch) -> None:
        """Every patch goes out at once, also before the first ready: with Run All, the ready
        message waits behind the queued cells, but the front end plays whatever arrives after it
        has started (before the first report the player rotates its windows through the loop)."""
        take = self._take
        if take is not None and self.runner.last_completion is not None:
            take.on_completion(self.runner.last_completion.latent)
        with self._send_lock:
            if not self.closed and self.audio is not None:
                self.audio.send_patch(patch)
                self.patches_sent += 1

    def _on_ready(self, _sample_rate: int) -> None:
        """First ready: send the whole loop rendered so far (what was sent before may have
        been missed), then stream patches. After a page reload (a later ready)
        ``AudioOut.attach`` resends the loop from the player's mirror."""
        with self._send_lock:
            self._ready = True
            if getattr(self.audio, "ready_events", 1) > 1:
                return
        self._send_loop()

    def _send_loop(self) -> None:
        """Send the whole loop rendered so far, from the player's mirror (0.5 s chunks)."""
        with self._send_lock:
            self.resends += 1
            chunk = max(1, self.audio.sample_rate // 2)
            for patch in self.runner.player.mirror.patches(chunk):
                self.audio.send_patch(patch)
                self.patches_sent += 1

    def _on_error(self, error: TickError) -> None:
        self._last_error = error  # shown by the view thread; the tick thread does no widget work

    # -- views (view thread) ----------------------------------------------------------------------
    def _status_html(self) -> str:
        parts = []
        if self.note:
            parts.append(f'<span class="demon-note" style="color:#a15c00">ℹ {html.escape(self.note)}</span>')
        error = getattr(self, "_last_error", None)
        if error is not None:
            parts.append(f'<span class="demon-error" style="color:#b03a2e">⚠ tick {error.tick}: '
                         f'{html.escape(error.message)} (the music keeps playing)</span>')
        return "<br>".join(parts)

    def refresh(self) -> None:
        """Copy the live state into the views (the view thread; its rate adapts to the CPU
        headroom, see ``Refresher``). The ring moves at every call; the curves' playhead, the
        latent heatmap and the metrics, which cost the page a redraw, at every
        ``HEAVY_VIEWS_EVERY``-th call. The heatmap's playhead moves in the page."""
        runner = self.runner
        self.ring_view.update(runner.ring.slots_view(), runner.ring.tick_count, runner.completions)
        self._refreshes += 1
        if self._refreshes % HEAVY_VIEWS_EVERY != 1:
            return
        self.curves.set_playhead(runner.player.playhead() / self.model.codec.hop)
        completion = runner.last_completion
        if completion is not None:
            self.latent_view.show(completion.latent, runner.completions)
        self.metrics_view.update(self.metrics())
        status = self._status_html()
        if status != self.status.value:
            self.status.value = status

    def metrics(self) -> dict:
        """The runner's metrics plus what the listener experiences: ``audio`` (playing, loading,
        waiting for the browser), ``control_to_ear_s`` (per version key, from the write to the
        first sample heard; time before the audio reached the page is not counted) and
        ``cpu_headroom`` (the machine's idle CPU share, None before the first reading),
        ``output_latency_ms`` (the page's AudioContext: base + output latency, part of control→ear)."""
        metrics = self.runner.metrics()
        audio = self.audio
        metrics["control_to_ear_s"] = self.latency.heard(audio.heard_versions, audio.heard_at, since=audio.sounding_since)
        if not audio.ready:
            state = "waiting for the browser"
        elif not audio.playing or self.runner.paused:
            state = "paused"
        elif audio.fill < 0.999:
            state = f"loading {audio.fill:.0%}"
        else:
            state = "playing"
        metrics["audio"] = state
        metrics["cpu_headroom"] = self.cpu.headroom
        metrics["output_latency_ms"] = audio.output_latency_ms or None  # the browser's own part of the ear path
        metrics["patches_sent"], metrics["patches_skipped"] = self.patches_sent, self.runner.player.skipped_patches
        return metrics


def make_instrument(model: str | Model = "mini", *, checkpoints=None, display: bool = True,
                    threads: int | None = 1, **kwargs) -> Instrument:
    """Load ``model`` (falls back to "analytic", with a visible note, when "mini" cannot load),
    build the :class:`Instrument`, display it and start playing. ``checkpoints=DIR`` alone plays
    ACE-Step 1.5 from that folder. ``threads``: torch CPU threads of this kernel (default 1: the
    browser playing the music needs a core too; ``None`` leaves torch's setting alone)."""
    if threads is not None:
        torch.set_num_threads(check_int("threads", threads, 1))
    note = ""
    if checkpoints is not None:
        loaded = load("acestep" if model == "mini" else model, checkpoints=checkpoints)
        model = loaded
    if isinstance(model, str):
        try:
            loaded = load(model)
        except Exception as exc:  # noqa: BLE001 - any failure of the built-in model: fall back, say why
            if model != "mini":
                raise
            note = (f"the built-in model 'mini' is not available ({type(exc).__name__}: {exc}); "
                    "playing the analytic test model instead")
            print(f"demon_nb: {note}")
            loaded = load("analytic")
    else:
        loaded = model
    inst = Instrument(loaded, note=note, **kwargs)
    if display:
        inst.show()
    return inst
