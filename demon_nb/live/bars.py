"""Two rows of the instrument under the panel: presets and recording (``session_bar``), and
MIDI learn with the MIDI status line (``midi_bar``). Each sets ``inst.session_widgets`` /
``inst.midi_widgets`` (for tests) and returns its row."""

from __future__ import annotations

from pathlib import Path

import ipywidgets as W

from .midi import mappable


def session_bar(inst) -> W.Widget:
    """Preset file + save / load, and a record toggle (takes are named after the preset's stem)."""
    name = W.Text(value="preset.json", description="preset", layout=W.Layout(width="260px"))
    save, load_, record = W.Button(description="save"), W.Button(description="load"), \
        W.ToggleButton(description="● record", value=False)
    for widget, cls in ((name, "path"), (save, "save"), (load_, "load"), (record, "record")):
        widget.add_class(f"demon-session-{cls}")

    def attempt(what: str, action) -> None:
        try:
            action()
            inst.panel.show_message(f"session:{what}", None)
        except (ValueError, OSError) as error:
            inst.panel.show_message(f"session:{what}", str(error))

    save.on_click(lambda _: attempt("save", lambda: inst.save(name.value)))
    load_.on_click(lambda _: attempt("load", lambda: inst.load(name.value)))

    def toggle(change) -> None:
        stem = Path(name.value).with_suffix("")
        attempt("record", (lambda: inst.record(f"{stem}-take.wav")) if change["new"] else inst.stop_recording)

    record.observe(toggle, names="value")
    inst.session_widgets = {"path": name, "save": save, "load": load_, "record": record}
    return W.HBox([name, save, load_, record])

def midi_bar(inst) -> W.Widget:
    """MIDI learn: pick a control, press learn, move a knob; the status line says what moved."""
    target = W.Dropdown(options=mappable(), value="velocity_scale", description="MIDI learn",
                        layout=W.Layout(width="300px"))
    learn = W.ToggleButton(description="learn", value=False)
    learn.add_class("demon-midi-learn")
    target.add_class("demon-midi-target")

    def arm(change) -> None:
        if change["new"]:
            inst.midi.learn(target.value)
            inst.midi_in.status = f"MIDI: move a knob to drive {target.value}"

    def learned(change) -> None:
        if learn.value and inst.midi.learning is None:
            learn.value = False  # the knob moved: mapped

    learn.observe(arm, names="value")
    inst.midi_in.observe(learned, names="status")
    inst.midi_widgets = {"target": target, "learn": learn}
    return W.HBox([target, learn, inst.midi_in], layout=W.Layout(align_items="center"))
