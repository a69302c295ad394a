"""MIDI: mappings, learn, coalescing, slew, note actions and bad messages (kernel side),
and a CC from the widget reaching the instrument's control through the tick thread."""

import pytest

from demon_nb.live.instrument import Instrument
from demon_nb.live.midi import MidiMap, mappable
from demon_nb.models import load
from helpers import wait_until


class Writes:
    def __init__(self):
        self.values, self.log = {"velocity_scale": 1.0, "steps": 8}, []

    def __call__(self, name, value):
        if name == "velocity_scale" and not 0.0 <= value <= 4.0:
            raise ValueError("velocity_scale: out of range")
        self.values[name] = value
        self.log.append((name, value))


@pytest.fixture
def writes():
    return Writes()


def test_cc_maps_linearly_and_by_curve_onto_the_range(writes):
    midi = MidiMap(writes, writes.values.get, slew=1.0)
    midi.map(cc=21, control="velocity_scale", lo=0.5, hi=1.8)
    midi.map(cc=22, control="steps", lo=4, hi=12, curve="square")
    assert midi.receive([0xB0, 21, 127]) == "cc" and midi.receive([0xB3, 22, 64]) == "cc"  # any channel
    assert midi.flush() == 2
    assert writes.values["velocity_scale"] == pytest.approx(1.8)
    assert writes.values["steps"] == round(4 + 8 * (64 / 127) ** 2) and isinstance(writes.values["steps"], int)
    assert set(midi.mappings["cc"]) == {21, 22}
    midi.clear()
    assert midi.mappings == {"cc": {}, "notes": {}} and midi.receive([0xB0, 21, 0]) == "ignored"


def test_a_fast_stream_is_one_write_per_tick_and_the_last_value_wins(writes):
    midi = MidiMap(writes, writes.values.get, slew=1.0)
    midi.map(cc=21, control="velocity_scale", lo=0.0, hi=2.0)
    for value in range(0, 128, 3):
        midi.receive([0xB0, 21, value])
    assert midi.flush() == 1 and writes.log == [("velocity_scale", pytest.approx(2.0 * 126 / 127))]
    assert midi.flush() == 0  # arrived: nothing more to write


def test_a_jump_is_slew_limited(writes):
    midi = MidiMap(writes, writes.values.get, slew=0.25)
    midi.map(cc=21, control="velocity_scale", lo=0.0, hi=2.0)   # at most 0.5 per tick, from 1.0
    midi.receive([0xB0, 21, 0])
    values = []
    while midi.flush():
        values.append(writes.values["velocity_scale"])
    assert values == pytest.approx([0.5, 0.0])


def test_learn_binds_the_next_cc(writes):
    midi = MidiMap(writes, writes.values.get, slew=1.0)
    midi.learn("velocity_scale", lo=1.0, hi=3.0)
    assert midi.learning == "velocity_scale"
    assert midi.receive([0xB0, 40, 127], device="nanoKONTROL") == "learned"
    assert midi.learning is None and [m.control for m in midi.mappings["cc"][40]] == ["velocity_scale"]
    midi.flush()
    assert writes.values["velocity_scale"] == pytest.approx(3.0) and midi.last["device"] == "nanoKONTROL"


def test_note_on_triggers_its_action_note_off_does_not():
    fired = []
    midi = MidiMap(lambda *a: None, actions={"new_seed": lambda: fired.append("seed")})
    midi.map_note(60, "new_seed")
    assert midi.receive([0x90, 60, 100]) == "note" and fired == ["seed"]
    assert midi.receive([0x90, 60, 0]) == "ignored" and midi.receive([0x80, 60, 64]) == "ignored"
    assert fired == ["seed"]


@pytest.mark.parametrize("data", [[], [0xB0, 21], [0xB0, 21, 200], [300, 1, 2], "cc", [0xB0, 1, 2, 3], [0xB0, 1.5, 2]])
def test_malformed_messages_are_refused_by_name(writes, data):
    midi = MidiMap(writes, writes.values.get)
    with pytest.raises(ValueError, match="midi"):
        midi.receive(data)
    assert writes.log == []


