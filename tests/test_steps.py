"""Each primitive against a case worked out by hand."""

import pytest
import torch

from demon_nb.engine import steps as S
from demon_nb.engine.curves import normalize_channel_gain, normalize_curve

T, C = 3, 2


def full(value):
    return torch.full((1, T, C), float(value))


def test_x0_estimate_and_inverse():
    x, v = full(2.0), full(0.5)
    assert torch.equal(S.x0_estimate(x, 0.4, v), full(1.8))  # 2 - 0.4 * 0.5
    assert torch.allclose(S.velocity_from_x0(x, 0.4, full(1.8)), v)


def test_euler_step_with_per_frame_velocity_scale_and_ode_noise():
    x, v, noise = full(1.0), full(2.0), full(1.0)
    vs = torch.tensor([1.0, 0.5, 0.0]).reshape(1, T, 1)
    out = S.euler_step(x, v, 0.8, 0.6, vs)
    # x + (0.6 - 0.8) * 2 * vs = 1 - 0.4 * vs
    assert torch.allclose(out[0, :, 0], torch.tensor([0.6, 0.8, 1.0]))
    with_noise = S.euler_step(x, v, 0.8, 0.6, 1.0, noise, ode_noise=0.5)
    assert torch.allclose(with_noise, full(0.6 + 1.0 * 0.5 * 0.6))


def test_sde_renoise():
    assert torch.allclose(S.sde_renoise(full(2.0), 0.25, full(-1.0)), full(0.25 * -1 + 0.75 * 2))


def test_sde_source_blend_per_frame():
    x0, src, eps = full(1.0), full(3.0), full(0.0)
    s = torch.tensor([1.0, 0.5, 0.0]).reshape(1, T, 1)
    out = S.sde_blend_step(x0, src, s, 0.5, eps)
    # 0.5 * eps + 0.5 * (s * 1 + (1 - s) * 3)
    assert torch.allclose(out[0, :, 0], torch.tensor([0.5, 1.0, 1.5]))


def test_sde_blend_s0_pins_to_noised_source_and_last_step_is_exact():
    x0, src, eps = torch.randn(1, T, C), torch.randn(1, T, C), torch.randn(1, T, C)
    pinned = S.sde_blend_step(x0, src, 0.0, 0.3, eps)
    assert torch.allclose(pinned, 0.3 * eps + 0.7 * src)
    s = torch.tensor([0.2, 0.6, 1.0]).reshape(1, T, 1)
    last = S.sde_blend_step(x0, src, s, 0.0, eps)
    assert torch.equal(last, s * x0 + (1 - s) * src)


def test_morph_x0_scalar_and_curve():
    x0, target = full(0.0), full(4.0)
    assert torch.allclose(S.morph_x0(x0, target, 0.25), full(1.0))
    a = torch.tensor([0.0, 0.5, 1.0]).reshape(1, T, 1)
    assert torch.allclose(S.morph_x0(x0, target, a)[0, :, 0], torch.tensor([0.0, 2.0, 4.0]))


def test_initial_state_variants():
    eps, src = full(1.0), full(3.0)
    assert torch.equal(S.initial_state(eps), eps)
    assert torch.allclose(S.initial_state(eps, src, t0=0.75), full(0.75 + 0.25 * 3))
    c = torch.tensor([1.0, 0.5, 0.0]).reshape(1, T, 1)
    out = S.initial_state(eps, src, t0=0.75, init_noise=c)
    assert torch.allclose(out[0, :, 0], torch.tensor([1.0, 2.0, 3.0]))


def test_latent_mask_pre_and_post():
    x_t, orig, eps_m = full(5.0), full(2.0), full(1.0)
    m = torch.tensor([1.0, 0.0, 0.5]).reshape(1, T, 1)
    pre = S.mask_input(x_t, m, orig, 0.4, eps_m)
    kept = 0.4 * 1 + 0.6 * 2  # t_c * eps_m + (1 - t_c) * x_orig = 1.6
    assert torch.allclose(pre[0, :, 0], torch.tensor([5.0, kept, 0.5 * 5 + 0.5 * kept]))
    post = S.mask_x0(full(9.0), m, orig)
    assert torch.allclose(post[0, :, 0], torch.tensor([9.0, 2.0, 5.5]))


