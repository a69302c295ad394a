"""The ring buffer: births, completions, depth and schedule changes, rebuilds, CFG forwards, identity."""

import pytest
import torch

from demon_nb.engine.identity import max_abs_diff
from demon_nb.engine.request import Condition, Request
from demon_nb.engine.ring import Ring
from demon_nb.models.analytic import AnalyticDenoiser
from helpers import DenoiserWrapper

T, C = 16, 4


class Counting(DenoiserWrapper):
    """Records the batch size of every forward."""

    def __init__(self, inner):
        super().__init__(inner)
        self.calls = []

    def velocity(self, x, t, cond):
        self.calls.append(x.shape[0])
        return super().velocity(x, t, cond)


@pytest.fixture
def denoiser():
    return AnalyticDenoiser(channels=C, labels=3)


def make_ring(denoiser, **kw):
    return Ring(denoiser, frames=T, channels=C, **({"depth": 4, "steps": 8} | kw))


def drain(ring, ticks=100):
    out = []
    for _ in range(ticks):
        out += ring.tick()
    return out


def test_completion_returned_in_the_tick_it_finished(denoiser):
    ring = make_ring(denoiser, depth=1)
    ring.submit(Request(cond=0, seed=1))
    results = [ring.tick() for _ in range(8)]
    assert [len(r) for r in results] == [0] * 7 + [1]
    done = results[-1][0]
    assert done.finished_tick - done.born_tick == 7 and done.latent.shape == (T, C)


def test_several_slots_can_finish_in_one_tick(denoiser):
    ring = make_ring(denoiser, stagger=False)
    for k in range(4):
        ring.submit(Request(cond=k % 3, seed=k, tag=k))
    results = [ring.tick() for _ in range(8)]
    assert sorted(c.tag for c in results[-1]) == [0, 1, 2, 3]


def test_staggered_steady_state_gives_depth_over_steps_per_tick(denoiser):
    ring = make_ring(denoiser)
    births = iter(range(10**6))
    ring.feed = lambda: Request(cond=0, seed=next(births))
    counts = [len(ring.tick()) for _ in range(64)]
    assert sum(counts[32:]) == 16  # D / S = 0.5 per tick
    assert max(counts[32:]) == 1


def test_one_positive_and_at_most_one_negative_forward_per_tick(denoiser):
    counting = Counting(denoiser)
    ring = make_ring(counting, stagger=False)
    modes = ["none", "full", "residual-initialize", "residual-self"]
    for k, mode in enumerate(modes):
        ring.submit(Request(cond=k % 3, seed=k, cfg_mode=mode))
    ring.state.set("guidance_scale", 2.0)
    calls_per_tick = []
    for _ in range(8):
        before = len(counting.calls)
        ring.tick()
        calls_per_tick.append(counting.calls[before:])
    assert calls_per_tick[0] == [4, 2]  # positive rows; negatives: full + residual-initialize (step 0)
    assert all(calls == [4, 1] for calls in calls_per_tick[1:])  # only "full" needs the negative row later


def test_cfg_modes_change_the_result_and_residual_self_costs_nothing(denoiser):
    latents = {}
    for mode in ("none", "full", "residual-initialize", "residual-self"):
        counting = Counting(denoiser)
        ring = make_ring(counting, depth=1)
        ring.state.set("guidance_scale", 3.0)
        ring.submit(Request(cond=1, seed=5, cfg_mode=mode))
        latents[mode] = drain(ring, 8)[0].latent
        if mode in ("none", "residual-self"):
            assert counting.calls == [1] * 8
    for a in latents:
        for b in latents:
            if a < b:
                assert not torch.equal(latents[a], latents[b]), (a, b)


def test_multi_condition_step_ranges_add_rows_only_while_active(denoiser):
    counting = Counting(denoiser)
    ring = make_ring(counting, depth=1)
    ring.submit(Request(cond=0, seed=1, conditions=(Condition(cond=2, weight=torch.linspace(0, 1, T), start=0.5, end=1.0),)))
    drain(ring, 8)
    assert counting.calls == [1, 1, 1, 1, 2, 2, 2, 2]


def test_per_slot_schedules_survive_a_denoise_change(denoiser):
    ring = make_ring(denoiser)
    source = torch.randn(T, C)
    denoise = {"value": 1.0}
    births = iter(range(10**6))
    ring.feed = lambda: Request(cond=0, seed=next(births), source=source, denoise=denoise["value"])
    drain(ring, 20)
    in_flight_before = ring.in_flight
    denoise["value"] = 0.5
    ring.tick()
    assert ring.discarded == 0 and ring.in_flight == 4 and in_flight_before >= 3
    assert sorted({s.schedule[0] for s in ring.slots if s is not None}) == pytest.approx(sorted({0.75, 1.0}))


