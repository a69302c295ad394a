"""The controls panel (ipywidgets): one widget per control, tagged with its propagation class.

Every widget's observer does one thing: ``write(name, value)`` (``runner.set`` or the
instrument's version-recording wrapper, both thread-safe), so it is safe on the
subshell threads ipykernel 7 may deliver widget messages on. A rejected value
(ValueError naming the control) shows in the panel's message line; the ring is
not touched and the music keeps playing.
"""

from __future__ import annotations

import html
import threading
from typing import Any, Callable

import ipywidgets as W
import torch

from ..engine.request import CFG_MODES
from ..engine.ring import MAX_DEPTH
from .controls import CONTROLS

Write = Callable[[str, Any], int]

CLASS_COLORS = {"step": "#1b7f4b", "submission": "#1f5fa8", "rebuild": "#b03a2e",
                "structure": "#a15c00", "decode": "#666666"}


def _wide() -> dict:
    """Layout keywords (a fresh Layout per widget: closing one must not close the others')."""
    return dict(layout=W.Layout(width="340px"), style={"description_width": "120px"})


def _slider() -> dict:
    return dict(continuous_update=True, readout_format=".2f", **_wide())


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
        get = runner.controls.get
        f = lambda name, lo, hi, step, default: W.FloatSlider(  # noqa: E731
            value=min(hi, max(lo, _scalar(get(name), default))), min=lo, max=hi, step=step,
            description=CONTROLS[name].label, **_slider())
        self._add("prompt_a", W.Text(value=get("prompt_a"), description="prompt A", continuous_update=False, **_wide()))
        self._add("prompt_b", W.Text(value=get("prompt_b"), description="prompt B", continuous_update=False, **_wide()))
        self._add("prompt_blend", f("prompt_blend", 0.0, 1.0, 0.01, 0.0))
        self._add("denoise", f("denoise", 0.0, 1.0, 0.01, 1.0))
        self._add("source_blend", f("source_blend", 0.0, 1.0, 0.01, 1.0))
        self._add("velocity_scale", f("velocity_scale", 0.0, 2.0, 0.01, 1.0))
        self._add("guidance_scale", f("guidance_scale", 0.0, 10.0, 0.05, 1.0))
        self._add("cfg_mode", W.Dropdown(options=list(CFG_MODES), value=get("cfg_mode"), description="CFG mode", **_wide()))
        self._add("seed", W.Text(value=str(get("seed")), description="seed", continuous_update=False, **_wide()),
                  convert=lambda v: parse_int("seed", v))
        self._add("vary_seed", W.Checkbox(value=bool(get("vary_seed")), description="new seed per completion", indent=False))
        self._add("steps", W.IntSlider(value=get("steps"), min=1, max=32, description="steps", continuous_update=False, **_wide()))
        self._add("depth", W.IntSlider(value=get("depth"), min=1, max=MAX_DEPTH, description="depth", continuous_update=False, **_wide()))
        shift = get("shift") if get("shift") is not None else runner.ring.shift
        # a grid that holds 3.0 exactly: a slider that rounds its initial value would echo a write
        self._add("shift", W.FloatSlider(value=shift, min=0.5, max=10.0, step=0.25, description="shift", **_slider()))
        self._add("solver", W.ToggleButtons(options=["ode", "sde"], value=get("solver"), description="solver",
                                            style={"description_width": "130px", "button_width": "60px"}))
        self._add("gain", f("gain", 0.0, 2.0, 0.01, 1.0))
        rows = [W.HBox([w, W.HTML(class_tag(CONTROLS[n].klass))], layout=W.Layout(align_items="center"))
                for n, w in self.widgets.items()]
        title = W.HTML("<b>controls</b> <small>(tag = propagation class: when a change is heard)</small>")
        self.widget = W.VBox([title, *rows, self.message], layout=W.Layout(width="450px", flex="0 0 auto"))
        self.widget.add_class("demon-controls")

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
            shown = min(widget.max, max(widget.min, float(value)))
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
            self._show(name, str(exc))
            return False
        self._show(name, None)
        return True

    def _show(self, name: str, error: str | None) -> None:
        with self._lock:
            if error is None:
                if self.errors.pop(name, None) is None:
                    return
            else:
                self.errors[name] = error
            text = "<br>".join(f"⚠ {html.escape(e)}" for e in self.errors.values())
        self.message.value = f'<span class="demon-error" style="color:#b03a2e">{text}</span>' if text else ""
