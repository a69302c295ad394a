"""Mechanism 2: every shared parameter is felt by every in-flight slot at the next tick."""

import threading

import pytest
import torch

from demon_nb.engine.request import Condition, Request
from demon_nb.engine.ring import Ring
from demon_nb.engine.state import PARAMS, SharedState
from demon_nb.models.analytic import AnalyticDenoiser

T, C = 16, 4
SOURCE = torch.randn(T, C, generator=torch.Generator().manual_seed(1))
TARGET = torch.randn(T, C, generator=torch.Generator().manual_seed(2))

# parameter -> (new value, request options, shared-state preset) chosen so that the parameter matters
CASES = {
    "velocity_scale": (1.3, {}, {}),
    "source_blend": (torch.linspace(0, 1, T), {"source": SOURCE, "denoise": 0.9}, {"solver": "sde"}),
    "ode_noise": (0.5, {}, {}),
    "x0_target_strength": (0.5, {"x0_target": TARGET}, {}),
    "x0_target_gate": (0.99, {"x0_target": TARGET}, {"x0_target_strength": 0.5}),
    "guidance_scale": (5.0, {"cfg_mode": "full"}, {"guidance_scale": 3.0}),
    "guidance_kind": ("cfg", {"cfg_mode": "full"}, {"guidance_scale": 3.0}),
    "apg_momentum": (0.5, {"cfg_mode": "full"}, {"guidance_scale": 3.0}),
    "apg_norm_threshold": (0.01, {"cfg_mode": "full"}, {"guidance_scale": 3.0}),
    "cfg_rescale": (0.7, {"cfg_mode": "full"}, {"guidance_scale": 3.0}),
    "cfg_interval_start": (0.99, {"cfg_mode": "full"}, {"guidance_scale": 3.0}),
    "cfg_interval_end": (0.0, {"cfg_mode": "full"}, {"guidance_scale": 3.0}),
    "channel_gain": (torch.linspace(0.5, 1.5, C), {}, {}),
    "solver": ("sde", {}, {}),
    "dcw_mode": ("double", {}, {}),
    "dcw_scaler": (0.3, {}, {"dcw_mode": "low"}),
    "dcw_high_scaler": (torch.linspace(0, 0.5, T), {}, {"dcw_mode": "high"}),
}


def test_every_shared_parameter_has_a_next_tick_test():
    # lora_strength scales the model's adapter between ticks (the runner, not the sampler): tests/test_lora.py
    assert set(CASES) == set(PARAMS) - {"lora_strength"}


def make_ring(request_options, preset):
    ring = Ring(AnalyticDenoiser(channels=C, labels=3), frames=T, channels=C, depth=3, steps=8, stagger=False)
    ring.state.update(**preset)
    for k in range(3):
        ring.submit(Request(cond=k, seed=k, **request_options))
    return ring


@pytest.mark.parametrize("name", sorted(CASES))
def test_write_is_felt_by_every_slot_at_the_next_tick(name):
    value, options, preset = CASES[name]
    changed, control = make_ring(options, preset), make_ring(options, preset)
    for _ in range(3):
        changed.tick(), control.tick()
    changed.state.set(name, value)
    before = [s.x.clone() for s in changed.slots]
    assert all(torch.equal(a, b.x) for a, b in zip(before, control.slots))  # nothing applied at the write
    changed.tick(), control.tick()
    for mine, theirs in zip(changed.slots, control.slots):
        assert not torch.equal(mine.x, theirs.x), f"{name} did not reach a slot at the next tick"


def test_update_is_atomic_and_versioned():
    state = SharedState(T, C)
    version = state.update(velocity_scale=1.2, ode_noise=0.3)
    assert state.snapshot().version == version
    snap = state.snapshot()
    assert snap["velocity_scale"] == 1.2 and snap["ode_noise"] == 0.3
    with pytest.raises(ValueError, match="ode_noise"):
        state.update(velocity_scale=2.0, ode_noise=float("nan"))
    assert state.snapshot()["velocity_scale"] == 1.2  # the whole write was rejected


