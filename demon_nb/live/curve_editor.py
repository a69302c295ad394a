"""Hand-drawn per-frame curves (bqplot ``Lines`` + ``HandDraw``), one editor per curve.

A stroke ends (mouse-up) with one ``y`` update, possibly shaped ``(1, N)``; the
editor flattens it, clips it to the control's range and writes it through
``write(name, curve)`` (thread-safe). Presets (flat, ramp, sine, pulse) and reset
write the same way. A vertical line shows the playhead (``set_playhead``, called
by the instrument's view timer at <= 10 Hz).
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass
from typing import Any, Callable

import bqplot as bq
import ipywidgets as W
import numpy as np

from ..engine.control_table import CONTROLS

Write = Callable[[str, Any], int]
PRESETS = ("flat", "ramp", "sine", "pulse")


@dataclass(frozen=True)
class CurveSpec:
    name: str
    lo: float      # allowed and drawn range
    hi: float
    default: float


DRAWN = ("source_blend", "velocity_scale", "guidance_scale", "x0_target_strength", "init_noise", "prompt_blend",
         "prompt_c_weight", "prompt_d_weight", "mask")


def _curve_spec(name: str) -> CurveSpec:
    """A drawn curve's range (the table's slider range) and default, from the control table."""
    row = CONTROLS[name]
    lo, hi, _ = row.ui or (row.lo, row.hi, 0.0)
    return CurveSpec(name, lo, hi, hi if row.default is None else row.default)


CURVES = tuple(_curve_spec(name) for name in DRAWN)


# -- presets: pure functions of (frames, lo, hi) ---------------------------------------
def flat(frames: int, lo: float, hi: float, value: float | None = None) -> np.ndarray:
    """``y = value`` (default: the middle of the range)."""
    return np.full(frames, (lo + hi) / 2 if value is None else value, dtype=np.float64)


def ramp(frames: int, lo: float, hi: float) -> np.ndarray:
    """``y = lo + (hi - lo) * i / (T - 1)``."""
    return np.linspace(lo, hi, frames)


def sine(frames: int, lo: float, hi: float, cycles: float = 2.0) -> np.ndarray:
    """``y = lo + (hi - lo) * (1 - cos(2 pi cycles i / T)) / 2``: starts and ends at ``lo``."""
    i = np.arange(frames)
    return lo + (hi - lo) * 0.5 * (1.0 - np.cos(2.0 * math.pi * cycles * i / frames))


def pulse(frames: int, lo: float, hi: float, pulses: int = 4, duty: float = 0.5) -> np.ndarray:
    """``pulses`` rectangular pulses per loop: ``hi`` for the first ``duty`` of each period, else ``lo``."""
    phase = (np.arange(frames) * pulses / frames) % 1.0
    return np.where(phase < duty, hi, lo).astype(np.float64)


def preset(kind: str, frames: int, lo: float, hi: float) -> np.ndarray:
    if kind == "flat":
        return flat(frames, lo, hi)
    if kind == "ramp":
        return ramp(frames, lo, hi)
    if kind == "sine":
        return sine(frames, lo, hi)
    if kind == "pulse":
        return pulse(frames, lo, hi)
    raise ValueError(f"preset: expected one of {list(PRESETS)}, got {kind!r}")


def stroke_curve(name: str, y: Any, frames: int, lo: float, hi: float) -> np.ndarray:
    """A HandDraw ``y`` (shape ``(N,)`` or ``(1, N)``) -> finite curve of length ``frames`` in ``[lo, hi]``."""
    arr = np.asarray(y, dtype=np.float64)
    if arr.ndim == 2 and 1 in arr.shape:
        arr = arr.reshape(-1)
    if arr.ndim != 1 or arr.shape[0] != frames:
        raise ValueError(f"{name}: a stroke must give {frames} values (one per frame), got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name}: a stroke must give finite values")
    return np.clip(arr, lo, hi)


class CurveEditor:
    """One curve: figure with the line, HandDraw, playhead line, preset buttons and reset."""

    def __init__(self, spec: CurveSpec, frames: int, write: Write, height: str = "150px"):
        self.spec, self.frames, self.write = spec, frames, write
        self.strokes = 0
        x = np.arange(frames, dtype=np.float64)
        sx = bq.LinearScale(min=0.0, max=float(frames - 1), allow_padding=False)
        sy = bq.LinearScale(min=spec.lo, max=spec.hi, allow_padding=False)
        self.line = bq.Lines(x=x, y=np.full(frames, spec.default), scales={"x": sx, "y": sy},
                             colors=["#1f5fa8"], stroke_width=2)
        self.playhead = bq.Lines(x=[0.0, 0.0], y=[spec.lo, spec.hi], scales={"x": sx, "y": sy},
                                 colors=["#d62728"], stroke_width=1)
        self.draw = bq.interacts.HandDraw(lines=self.line)
        ax_x = bq.Axis(scale=sx, label="frame", num_ticks=5)
        ax_y = bq.Axis(scale=sy, orientation="vertical", num_ticks=3)
        label = CONTROLS[spec.name].title
        self.figure = bq.Figure(marks=[self.line, self.playhead], axes=[ax_x, ax_y], interaction=self.draw,
                                title=label, fig_margin={"top": 30, "bottom": 30, "left": 45, "right": 10},
                                layout=W.Layout(height=height, width="100%"))
        self.figure.add_class(f"demon-curve-{spec.name}")
        self.message = W.HTML("")
        buttons = []
        for kind in (*PRESETS, "reset"):
            b = W.Button(description=kind, layout=W.Layout(width="60px"))
            b.add_class(f"demon-curve-{kind}")
            b.on_click(lambda _b, kind=kind: self.reset() if kind == "reset" else self.apply_preset(kind))
            buttons.append(b)
        self._playhead_frame = -1
        self.line.observe(self._on_y, names="y")
        self.widget = W.VBox([self.figure, W.HBox(buttons), self.message], layout=W.Layout(width="100%"))

    def _on_y(self, change) -> None:
        """Every change of the line's y (a stroke, a preset) is written through ``write``."""
        try:
            curve = stroke_curve(self.spec.name, change["new"], self.frames, self.spec.lo, self.spec.hi)
            self.write(self.spec.name, curve)
        except ValueError as exc:
            self.message.value = f'<span class="demon-error" style="color:#b03a2e">⚠ {html.escape(str(exc))}</span>'
            return
        self.strokes += 1
        if self.message.value:
            self.message.value = ""

    def apply_preset(self, kind: str) -> None:
        self.line.y = preset(kind, self.frames, self.spec.lo, self.spec.hi)

    def reset(self) -> None:
        self.line.y = flat(self.frames, self.spec.lo, self.spec.hi, self.spec.default)

    @property
    def values(self) -> np.ndarray:
        return np.asarray(self.line.y, dtype=np.float64).reshape(-1)

    def set_playhead(self, frame: float) -> None:
        """Move the vertical playhead line (skipped when the frame did not change)."""
        frame = float(frame)
        if int(frame) != self._playhead_frame:
            self._playhead_frame = int(frame)
            self.playhead.x = [frame, frame]


class CurveEditors:
    """All per-frame curves; a dropdown picks the one shown (a hidden bqplot figure has no size)."""

    def __init__(self, frames: int, write: Write, specs: tuple[CurveSpec, ...] = CURVES):
        self.editors = {s.name: CurveEditor(s, frames, write) for s in specs}
        labels = [(CONTROLS[n].title, n) for n in self.editors]
        self.selector = W.Dropdown(options=labels, value=specs[0].name, description="curve",
                                   layout=W.Layout(width="320px"))
        self.selector.add_class("demon-curve-selector")
        self.shown = W.Box([self.editors[specs[0].name].widget], layout=W.Layout(width="100%"))
        self.selector.observe(lambda change: self.show(change["new"]), names="value")
        self.widget = W.VBox([self.selector, self.shown])
        self.widget.add_class("demon-curves")

    def __getitem__(self, name: str) -> CurveEditor:
        return self.editors[name]

    def show(self, name: str) -> None:
        self.shown.children = [self.editors[name].widget]

    def set_playhead(self, frame: float) -> None:
        """Only the shown curve's playhead moves (the others catch up when shown)."""
        self.editors[self.selector.value].set_playhead(frame)
