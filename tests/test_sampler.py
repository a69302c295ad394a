"""The sampler's composition, path by path, against cases written out by hand from DESIGN.md section 3."""

import pytest
import torch

from demon_nb.engine import sampler
from demon_nb.engine.request import Condition, Request, prepare
from demon_nb.engine.ring import Ring
from demon_nb.engine.schedule import timesteps
from demon_nb.engine.state import SharedState
from demon_nb.models.analytic import AnalyticDenoiser
from helpers import DenoiserWrapper

T, C = 6, 2
g = torch.Generator().manual_seed(0)
X, V, EPS, SRC, TARGET = (torch.randn(1, T, C, generator=g) for _ in range(5))
VS = torch.tensor([1.0, 1.5, 0.5, 2.0, 1.0, 0.0]).reshape(1, T, 1)


def state(**values):
    return SharedState(T, C, **values).snapshot()


def request(**kw):
    return prepare(Request(cond=0, **kw), T, C, "cpu", torch.float32)


def run_step(t_c=0.6, t_n=0.3, fraction=0.5, req=None, **values):
    return sampler.step(X, V, t_c, t_n, state(**values), EPS, req or request(), fraction, want_x0=True)


def test_ode_fast_path():
    x_next, x0_hat = run_step(velocity_scale=VS)
    assert torch.allclose(x_next, X + (0.3 - 0.6) * V * VS)
    assert torch.allclose(x0_hat, X - 0.6 * (V * VS))


def test_ode_noise_on_the_fast_path():
    x_next, _ = run_step(ode_noise=0.5)
    assert torch.allclose(x_next, X - 0.3 * V + EPS * 0.5 * 0.3)


def test_sde_applies_the_velocity_scale_through_x0_hat():
    x_next, x0_hat = run_step(solver="sde", velocity_scale=VS)
    expected_x0 = X - 0.6 * (V * VS)
    assert torch.allclose(x0_hat, expected_x0)
    assert torch.allclose(x_next, 0.3 * EPS + 0.7 * expected_x0)
    plain, _ = run_step(solver="sde")
    assert (x_next - plain).abs().max() > 0.1  # the knob is alive under SDE


def test_x0_target_morph_then_ode_from_x0_with_unit_scale():
    s = torch.tensor([0.0, 0.2, 0.4, 0.6, 0.8, 1.0]).reshape(1, T, 1)
    x_next, x0_hat = run_step(req=request(x0_target=TARGET[0]), x0_target_strength=s, velocity_scale=1.5)
    expected_x0 = (1 - s) * (X - 0.6 * (V * 1.5)) + s * TARGET
    assert torch.allclose(x0_hat, expected_x0, atol=1e-6)
    v_b = (X - expected_x0) / 0.6
    assert torch.allclose(x_next, X + (0.3 - 0.6) * v_b, atol=1e-6)


def test_x0_target_gate_waits_for_the_schedule_fraction():
    req = request(x0_target=TARGET[0])
    early, _ = run_step(req=req, fraction=0.25, x0_target_strength=0.5, x0_target_gate=0.5)
    assert torch.allclose(early, X - 0.3 * V)  # gated: the fast path
    late, _ = run_step(req=req, fraction=0.5, x0_target_strength=0.5, x0_target_gate=0.5)
    assert not torch.allclose(late, early)


def test_mask_path_keeps_the_source_frames():
    m = torch.tensor([1.0, 1.0, 1.0, 0.0, 0.0, 0.0]).reshape(1, T, 1)
    req = request(source=SRC[0], mask=m.reshape(-1))
    x_next, x0_hat = run_step(req=req, velocity_scale=VS)
    expected_x0 = m * (X - 0.6 * (V * VS)) + (1 - m) * SRC
    assert torch.allclose(x0_hat, expected_x0, atol=1e-6)
    assert torch.allclose(x_next, X + (0.3 - 0.6) * (X - expected_x0) / 0.6, atol=1e-6)


@pytest.mark.parametrize("solver", ["ode", "sde"])
def test_source_blend_is_taken_whatever_the_solver(solver):
    s = torch.tensor([0.0, 0.2, 0.4, 0.6, 0.8, 1.0]).reshape(1, T, 1)
    x_next, x0_hat = run_step(req=request(source=SRC[0]), source_blend=s, solver=solver, velocity_scale=1.2)
    expected_x0 = X - 0.6 * (V * 1.2)
    assert torch.allclose(x_next, 0.3 * EPS + 0.7 * (s * expected_x0 + (1 - s) * SRC), atol=1e-6)


def test_source_blend_without_a_source_or_unset_keeps_the_ode():
    s = torch.full((T,), 0.3)
    no_source, _ = run_step(source_blend=s)
    unset, _ = run_step(req=request(source=SRC[0]))
    assert torch.allclose(no_source, X - 0.3 * V) and torch.allclose(unset, X - 0.3 * V)