@pytest.mark.parametrize("kwargs, word", [
    (dict(cc=128, control="velocity_scale"), "cc"), (dict(cc=1, control="prompt_a"), "control"),
    (dict(cc=1, control="velocity_scale", lo=-1.0), "lo"), (dict(cc=1, control="velocity_scale", curve="cubic"), "curve"),
])
def test_bad_mappings_are_refused_by_name(writes, kwargs, word):
    with pytest.raises(ValueError, match=word):
        MidiMap(writes).map(**kwargs)


def test_one_knob_drives_several_controls(writes):
    midi = MidiMap(writes, writes.values.get, slew=1.0)
    midi.map(cc=1, control="velocity_scale", lo=1.0, hi=1.5)
    midi.map(cc=1, control="steps", lo=8, hi=4)   # a reversed range: the knob up, fewer steps
    midi.receive([0xB0, 1, 127])
    assert midi.flush() == 2 and writes.values == {"velocity_scale": 1.5, "steps": 4}
    midi.unmap(1, "steps")
    assert [m.control for m in midi.mappings["cc"][1]] == ["velocity_scale"]


def test_only_numeric_controls_are_mappable():
    names = mappable()
    assert "velocity_scale" in names and "steps" in names and "prompt_a" not in names and "source" not in names


def test_a_cc_from_the_page_reaches_the_instrument_and_bad_ones_show_in_its_status():
    inst = Instrument(load("analytic", frames=32, channels=4), depth=2, steps=4, max_ticks_per_s=100)
    try:
        inst.midi.map(cc=21, control="velocity_scale", lo=0.5, hi=1.8)
        inst.midi_in._on_msg(inst.midi_in, {"type": "state", "available": True, "devices": ["Fake MIDI"]}, [])
        assert "Fake MIDI" in inst.midi_in.status
        inst.midi_in._on_msg(inst.midi_in, {"type": "midi", "data": [0xB0, 21, 127], "device": "Fake MIDI"}, [])
        assert "CC 21 = 127 → velocity_scale" in inst.midi_in.status
        assert wait_until(lambda: inst.get("velocity_scale") == pytest.approx(1.8))   # slewed over a few ticks
        inst.midi_in._on_msg(inst.midi_in, {"type": "midi", "data": [0xB0, 21]}, [])
        assert "malformed" in inst.midi_in.status and inst.runner.alive
        inst.midi_widgets["target"].value = "denoise"
        inst.midi_widgets["learn"].value = True
        inst.midi_in._on_msg(inst.midi_in, {"type": "midi", "data": [0xB0, 30, 0], "device": "Fake MIDI"}, [])
        assert [m.control for m in inst.midi.mappings["cc"][30]] == ["denoise"] and inst.midi_widgets["learn"].value is False
        inst.midi_in._on_msg(inst.midi_in, {"type": "state", "available": False, "error": "no Web MIDI"}, [])
        assert "no Web MIDI" in inst.midi_in.status
    finally:
        inst.close()


def test_a_cc_wakes_the_tick_loop_so_its_write_lands_at_the_next_tick(writes):
    woken = []
    midi = MidiMap(writes, writes.values.get, slew=1.0, wake=lambda: woken.append(1))
    midi.map(cc=21, control="velocity_scale", lo=0.0, hi=2.0)
    midi.receive([0xB0, 22, 5])
    assert woken == []                      # an unmapped CC aims nothing
    midi.receive([0xB0, 21, 64])
    assert woken == [1]


def test_the_instrument_wakes_its_runner_on_a_cc():
    from demon_nb.live.runner import Runner

    inst = Instrument(load("analytic", frames=16, channels=4), autostart=False)
    try:
        assert inst.midi.wake == inst.runner.wake
        inst.runner._wake.clear()
        inst.midi.map(cc=21, control="velocity_scale")
        inst.midi.receive([0xB0, 21, 100])
        assert inst.runner._wake.is_set() and isinstance(inst.runner, Runner)
    finally:
        inst.stop()