def test_global_schedule_baseline_flushes_on_denoise_change(denoiser):
    ring = make_ring(denoiser, mode="global")
    source = torch.randn(T, C)
    births = iter(range(10**6))
    denoise = {"value": 1.0}
    ring.feed = lambda: Request(cond=0, seed=next(births), source=source, denoise=denoise["value"])
    drain(ring, 20)
    denoise["value"] = 0.5
    drain(ring, 2)
    assert ring.discarded >= 3


def test_queue_drops_oldest(denoiser):
    ring = make_ring(denoiser, depth=1, queue_size=2)
    for k in range(4):
        ring.submit(Request(cond=0, seed=k, tag=k))
    assert ring.dropped == 2 and [r.tag for r in ring.queue] == [2, 3]


def test_shrinking_depth_drains_instead_of_discarding(denoiser):
    ring = make_ring(denoiser, depth=4)
    for k in range(4):
        ring.submit(Request(cond=0, seed=k, tag=k))
    drain(ring, 7)  # births at 0, 2, 4, 6: all in flight
    assert ring.in_flight == 4
    ring.set_depth(1)
    done = drain(ring, 20)
    assert sorted(c.tag for c in done) == [0, 1, 2, 3]
    assert ring.discarded == 0 and len(ring.slots) == 1


def test_growing_depth_adds_slots_at_the_next_tick(denoiser):
    ring = make_ring(denoiser, depth=1)
    ring.set_depth(3)
    assert len(ring.slots) == 1  # applied at the tick boundary, not at the write
    ring.tick()
    assert len(ring.slots) == 3


def test_steps_change_keeps_every_slot_in_flight(denoiser):
    """Steps is per slot: slots in flight finish on their own schedule, new births take the new one."""
    ring = make_ring(denoiser)
    births = iter(range(10**6))
    ring.feed = lambda: Request(cond=0, seed=next(births), tag=next(births))
    drain(ring, 12)
    in_flight = {id(s): s.steps for s in ring.slots if s is not None}
    ring.set_schedule(steps=4)
    done = drain(ring, 1)
    assert len(in_flight) >= 3 and ring.discarded == 0 and ring.steps == 4
    assert all(s.steps == 8 for s in ring.slots if s is not None and id(s) in in_flight)
    done += drain(ring, 12)
    assert ring.discarded == 0 and {len(c.state_versions) for c in done} == {8, 4}
    assert all(s is None or s.steps == 4 for s in ring.slots)  # the old slots have drained


@pytest.mark.parametrize("new_steps", [6, 10])
def test_steps_change_leaves_no_dead_air(denoiser, new_steps):
    """Per slot: the gap between completions after a steps change stays near the cadence
    (|S_new - S_old| + S/D at most), where a global-schedule engine goes silent for S ticks."""
    def longest_gap(mode):
        ring = make_ring(denoiser, mode=mode)  # depth 4, 8 steps: a completion every 2 ticks
        births = iter(range(10**6))
        ring.feed = lambda: Request(cond=0, seed=next(births))
        drain(ring, 16)
        ring.set_schedule(steps=new_steps)
        gap = longest = 0
        for _ in range(30):
            gap = 0 if ring.tick() else gap + 1
            longest = max(longest, gap)
        return longest, ring.discarded

    per_slot, discarded = longest_gap("per_slot")
    flushing, _ = longest_gap("global")
    assert discarded == 0 and per_slot <= abs(new_steps - 8) + 2
    assert flushing >= new_steps - 1 > per_slot


def test_request_steps_and_shift_override_the_ring(denoiser):
    ring = make_ring(denoiser, depth=1)
    ring.submit(Request(cond=0, seed=1, steps=3, shift=1.0))
    ring.tick()
    assert ring.slots[0].schedule == pytest.approx((1.0, 2 / 3, 1 / 3, 0.0))
    with pytest.raises(ValueError, match="steps"):
        ring.submit(Request(cond=0, steps=0))


