"""``MidiIn``: the browser's MIDI inputs as an anywidget (``widgets/midi.js``), feeding a
:class:`demon_nb.live.midi.MidiMap`. ``status`` is the line the page shows: the devices, the
last control moved and what it drives, or why there is no MIDI (the rest keeps working)."""

from __future__ import annotations

from importlib.resources import files

import anywidget
import traitlets as t

from .midi import MidiMap


class MidiIn(anywidget.AnyWidget):
    _esm = (files("demon_nb.widgets") / "midi.js").read_text(encoding="utf-8")
    status = t.Unicode("MIDI: waiting for the browser").tag(sync=True)
    available = t.Bool(False)
    devices = t.List(t.Unicode())

    def __init__(self, midi: MidiMap, **kwargs):
        super().__init__(**kwargs)
        self.midi = midi
        self.messages = 0
        self.on_msg(self._on_msg)

    def _on_msg(self, _widget, content, _buffers) -> None:
        if not isinstance(content, dict):
            return
        if content.get("type") == "state":
            self.available = content.get("available") is True
            self.devices = [str(d)[:80] for d in content.get("devices", []) if isinstance(d, str)][:16]
            self.status = (f"MIDI: {', '.join(self.devices) or 'no device connected'}" if self.available
                           else f"MIDI: {str(content.get('error', 'not available'))[:200]}")
        elif content.get("type") == "midi":
            self.messages += 1
            self.receive(content.get("data"), content.get("device"))

    def receive(self, data, device=None) -> None:
        """One message from the page; a malformed one is named in the status line and ignored."""
        try:
            did = self.midi.receive(data, device if isinstance(device, str) else None)
        except ValueError as error:
            self.status = f"MIDI: ignored a malformed message ({error})"
            return
        self.status = self.describe(did)

    def describe(self, did: str) -> str:
        last = self.midi.last
        where = last.get("device") or "MIDI"
        if "cc" in last:
            mappings = self.midi.mappings["cc"].get(last["cc"], [])
            target = f" → {', '.join(m.control for m in mappings)}" if mappings else " (not mapped)"
            learned = " (learned)" if did == "learned" else ""
            return f"{where}: CC {last['cc']} = {last['value']}{target}{learned}"
        if "note" in last:
            action = self.midi.mappings["notes"].get(last["note"])
            return f"{where}: note {last['note']}" + (f" → {action}" if action else "")
        return self.status
