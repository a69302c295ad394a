"""Property-based fuzzing of every control through the Python API (issue 8).

Each write is either applied or rejected with a ValueError naming the control;
a rejected write leaves the state unchanged; the engine keeps ticking and loses
no in-flight slot.
"""

import math

import numpy as np
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from demon_nb.live.controls import CONTROLS
from demon_nb.live.runner import Runner
from demon_nb.models import load

MODEL = load("analytic", frames=32, channels=4)
FRAMES, CHANNELS = MODEL.frames, MODEL.denoiser.channels

finite = st.floats(allow_nan=False, allow_infinity=False, width=32)
wild_float = st.one_of(finite, st.just(float("nan")), st.just(float("inf")), st.just(-float("inf")),
                       st.floats(min_value=1e6, max_value=1e30), st.floats(max_value=-1e-3, min_value=-1e9))
curve = st.one_of(
    st.lists(finite, min_size=FRAMES, max_size=FRAMES),
    st.lists(finite, min_size=0, max_size=FRAMES + 5),
    st.lists(wild_float, min_size=FRAMES, max_size=FRAMES),
)
tensor = st.one_of(
    st.builds(lambda s: torch.randn(*s), st.sampled_from([(FRAMES, CHANNELS), (FRAMES + 1, CHANNELS), (FRAMES, 3), (2, FRAMES, CHANNELS)])),
    st.just(torch.full((FRAMES, CHANNELS), float("nan"))),
    st.just(torch.zeros(FRAMES, CHANNELS, dtype=torch.int64)),
)
anything = st.one_of(
    wild_float, st.integers(min_value=-(2**70), max_value=2**70), st.booleans(), st.none(),
    st.text(max_size=50), st.text(min_size=2001, max_size=2100), st.sampled_from(["", "ü曲🎵", "1", "sde", "apg", "full"]),
    curve, tensor, st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)


def runner():
    r = Runner(MODEL, depth=3, steps=4, prompt="1")
    for _ in range(6):
        r.step()
    return r


def snapshot(r):
    values = {}
    for name in CONTROLS:
        value = r.controls.get(name)
        values[name] = value.clone() if isinstance(value, torch.Tensor) else value
    return values


def same(a, b):
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(writes=st.lists(st.tuples(st.sampled_from(sorted(CONTROLS)), anything), min_size=1, max_size=6))
def test_every_write_is_applied_or_cleanly_rejected(writes):
    r = runner()
    for name, value in writes:
        before = snapshot(r)
        in_flight = r.ring.in_flight
        try:
            r.set(name, value)
        except ValueError as error:
            assert name in str(error) or "control" in str(error), f"error does not name {name}: {error}"
            after = snapshot(r)
            assert all(same(before[k], after[k]) for k in before), f"rejected write to {name} changed the state"
        assert r.ring.in_flight == in_flight  # nothing discarded at the write
        done = [c for _ in range(3) for c in [r.step()]]
        assert not r.errors, r.errors[-1].traceback
        assert all(np.isfinite(c.latent.numpy()).all() for batch in done for c in batch)


@settings(max_examples=50, deadline=None)
@given(name=st.sampled_from(["depth", "steps", "seed", "shift"]), value=st.integers(min_value=-5, max_value=100))
def test_structure_controls_out_of_range(name, value):
    r = runner()
    limits = {"depth": (1, 16), "steps": (1, 1000), "seed": (0, 2**31 - 1), "shift": (1, 20)}
    lo, hi = limits[name]
    try:
        r.set(name, value)
        assert lo <= value <= hi
    except ValueError as error:
        assert name in str(error)
        assert not lo <= value <= hi or name == "shift"
    for _ in range(3):
        r.step()
    assert not r.errors
