"""MIDI controllers: Web MIDI in the browser (``widgets/midi.js``), the mappings in the kernel.

The browser forwards every MIDI message as its raw bytes (``[status, data1, data2]``)
and says which devices it sees, or why it sees none (no Web MIDI in this browser,
permission denied, no device). :class:`MidiMap` turns them into control writes:

- a control change ``CC n`` mapped to a control writes ``lo + (hi - lo) * f(value / 127)``
  (``f``: ``linear``, ``square`` for finer low values, ``sqrt`` for finer high ones;
  integer controls are rounded) through the same validated path as the sliders;
- fast CC streams are coalesced: messages only update a target, and ``flush()``, called
  once per tick on the tick thread, writes each control at most once (the last value wins);
- a jump is slew-limited: one flush moves a control at most ``slew`` of its mapped range
  (fast sweeps do not click);
- a note-on can trigger an action (``new_seed``, ``pause``, ``record``);
- ``learn(control)`` binds the next CC that moves to that control.

Malformed or out-of-range messages raise a ValueError naming what is wrong; the widget
shows it and nothing else changes.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Callable

from ..engine.checks import check_choice, check_float, check_int
from ..engine.control_table import CONTROLS

CURVES = {"linear": lambda x: x, "square": lambda x: x * x, "sqrt": lambda x: x ** 0.5}
NOTE_ACTIONS = ("new_seed", "pause", "record")
MAPPABLE_KINDS = ("curve", "scalar", "int")


def mappable() -> list[str]:
    """Controls a knob can drive: numbers (scalars, curves as one value, integers)."""
    return [name for name, row in CONTROLS.items() if row.kind in MAPPABLE_KINDS]


@dataclass(frozen=True)
class Mapping:
    cc: int
    control: str
    lo: float
    hi: float
    curve: str = "linear"

    def value(self, data: int) -> float:
        """The control value of CC ``data`` (0-127)."""
        return self.lo + (self.hi - self.lo) * CURVES[self.curve](data / 127.0)


class MidiMap:
    """``MidiMap(write, get, actions={"pause": fn, ...}, slew=0.25, wake=None)``; thread-safe.
    ``get(name)`` gives a control's value, where a slew starts from; ``wake()`` is called when a CC
    aims a control (the runner's tick-rate pause ends, as for any write)."""

    def __init__(self, write: Callable[[str, Any], Any], get: Callable[[str], Any] | None = None,
                 actions: dict[str, Callable[[], Any]] | None = None, slew: float = 0.25,
                 wake: Callable[[], Any] | None = None):
        self.write, self.get, self.wake = write, get, wake
        self.actions = dict(actions or {})
        self.slew = check_float("slew", slew, 0.001, 1.0)
        self._lock = threading.Lock()
        self._maps: dict[int, dict[str, Mapping]] = {}       # cc -> control -> mapping (a macro: several)
        self._notes: dict[int, str] = {}
        self._targets: dict[str, tuple[float, Mapping]] = {}  # control -> (target, its mapping)
        self._current: dict[str, float] = {}                 # control -> value last written by MIDI
        self._learning: tuple[str, float | None, float | None, str] | None = None
        self.last: dict[str, Any] = {}                        # the last message: device, cc / note, value
        self.writes = 0

    # -- mappings ----------------------------------------------------------------------------
    def map(self, cc: int, control: str, lo: float | None = None, hi: float | None = None,
            curve: str = "linear") -> Mapping:
        """Map ``CC cc`` onto ``control`` over ``[lo, hi]`` (default: the control's slider range).
        One CC may drive several controls (a macro); mapping the same pair again replaces it."""
        cc = check_int("cc", cc, 0, 127)
        check_choice("control", control, mappable())
        check_choice("curve", curve, tuple(CURVES))
        row = CONTROLS[control]
        ui_lo, ui_hi, _ = row.ui or (row.lo, row.hi, 0)
        lo = ui_lo if lo is None else check_float("lo", lo, row.lo, row.hi)
        hi = ui_hi if hi is None else check_float("hi", hi, row.lo, row.hi)
        mapping = Mapping(cc, control, float(lo), float(hi), curve)
        with self._lock:
            self._maps.setdefault(cc, {})[control] = mapping
        return mapping

    def unmap(self, cc: int, control: str | None = None) -> None:
        """Forget what ``CC cc`` drives (only ``control``, if given)."""
        with self._lock:
            if control is None:
                self._maps.pop(cc, None)
            else:
                self._maps.get(cc, {}).pop(control, None)

    def map_note(self, note: int, action: str) -> None:
        """A note-on of ``note`` triggers ``action`` (one of ``new_seed``, ``pause``, ``record``)."""
        note = check_int("note", note, 0, 127)
        check_choice("action", action, NOTE_ACTIONS)
        with self._lock:
            self._notes[note] = action

    def learn(self, control: str, lo: float | None = None, hi: float | None = None, curve: str = "linear") -> None:
        """The next CC that moves is mapped onto ``control``."""
        check_choice("control", control, mappable())
        check_choice("curve", curve, tuple(CURVES))
        with self._lock:
            self._learning = (control, lo, hi, curve)

    @property
    def learning(self) -> str | None:
        return None if self._learning is None else self._learning[0]

    @property
    def mappings(self) -> dict:
        """``{"cc": {n: [Mapping, ...]}, "notes": {n: action}}`` (a copy)."""
        with self._lock:
            return {"cc": {cc: list(m.values()) for cc, m in self._maps.items() if m}, "notes": dict(self._notes)}

    def to_json(self) -> dict:
        """The mappings as plain data (for presets)."""
        maps = self.mappings
        return {"cc": [[m.cc, m.control, m.lo, m.hi, m.curve] for ms in maps["cc"].values() for m in ms],
                "notes": [[note, action] for note, action in maps["notes"].items()]}

    def load_json(self, data) -> dict[str, str]:
        """Add the mappings of :meth:`to_json` data; returns what it skipped (entry -> reason)."""
        skipped: dict[str, str] = {}
        if not isinstance(data, dict):
            return {"midi": f"expected an object with 'cc' and 'notes', got {type(data).__name__}"}
        for entry in data.get("cc", []) if isinstance(data.get("cc"), list) else []:
            try:
                self.map(*entry) if isinstance(entry, list) and len(entry) == 5 else self.map(entry)
            except (ValueError, TypeError) as error:
                skipped[f"midi cc {entry!r}"[:60]] = str(error)
        for entry in data.get("notes", []) if isinstance(data.get("notes"), list) else []:
            try:
                self.map_note(*entry) if isinstance(entry, list) and len(entry) == 2 else self.map_note(entry)
            except (ValueError, TypeError) as error:
                skipped[f"midi note {entry!r}"[:60]] = str(error)
        return skipped

    def clear(self) -> None:
        with self._lock:
            self._maps.clear(), self._notes.clear(), self._targets.clear()
            self._learning = None

    # -- messages (comm thread) ------------------------------------------------------------------
    def receive(self, data, device: str | None = None) -> str:
        """One raw MIDI message; returns what it did (``cc``, ``learned``, ``note``, ``ignored``)."""
        if not isinstance(data, (list, tuple)) or not 1 <= len(data) <= 3:
            raise ValueError(f"midi: expected a message of 1-3 bytes, got {data!r}")
        status, *rest = [check_int("midi byte", b, 0, 255) for b in data]
        kind, channel = status & 0xF0, status & 0x0F
        if kind in (0xB0, 0x90, 0x80) and (len(rest) != 2 or any(b > 127 for b in rest)):
            raise ValueError(f"midi: a channel message needs two data bytes 0-127, got {data!r}")
        if kind == 0xB0:
            return self._control_change(rest[0], rest[1], channel, device)
        if kind == 0x90 and rest[1] > 0:
            self.last = {"device": device, "note": rest[0], "velocity": rest[1], "channel": channel}
            action = self._notes.get(rest[0])
            if action is not None and action in self.actions:
                self.actions[action]()
                return "note"
        return "ignored"

    def _control_change(self, cc: int, value: int, channel: int, device: str | None) -> str:
        self.last = {"device": device, "cc": cc, "value": value, "channel": channel}
        with self._lock:
            learning, self._learning = self._learning, None
        if learning is not None:
            control, lo, hi, curve = learning
            self._aim(self.map(cc, control, lo, hi, curve), value)
            return "learned"
        with self._lock:
            mappings = list(self._maps.get(cc, {}).values())
        for mapping in mappings:
            self._aim(mapping, value)
        return "cc" if mappings else "ignored"

    def _aim(self, mapping: Mapping, value: int) -> None:
        with self._lock:
            self._targets[mapping.control] = (mapping.value(value), mapping)
        if self.wake is not None:
            self.wake()

    # -- the tick thread ------------------------------------------------------------------------
    def _start(self, control: str, target: float) -> float:
        """Where a control's first MIDI move starts: its current value (a curve: its mean)."""
        value = None if self.get is None else self.get(control)
        if hasattr(value, "mean"):
            value = float(value.float().mean())
        return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else target

    def flush(self) -> int:
        """Write each control that has a target once: at most ``slew`` of its range toward it."""
        with self._lock:
            targets = dict(self._targets)
        written = 0
        for control, (target, mapping) in targets.items():
            step = self.slew * abs(mapping.hi - mapping.lo)
            current = self._current.get(control)
            if current is None:
                current = self._start(control, target)
            value = min(max(target, current - step), current + step)
            arrived = value == target
            out = round(value) if CONTROLS[control].kind == "int" else value
            try:
                self.write(control, out)
            except ValueError:
                arrived = True  # the write path refused it (e.g. a range the control cannot take): drop it
            else:
                self._current[control] = value
                written += 1
            with self._lock:
                if arrived and self._targets.get(control, (None,))[0] == target:
                    del self._targets[control]
        self.writes += written
        return written