@pytest.mark.parametrize("solver", ["ode", "sde"])
def test_last_step_returns_the_blend_exactly(solver):
    s = torch.tensor([0.0, 0.2, 0.4, 0.6, 0.8, 1.0]).reshape(1, T, 1)
    x_next, x0_hat = run_step(t_c=0.2, t_n=0.0, req=request(source=SRC[0]), source_blend=s, solver=solver)
    assert torch.equal(x_next, s * x0_hat + (1 - s) * SRC)
    plain, _ = run_step(t_c=0.2, t_n=0.0)
    assert torch.allclose(plain, X - 0.2 * V)


def test_dcw_after_the_step_uses_y_before_the_velocity_scale():
    x_next, _ = run_step(dcw_mode="pix", dcw_scaler=0.1, velocity_scale=1.5)
    stepped = X + (0.3 - 0.6) * V * 1.5
    y = X - 0.6 * V
    assert torch.allclose(x_next, stepped + 0.1 * (stepped - y), atol=1e-6)


class Recording(DenoiserWrapper):
    def __init__(self, inner):
        super().__init__(inner)
        self.rows = []

    def velocity(self, x, t, cond):
        self.rows.append(x.clone())
        return super().velocity(x, t, cond)


def test_negative_rows_get_the_same_mask_pre_blend():
    denoiser = Recording(AnalyticDenoiser(channels=C, labels=2))
    m = torch.tensor([1.0, 1.0, 0.0, 0.0, 1.0, 0.0])
    ring = Ring(denoiser, frames=T, channels=C, depth=1, steps=4)
    ring.state.update(guidance_scale=3.0)
    ring.submit(Request(cond=0, seed=1, source=SRC[0], mask=m, cfg_mode="full"))
    ring.tick()
    positive, negative = denoiser.rows
    slot = ring.slots[0]
    t0, keep = slot.schedule[0], m.reshape(1, T, 1)
    expected = keep * slot.initial_noise + (1 - keep) * (t0 * slot.mask_noise + (1 - t0) * SRC)
    assert torch.allclose(positive, expected) and torch.equal(positive, negative)


def test_sample_equals_the_ring_and_calls_back_every_step():
    denoiser = AnalyticDenoiser(channels=C, labels=3)
    snap = SharedState(T, C, solver="sde", guidance_scale=2.0, source_blend=torch.linspace(0, 1, T)).snapshot()
    req = request(seed=5, source=SRC[0], denoise=0.8, cfg_mode="full",
                  conditions=(Condition(cond=2, weight=0.5, start=0.0, end=0.5),))
    schedule = timesteps(6, 3.0, 0.8)
    seen = []
    alone = sampler.sample(denoiser, req, schedule, snap, frames=T, channels=C, callback=seen.append)
    ring = Ring(denoiser, frames=T, channels=C, depth=1, steps=6)
    ring.state.update(solver="sde", guidance_scale=2.0, source_blend=torch.linspace(0, 1, T))
    ring.submit(req)
    done = []
    while not done:
        done = ring.tick()
    assert torch.equal(alone, done[0].latent)
    assert [info["i"] for info in seen] == list(range(6)) and seen[0]["t"] == schedule[0]
    assert all(info["x0_hat"] is not None for info in seen)
    assert torch.equal(seen[-1]["x_next"][0], alone)


def test_guidance_interval_skips_the_negative_forward_and_the_guidance_outside_it():
    """ACE-Step's cfg_interval: guided while start <= 1 - t <= end. Outside, full CFG runs no negative
    row and the step uses the conditional velocity; residual-initialize still fills its cache at birth."""
    schedule = timesteps(4, 1.0)  # t = 1, 0.75, 0.5, 0.25: 1 - t = 0, 0.25, 0.5, 0.75
    plain = AnalyticDenoiser(channels=C, labels=2)
    counted = Recording(plain)

    def run(denoiser, mode="full", **interval):
        snap = SharedState(T, C, guidance_scale=3.0, guidance_kind="cfg", **interval).snapshot()
        seen = []
        sampler.sample(denoiser, request(seed=2, cfg_mode=mode), schedule, snap, frames=T, channels=C,
                       callback=seen.append)
        return seen

    def conditional(info):
        return sampler.forward(plain, [info["x"]], [info["t"]], [0], [None])

    interval = run(counted, cfg_interval_end=0.3)
    assert len(counted.rows) == 4 + 2  # four positive rows, negatives at 1 - t = 0 and 0.25 only
    always = run(plain)
    for i in (0, 1):  # guided, on the same trajectory as guidance at every step
        assert torch.equal(interval[i]["v"], always[i]["v"]) and not torch.equal(interval[i]["v"], conditional(interval[i]))
    for i in (2, 3):
        assert torch.equal(interval[i]["v"], conditional(interval[i]))
    empty = run(plain, cfg_interval_start=0.9, cfg_interval_end=0.1)  # from > until: never guided
    assert all(torch.equal(info["v"], conditional(info)) for info in empty)

    slot = sampler.new_slot(request(seed=2, cfg_mode="residual-initialize"), schedule, (1, T, C), "cpu", torch.float32)
    late = SharedState(T, C, guidance_scale=3.0, cfg_interval_start=0.5).snapshot()
    assert sampler.needs_negative(slot, late) and not sampler.guided_now(slot, late)