def test_blend_velocities_per_frame_and_zero_weights():
    v1, v2 = full(1.0), full(3.0)
    w1 = torch.tensor([1.0, 1.0, 0.0]).reshape(1, T, 1)
    w2 = torch.tensor([0.0, 1.0, 0.0]).reshape(1, T, 1)
    out = S.blend_velocities([v1, v2], [w1, w2])
    assert torch.allclose(out[0, :, 0], torch.tensor([1.0, 2.0, 0.0]))  # all-zero weights -> 0 / 1e-8 * 0
    assert torch.allclose(S.blend_velocities([v1, v2], [1.0, 3.0]), full(2.5))


def test_condition_step_ranges():
    assert S.condition_active(0.0, 0.0, 0.5) and not S.condition_active(0.5, 0.0, 0.5)
    assert S.condition_active(0.875, 0.5, 1.0)


def test_cfg_formula():
    assert torch.allclose(S.cfg(full(2.0), full(1.0), 3.0), full(4.0))


def test_apg_orthogonal_part_only_without_momentum_and_threshold():
    v_c = torch.tensor([[[1.0, 0.0]]])
    v_u = torch.tensor([[[0.0, -1.0]]])  # diff = (1, 1): parallel (1, 0), orthogonal (0, 1)
    out = S.apg(v_c, v_u, 3.0, buffer=None, norm_threshold=0.0)
    assert torch.allclose(out, torch.tensor([[[1.0, 2.0]]]))  # v_c + (g - 1) * (0, 1)
    with_eta = S.apg(v_c, v_u, 3.0, buffer=None, norm_threshold=0.0, eta=1.0)
    assert torch.allclose(with_eta, S.cfg(v_c, v_u, 3.0))  # eta = 1 recovers plain CFG


def test_apg_norm_threshold_and_momentum():
    v_c = torch.tensor([[[1.0, 0.0]]])
    v_u = torch.tensor([[[1.0, -10.0]]])  # diff (0, 10): orthogonal, norm 10 -> clipped to 2.5
    assert torch.allclose(S.apg(v_c, v_u, 2.0, None, norm_threshold=2.5), torch.tensor([[[1.0, 2.5]]]))
    buffer = S.MomentumBuffer()
    S.apg(v_c, v_u, 2.0, buffer, momentum=-0.5, norm_threshold=0.0)
    second = S.apg(v_c, v_u, 2.0, buffer, momentum=-0.5, norm_threshold=0.0)
    # running = d + (-0.5) * d = 0.5 d = (0, 5)
    assert torch.allclose(second, torch.tensor([[[1.0, 5.0]]]))


def test_apg_per_frame_scale():
    v_c = torch.tensor([[[1.0, 0.0], [1.0, 0.0]]])
    v_u = torch.tensor([[[1.0, -1.0], [1.0, -1.0]]])
    g = torch.tensor([1.0, 3.0]).reshape(1, 2, 1)
    out = S.apg(v_c, v_u, g, None, norm_threshold=0.0)
    assert torch.allclose(out, torch.tensor([[[1.0, 0.0], [1.0, 2.0]]]))


def test_cfg_rescale_matches_std():
    v_c = torch.randn(1, 50, 4)
    v_g = 3.0 * v_c + 1.0
    out = S.cfg_rescale(v_g, v_c, 1.0)
    assert torch.allclose(out.std(), v_c.std(), atol=1e-5)
    assert torch.equal(S.cfg_rescale(v_g, v_c, 0.0), v_g)


def test_channel_gain():
    g = torch.tensor([2.0, 0.0]).reshape(1, 1, C)
    out = S.channel_gain(full(1.0), g)
    assert torch.equal(out[..., 0], torch.full((1, T), 2.0)) and torch.equal(out[..., 1], torch.zeros(1, T))


def test_curve_normalization():
    assert normalize_curve("velocity_scale", 2, T, 0, 4) == 2.0
    curve = normalize_curve("velocity_scale", [1, 2, 3], T, 0, 4)
    assert curve.shape == (1, T, 1)
    for bad, msg in (([1, 2], "length 3"), ([1, float("nan"), 2], "finite"), (9, r"\[0, 4\]"), ("x", "velocity_scale"),
                     ([[1, 2, 3], [1, 2, 3]], "shape")):
        with pytest.raises(ValueError, match=msg):
            normalize_curve("velocity_scale", bad, T, 0, 4)


def test_channel_gain_normalization():
    assert normalize_channel_gain("channel_gain", [1.0, 0.5], T, C, 0, 4).shape == (1, 1, C)
    assert normalize_channel_gain("channel_gain", torch.ones(T, C), T, C, 0, 4).shape == (1, T, C)
    with pytest.raises(ValueError, match="channel_gain"):
        normalize_channel_gain("channel_gain", torch.ones(4, 7), T, C, 0, 4)