def test_loop_length_change_is_a_rebuild(denoiser):
    ring = make_ring(denoiser)
    births = iter(range(10**6))
    ring.feed = lambda: Request(cond=0, seed=next(births))
    drain(ring, 12)
    in_flight = ring.in_flight
    ring.rebuild(frames=2 * T)  # requests and curves are sized by it: it lands at the next tick
    ring.tick()
    assert ring.frames == 2 * T and ring.discarded == in_flight >= 3 and ring.rebuilds == 1
    assert ring.in_flight >= 1  # the empty ring restarts at once, without waiting out the old stagger
    with pytest.raises(ValueError, match="frames"):
        ring.rebuild(frames=0)


def test_noise_buffer_is_contiguous_for_strided_inputs(denoiser):
    """Per-step noise drawn into the slot's buffer equals a fresh draw even when x is strided."""
    strided = torch.randn(C, T).T  # [T, C], not contiguous
    ring = make_ring(denoiser, depth=1)
    ring.state.set("solver", "sde")
    ring.submit(Request(cond=0, seed=3, noise=strided))
    alone = make_ring(denoiser, depth=1)
    alone.state.set("solver", "sde")
    alone.submit(Request(cond=0, seed=3, noise=strided.contiguous()))
    a, b = drain(ring, 8), drain(alone, 8)
    assert torch.equal(a[0].latent, b[0].latent)


def test_ticks_inside_and_outside_inference_mode_mix(denoiser):
    """Buffers made under inference_mode (the runner) are replaced when a tick runs outside it."""
    ring = make_ring(denoiser)
    ring.state.set("solver", "sde")
    births = iter(range(10**6))
    ring.feed = lambda: Request(cond=0, seed=next(births))
    with torch.inference_mode():
        drain(ring, 6)
    assert len(drain(ring, 12)) >= 4


def test_pending_schedule_fields_merge(denoiser):
    ring = make_ring(denoiser)
    ring.set_schedule(steps=4)
    ring.set_schedule(shift=1.5)  # before the tick: both changes land
    ring.rebuild(frames=2 * T)
    ring.tick()
    assert ring.steps == 4 and ring.shift == 1.5 and ring.frames == 2 * T


class _RecordingDenoiser(DenoiserWrapper):
    def __init__(self, inner):
        super().__init__(inner)
        self.inputs = []

    def velocity(self, x, t, cond):
        self.inputs.append((x.data_ptr(), t.data_ptr()))
        return super().velocity(x, t, cond)


def test_tick_assembles_rows_in_persistent_buffers(denoiser):
    """The batched input and each slot's noise live in buffers reused from tick to tick."""
    recorder = _RecordingDenoiser(denoiser)
    ring = make_ring(recorder, depth=4)
    ring.state.set("solver", "sde")
    births = iter(range(10**6))
    ring.feed = lambda: Request(cond=0, seed=next(births))
    drain(ring, 4)
    slot = ring.slots[0]
    noise_buffers = set()
    while ring.slots[0] is slot:
        ring.tick()
        noise_buffers.add(slot.noise.data_ptr())
    drain(ring, 12)
    assert len(recorder.inputs) >= 20 and len(set(recorder.inputs)) == 1
    assert len(noise_buffers) == 1


def test_loop_length_rebuild_resizes_state_curves(denoiser):
    ring = make_ring(denoiser)
    ring.state.set("velocity_scale", torch.linspace(0, 1, T))
    ring.rebuild(frames=2 * T)
    ring.tick()
    assert ring.frames == 2 * T and ring.state.snapshot()["velocity_scale"].shape == (1, 2 * T, 1)


def test_completion_reports_state_versions(denoiser):
    ring = make_ring(denoiser, depth=1)
    ring.submit(Request(cond=0, seed=0))
    ring.tick()
    version = ring.state.set("velocity_scale", 1.1)
    done = drain(ring, 7)[0]
    assert done.state_versions[0] == 0 and done.state_versions[1:] == (version,) * 7
    assert done.param_versions["velocity_scale"] == version


def test_near_zero_denoise_returns_the_source(denoiser):
    source = torch.randn(T, C)
    for solver in ("ode", "sde"):
        ring = make_ring(denoiser, depth=1)
        ring.state.set("solver", solver)
        ring.submit(Request(cond=0, seed=0, source=source, denoise=0.0))
        assert torch.equal(drain(ring, 8)[0].latent, source)