def test_writes_from_another_thread_land_at_the_next_snapshot():
    state = SharedState(T, C)
    first = state.snapshot()
    thread = threading.Thread(target=lambda: state.set("velocity_scale", torch.ones(T) * 2))
    thread.start()
    thread.join()
    assert first["velocity_scale"] == 1.0  # snapshots are immutable
    assert torch.equal(state.snapshot()["velocity_scale"], torch.full((1, T, 1), 2.0))


def test_curves_are_device_tensors_scalars_are_floats():
    state = SharedState(T, C)
    state.update(velocity_scale=[1.0] * T, guidance_scale=2)
    snap = state.snapshot()
    assert isinstance(snap["velocity_scale"], torch.Tensor) and snap["velocity_scale"].shape == (1, T, 1)
    assert isinstance(snap["guidance_scale"], float)


BAD_WRITES = [
    ("velocity_scale", [1.0] * (T - 1), "length"),
    ("velocity_scale", float("inf"), "velocity_scale"),
    ("source_blend", 1.5, r"\[0.0, 1.0\]"),
    ("guidance_scale", "loud", "guidance_scale"),
    ("solver", "rk4", "solver"),
    ("apg_momentum", [0.1] * T, "apg_momentum"),
    ("channel_gain", torch.ones(3, 3), "channel_gain"),
    ("nonsense", 1.0, "unknown shared parameter"),
]


@pytest.mark.parametrize("name, value, message", BAD_WRITES)
def test_bad_writes_are_rejected_at_the_write_and_the_ring_loses_nothing(name, value, message):
    ring = make_ring({}, {})
    ring.tick()
    before = ring.state.snapshot()
    with pytest.raises(ValueError, match=message):
        ring.state.set(name, value)
    assert ring.state.snapshot() is before
    done = []
    for _ in range(8):
        done += ring.tick()
    assert len(done) == 3


@pytest.mark.parametrize("request_kwargs, message", [
    ({"denoise": 1.5}, "denoise"),
    ({"seed": -1}, "seed"),
    ({"seed": 1.5}, "seed"),
    ({"cfg_mode": "double"}, "cfg_mode"),
    ({"source": torch.zeros(T + 1, C)}, "source"),
    ({"source": torch.zeros(T, C, dtype=torch.int64)}, "source"),
    ({"source": torch.full((T, C), float("nan"))}, "source"),
    ({"x0_target": [[0.0] * C] * T}, "x0_target"),
    ({"init_noise": 0.5}, "init_noise"),
    ({"source": SOURCE, "mask": [2.0] * T}, "mask"),
    ({"conditions": (Condition(cond=1, start=0.8, end=0.2),)}, "conditions"),
    ({"conditions": (Condition(cond=1, weight=[-1.0] * T),)}, "weight"),
    ({"conditions": (Condition(cond=7),)}, r"conditions\[0\].cond"),
    ({"cond_override": "not a label"}, "cond"),
    ({"negative": 99}, "negative"),
])
def test_bad_requests_are_rejected_at_submit(request_kwargs, message):
    ring = make_ring({}, {})
    ring.tick()
    queued = len(ring.queue)
    cond = request_kwargs.pop("cond_override", 0)
    with pytest.raises(ValueError, match=message):
        ring.submit(Request(cond=cond, **request_kwargs))
    assert len(ring.queue) == queued and ring.in_flight == 3


@pytest.mark.parametrize("call, message", [
    (lambda r: r.set_depth(0), "depth"), (lambda r: r.set_depth(17), "depth"), (lambda r: r.set_depth(2.0), "depth"),
    (lambda r: r.set_schedule(steps=0), "steps"), (lambda r: r.set_schedule(shift=99.0), "shift"), (lambda r: r.rebuild(frames=-3), "frames"),
])
def test_bad_structure_changes_are_rejected(call, message):
    ring = make_ring({}, {})
    ring.tick()
    with pytest.raises(ValueError, match=message):
        call(ring)
    ring.tick()
    assert ring.in_flight == 3 and ring.discarded == 0
