"""The controls panel (ipywidgets): one widget per control, built from the control table,
tagged with its propagation class and with what it needs to be heard.

A basic section shows the everyday controls; collapsible sections hold guidance,
source and noise, and DCW. Every widget's observer does one thing: ``write(name,
value)`` (``runner.set`` or the instrument's version-recording wrapper, both
thread-safe), so it is safe on the subshell threads ipykernel 7 may deliver widget
messages on. A rejected value (ValueError naming the control) shows in the panel's
message line; the ring is not touched and the music keeps playing.
"""

from __future__ import annotations

import html
import threading
from typing import Any, Callable

import ipywidgets as W
import torch

from ..engine.control_table import CONTROLS, NEEDS, Spec

Write = Callable[[str, Any], int]

CLASS_COLORS = {"step": "#1b7f4b", "submission": "#1f5fa8", "rebuild": "#b03a2e",
                "structure": "#a15c00", "decode": "#666666"}

BASIC = ("prompt_a", "prompt_b", "prompt_blend", "denoise", "source_blend", "velocity_scale", "guidance_scale",
         "cfg_mode", "seed", "vary_seed", "steps", "depth", "shift", "solver", "gain")
SECTIONS = (
    ("more prompts", ("prompt_c", "prompt_c_weight", "prompt_d", "prompt_d_weight")),
    ("guidance", ("negative_prompt", "guidance_kind", "cfg_interval_start", "cfg_interval_end", "apg_momentum",
                  "apg_norm_threshold", "cfg_rescale")),
    ("source and noise", ("mask", "feedback", "init_noise", "ode_noise", "x0_target_strength", "x0_target_gate")),
    ("DCW (wavelet correction)", ("dcw_mode", "dcw_scaler", "dcw_high_scaler")),
    ("LoRA", ("lora_strength",)),
    ("latency", ("first_look",)),
)


def _wide() -> dict:
    """Layout keywords (a fresh Layout per widget: closing one must not close the others')."""
    return dict(layout=W.Layout(width="340px"), style={"description_width": "120px"})


def _slider() -> dict:
    return dict(continuous_update=True, readout_format=".2f", **_wide())


def needs_note(row: Spec) -> str:
    """A small grey line under the control saying what it needs to be heard ("" when nothing)."""
    if row.needs is None:
        return ""
    return (f'<div class="demon-needs" style="font-size:10px;color:#777;margin:-4px 0 4px 126px;line-height:12px">'
            f'{html.escape(NEEDS[row.needs])}</div>')


def class_tag(klass: str) -> str:
    """A small coloured HTML tag naming a propagation class."""
    color = CLASS_COLORS.get(klass, "#444")
    return (f'<span class="demon-class-tag demon-class-{klass}" title="propagation class: {klass}" '
            f'style="font-size:10px;padding:1px 5px;border-radius:7px;color:white;background:{color}">{klass}</span>')


def parse_int(name: str, text: Any) -> int:
    """Text typed into a box -> int; ValueError naming the control otherwise."""
    if isinstance(text, bool):
        raise ValueError(f"{name}: expected a whole number, got {text!r}")
    if isinstance(text, int):
        return text
    try:
        return int(str(text).strip())
    except ValueError:
        raise ValueError(f"{name}: expected a whole number, got {str(text)!r}") from None


def _scalar(value: Any, default: float) -> float:
    """A control's current value as a slider position (a curve shows as its mean)."""
    if isinstance(value, torch.Tensor):
        return float(value.float().mean())
    return default if value is None else float(value)