def test_mask_keeps_unmasked_frames(denoiser):
    source = torch.randn(T, C)
    mask = torch.zeros(T)
    mask[T // 2:] = 1.0
    ring = make_ring(denoiser, depth=1)
    ring.submit(Request(cond=0, seed=0, source=source, mask=mask))
    out = drain(ring, 8)[0].latent
    assert torch.allclose(out[: T // 2], source[: T // 2], atol=1e-5)
    assert not torch.allclose(out[T // 2:], source[T // 2:], atol=1e-2)


@pytest.mark.parametrize("solver, kw", [
    ("ode", {}),
    ("sde", {"denoise": 0.7, "with_source": True}),
    ("sde", {"cfg_mode": "full"}),
    ("ode", {"cfg_mode": "residual-initialize"}),
    ("sde", {"cfg_mode": "residual-self", "with_source": True}),
])
def test_streaming_equals_one_slot_runs_bit_for_bit(denoiser, solver, kw):
    source = torch.randn(T, C)
    with_source = kw.pop("with_source", False)

    def factory(depth):
        ring = make_ring(denoiser, depth=depth)
        ring.state.update(solver=solver, source_blend=torch.linspace(0, 1, T), guidance_scale=2.5, ode_noise=0.1)
        return ring

    requests = [Request(cond=k % 3, seed=10 + k, tag=k, source=source if with_source else None, **kw) for k in range(7)]
    assert max_abs_diff(factory, requests, depth=4) == 0.0


def test_a_first_look_is_heard_after_its_own_steps_and_full_quality_follows(denoiser):
    ring = Ring(denoiser, frames=T, channels=C, depth=2, steps=8, shift=1.0)
    version = [0]
    ring.feed = lambda: Request(cond=1, seed=3, version=version[0])
    for _ in range(12):
        ring.tick()
    cadence = ring._birth_steps, ring._last_birth_tick
    version[0] = 1
    ring.express(first_look=3)
    done = []
    for tick in range(1, 20):
        done += [(tick, c) for c in ring.tick()]
        if tick == 1:
            assert ring._birth_steps == cadence[0]            # the first look leaves the cadence alone
    new = [(tick, c) for tick, c in done if c.request.version == 1]
    first_tick, first = new[0]
    assert first.first_look and first_tick == 3 and len(first.state_versions) == 3
    full = [(tick, c) for tick, c in new if not c.first_look]
    assert full and full[0][0] <= 8 + 8 // 2 and len(full[0][1].state_versions) == 8
    assert sum(c.first_look for _, c in done) == 1
    # first_look >= the schedule's steps, or 0: one full-quality express slot
    for look in (0, 8, 12):
        ring.express(first_look=look)
        ring.tick()
        assert not any(s is not None and s.first_look for s in ring.slots)
    with pytest.raises(ValueError, match="first_look"):
        ring.express(first_look=-1)


def test_a_step_write_previews_the_nearest_slot_when_no_slot_finishes(denoiser):
    """The first tick under a new state version keeps the x0 estimate of the slot with the fewest steps
    left (x0_hat = x_t - t v vs: linear in the new velocity scale), if no slot finishes at that tick;
    the slots themselves go on exactly as without previews."""

    def run(scale, write_at, previews=True):
        ring = make_ring(denoiser)
        ring.previews = previews
        seeds = iter(range(1000))
        ring.feed = lambda: Request(cond=0, seed=next(seeds))
        done, seen = [], {}
        for tick in range(24):
            if tick == write_at:
                ring.state.set("velocity_scale", scale)
            done += ring.tick()
            seen[tick] = ring.preview
        return done, seen

    finished = {c.finished_tick for c in run(1.0, None)[0]}
    quiet = next(t for t in range(12, 24) if t not in finished)   # no slot finishes at this tick
    busy = next(t for t in range(12, 24) if t in finished)
    done, seen = run(1.5, quiet)
    plain, _ = run(1.5, quiet, previews=False)
    assert len(done) == len(plain) and all(torch.equal(a.latent, b.latent) for a, b in zip(done, plain))
    assert [t for t, p in seen.items() if p is not None] == [quiet]       # once, at the write's tick
    p = seen[quiet]
    assert p.preview and p.first_look and p.state_versions[-1] == 1 and p.finished_tick == quiet
    nearest = [c for c in done if c.born_tick == p.born_tick][0]
    assert nearest.finished_tick > quiet                                   # it had steps left
    lows, mids, highs = (run(v, quiet)[1][quiet].latent for v in (1.0, 1.5, 2.0))
    assert not torch.allclose(lows, mids)
    torch.testing.assert_close(mids - lows, highs - mids, rtol=1e-4, atol=1e-5)   # linear in vs
    assert all(p is None for p in run(1.5, busy)[1].values())             # a completion is the first look
