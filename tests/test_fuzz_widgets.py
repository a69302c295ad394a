"""Fuzzing through the widget message path (issue 8): what a browser could send.

Each control widget gets state updates as the front end sends them
(``widget.set_state``): a value the widget library refuses raises a TraitError
and changes nothing; a value it accepts reaches ``runner.set`` through the
panel's observer, which either applies it or shows the ValueError in the panel.
The ring keeps ticking and loses no in-flight slot.
"""

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from traitlets import TraitError

from demon_nb.live.instrument import Instrument
from demon_nb.models import load

MODEL = load("analytic", frames=32, channels=4)
wild = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True), st.integers(min_value=-(2**64), max_value=2**64),
    st.text(max_size=30), st.text(min_size=2001, max_size=2050), st.booleans(), st.none(),
    st.lists(st.floats(allow_nan=True), max_size=5), st.dictionaries(st.text(max_size=2), st.integers(), max_size=2),
)


@pytest.fixture(scope="module")
def inst():
    instrument = Instrument(MODEL, depth=2, steps=4, microphone=False)
    instrument.runner.pause()  # ticks are driven by the test
    yield instrument
    instrument.close()


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_anything_a_browser_sends_is_applied_or_cleanly_refused(inst, data):
    name = data.draw(st.sampled_from(sorted(inst.panel.widgets)))
    value = data.draw(wild)
    widget = inst.panel.widgets[name]
    runner = inst.runner
    for _ in range(2):
        runner.step()
    in_flight, errors = runner.ring.in_flight, len(runner.errors)
    before = runner.controls.get(name)
    before = before.clone() if isinstance(before, torch.Tensor) else before
    try:
        widget.set_state({"value": value})
    except (TraitError, TypeError, ValueError, OverflowError):
        after = runner.controls.get(name)
        assert after is before or after == before or (isinstance(after, torch.Tensor) and torch.equal(after, before))
    for message in inst.panel.errors.values():
        assert message.split(":")[0] in inst.panel.widgets or "control" in message
    assert runner.ring.in_flight == in_flight
    for _ in range(3):
        runner.step()
    assert len(runner.errors) == errors, runner.errors[-1].traceback if runner.errors else ""