class ControlsPanel:
    """``ControlsPanel(runner, write=runner.set)``; ``.widget`` is the box to display."""

    def __init__(self, runner, write: Write | None = None):
        self.runner = runner
        self.write: Write = write or runner.set
        self.message = W.HTML(value="", layout=W.Layout(min_height="20px"))
        self.errors: dict[str, str] = {}
        self._lock = threading.Lock()
        self.widgets: dict[str, W.Widget] = {}
        self._reflecting: set[str] = set()
        self.rows: dict[str, W.HBox] = {}
        self.notes: dict[str, W.HTML] = {}  # what each control needs to be heard (empty when nothing)
        basic = [self._row(name) for name in BASIC]
        children = [W.VBox([self._row(n) for n in names]) for _, names in SECTIONS]
        titles = tuple(title for title, _ in SECTIONS)
        groups = getattr(runner.model, "tone_groups", lambda: {})()
        if groups:
            children.append(self._tone(groups, runner.ring.channels))
            titles += ("tone (channel gains)",)
        sections = W.Accordion(children=children, titles=titles, selected_index=None)
        title = W.HTML("<b>controls</b> <small>(tag = propagation class: when a change is heard)</small>")
        self.widget = W.VBox([title, *basic, sections, self.message], layout=W.Layout(width="450px", flex="0 0 auto"))
        self.widget.add_class("demon-controls")

    def _row(self, name: str) -> W.Widget:
        """The control and its class tag on one line; what it needs, if anything, in grey below."""
        row = CONTROLS[name]
        widget, convert = self._make(row)
        self._add(name, widget, convert)
        self.rows[name] = W.HBox([widget, W.HTML(class_tag(row.klass))], layout=W.Layout(align_items="center"))
        self.notes[name] = W.HTML(needs_note(row))
        return W.VBox([self.rows[name], self.notes[name]]) if row.needs else self.rows[name]

    def _tone(self, groups: dict[str, tuple[int, int]], channels: int) -> W.VBox:
        """One slider per named channel group; together they write ``channel_gain`` (a [C] vector)."""
        self.tone: dict[str, W.FloatSlider] = {}

        def write(_change=None) -> None:
            gain = torch.ones(channels)
            for name, (a, b) in groups.items():
                gain[a:b] = self.tone[name].value
            self.apply("channel_gain", gain)

        for name in groups:
            slider = W.FloatSlider(value=1.0, min=0.0, max=2.0, step=0.01, description=name, **_slider())
            slider.add_class(f"demon-tone-{name.replace(' ', '-')}")
            slider.observe(write, names="value")
            self.tone[name] = slider
        tag = W.HTML(class_tag("step") + ' <span style="font-size:10px;color:#777">gain on the denoiser input</span>')
        return W.VBox([W.HBox([W.VBox(list(self.tone.values())), tag])])

    def _make(self, row: Spec) -> tuple[W.Widget, Callable[[Any], Any]]:
        """The widget for one table row, showing the control's current value."""
        value = self.runner.controls.get(row.name)
        if row.name == "shift" and value is None:
            value = self.runner.ring.shift
        lo, hi, step = row.ui or (row.lo, row.hi, 0.01)
        same = lambda v: v  # noqa: E731
        if row.kind == "text":
            return W.Text(value=value, description=row.title, continuous_update=False, **_wide()), same
        if row.kind == "bool":
            return W.Checkbox(value=bool(value), description=row.title, indent=False), same
        if row.kind == "choice" and row.name == "solver":
            return W.ToggleButtons(options=list(row.choices), value=value, description=row.title,
                                   style={"description_width": "130px", "button_width": "60px"}), same
        if row.kind == "choice":
            return W.Dropdown(options=list(row.choices), value=value, description=row.title, **_wide()), same
        if row.kind == "int" and row.ui is None:  # a wide range (seed): typed
            return (W.Text(value=str(value), description=row.title, continuous_update=False, **_wide()),
                    lambda v: parse_int(row.name, v))
        if row.kind == "int":
            return W.IntSlider(value=value, min=int(lo), max=int(hi), description=row.title,
                               continuous_update=False, **_wide()), same
        shown = min(hi, max(lo, _scalar(value, row.default if row.default is not None else hi)))
        return W.FloatSlider(value=shown, min=lo, max=hi, step=step, description=row.title, **_slider()), same

    def _add(self, name: str, widget: W.Widget, convert: Callable[[Any], Any] = lambda v: v) -> None:
        widget.add_class(f"demon-control-{name}")
        self.widgets[name] = widget
        widget.observe(lambda change: self.apply(name, change["new"], convert), names="value")

    def reflect(self, name: str, value: Any) -> None:
        """Show a value written from code (``inst.set``) on its widget, without writing it again."""
        widget = self.widgets.get(name)
        if widget is None or not isinstance(value, (bool, int, float, str)):
            return  # curves and latents have no single-widget view
        shown = str(value) if isinstance(widget, W.Text) else value
        if isinstance(widget, W.FloatSlider):
            # on the slider's own grid: a value between grid points would come back from the page
            # rounded, as a write that lands after (and undoes) later writes from code or MIDI
            steps = round((min(widget.max, max(widget.min, float(value))) - widget.min) / widget.step)
            shown = min(widget.max, round(widget.min + steps * widget.step, 10))
        self._reflecting.add(name)
        try:
            widget.value = shown
        except Exception:  # a value this widget cannot show (e.g. out of its options): leave it
            pass
        finally:
            self._reflecting.discard(name)

    def apply(self, name: str, value: Any, convert: Callable[[Any], Any] = lambda v: v) -> bool:
        """Write one control; on ValueError show it and return False (nothing else changes)."""
        if name in self._reflecting:
            return True
        try:
            self.write(name, convert(value))
        except ValueError as exc:
            self.show_message(name, str(exc))
            return False
        self.show_message(name, None)
        return True

    def show_message(self, name: str, error: str | None) -> None:
        """Show ``error`` under key ``name`` in the message line (None clears that key); thread-safe."""
        with self._lock:
            if error is None:
                if self.errors.pop(name, None) is None:
                    return
            else:
                self.errors[name] = error
            text = "<br>".join(f"⚠ {html.escape(e)}" for e in self.errors.values())
        self.message.value = f'<span class="demon-error" style="color:#b03a2e">{text}</span>' if text else ""
