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


def time_vector(*values):
    """One channel, one value per frame: APG norms and projections run over these (time)."""
    return torch.tensor(values, dtype=torch.float32).reshape(1, len(values), 1)


def test_apg_orthogonal_part_over_time_without_momentum_and_threshold():
    v_c, v_u = time_vector(1.0, 0.0), time_vector(0.0, -1.0)  # diff over time (1, 1): parallel (1, 0), orthogonal (0, 1)
    out = S.apg(v_c, v_u, 3.0, buffer=None, norm_threshold=0.0)
    assert torch.allclose(out, time_vector(1.0, 2.0))  # v_c + (g - 1) * (0, 1)
    with_eta = S.apg(v_c, v_u, 3.0, buffer=None, norm_threshold=0.0, eta=1.0)
    assert torch.allclose(with_eta, S.cfg(v_c, v_u, 3.0))  # eta = 1 recovers plain CFG


def test_apg_channels_are_independent():
    """Each channel is its own time vector: a channel-axis projection would mix these two."""
    v_c = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])  # channel 0 over time (1, 0), channel 1 (0, 1)
    v_u = torch.tensor([[[0.0, 0.0], [-1.0, 0.0]]])  # diff: channel 0 (1, 1), channel 1 (0, 1)
    out = S.apg(v_c, v_u, 2.0, buffer=None, norm_threshold=0.0)
    # channel 0: orthogonal (0, 1); channel 1: diff parallel to v_c -> nothing added
    assert torch.allclose(out, torch.tensor([[[1.0, 0.0], [1.0, 1.0]]]))


def test_apg_norm_threshold_over_time_and_momentum():
    v_c, v_u = time_vector(1.0, 0.0), time_vector(1.0, -10.0)  # diff (0, 10): orthogonal, norm 10 -> 2.5
    assert torch.allclose(S.apg(v_c, v_u, 2.0, None, norm_threshold=2.5), time_vector(1.0, 2.5))
    buffer = S.MomentumBuffer()
    S.apg(v_c, v_u, 2.0, buffer, momentum=-0.5, norm_threshold=0.0)
    second = S.apg(v_c, v_u, 2.0, buffer, momentum=-0.5, norm_threshold=0.0)
    # running = d + (-0.5) * d = 0.5 d = (0, 5)
    assert torch.allclose(second, time_vector(1.0, 5.0))


def test_apg_per_frame_scale():
    v_c, v_u = time_vector(1.0, 0.0), time_vector(0.0, -1.0)  # orthogonal part (0, 1)
    g = torch.tensor([1.0, 3.0]).reshape(1, 2, 1)
    assert torch.allclose(S.apg(v_c, v_u, g, None, norm_threshold=0.0), time_vector(1.0, 2.0))


@pytest.mark.parametrize("threshold", [0.0, 2.5, 0.3])
def test_apg_equals_diffusers_normalized_guidance(threshold):
    """Our APG against diffusers' own helper, called the way AceStepPipeline calls it."""
    from diffusers.guiders.adaptive_projected_guidance import MomentumBuffer, normalized_guidance

    g = torch.Generator().manual_seed(0)
    ours, theirs = S.MomentumBuffer(), MomentumBuffer(momentum=-0.75)
    for _ in range(4):  # the momentum carries across steps
        v_c, v_u = torch.randn(3, 40, 8, generator=g), torch.randn(3, 40, 8, generator=g)
        expected = normalized_guidance(v_c, v_u, guidance_scale=7.0 - 1.0, momentum_buffer=theirs, eta=0.0,
                                       norm_threshold=threshold, use_original_formulation=True, norm_dim=(1,))
        got = S.apg(v_c, v_u, 7.0, ours, momentum=-0.75, norm_threshold=threshold)
        assert (got - expected).abs().max().item() < 1e-6


def test_cfg_rescale_per_channel_norms_over_time():
    v_c = torch.randn(2, 50, 4)
    v_g = v_c * torch.tensor([3.0, 0.5, 1.0, 2.0]) + 1.0
    out = S.cfg_rescale(v_g, v_c, 1.0)
    # phi = 1: every (row, channel) time vector gets the conditional norm
    assert torch.allclose(out.norm(dim=1), v_c.norm(dim=1), rtol=1e-5)
    half = S.cfg_rescale(v_g, v_c, 0.5)
    assert torch.allclose(half, 0.5 * out + 0.5 * v_g, atol=1e-6)
    assert torch.equal(S.cfg_rescale(v_g, v_c, 0.0), v_g)


def test_x0_estimate_applies_the_velocity_scale():
    x, v = full(2.0), full(0.5)
    vs = torch.tensor([1.0, 2.0, 0.0]).reshape(1, T, 1)
    # x0_hat = x_t - t * (v * vs) = 2 - 0.4 * 0.5 * vs
    assert torch.allclose(S.x0_estimate(x, 0.4, v, vs)[0, :, 0], torch.tensor([1.8, 1.6, 2.0]))
    assert torch.equal(S.x0_estimate(x, 0.4, v, 1.0), S.x0_estimate(x, 0.4, v))


@pytest.mark.parametrize("frames", [8, 7])
def test_haar_inverse_is_identity(frames):
    x = torch.randn(2, frames, 3)
    low, high = S.haar_dwt(x)
    assert low.shape == high.shape == (2, (frames + 1) // 2, 3)
    assert torch.allclose(S.haar_idwt(low, high, frames), x, atol=1e-6)


def test_dcw_modes_by_hand():
    # one channel, two frames: L = (a + b) / sqrt2, H = (a - b) / sqrt2
    x, y = time_vector(3.0, 1.0), time_vector(1.0, 1.0)
    t = 0.5
    # x - y = (2, 0): its low band (2/sqrt2) maps back to (1, 1), its high band to (1, -1)
    assert torch.allclose(S.dcw(x, y, t, "low", s_low=0.2), time_vector(3.0 + 0.5 * 0.2, 1.0 + 0.5 * 0.2))
    assert torch.allclose(S.dcw(x, y, t, "high", s_high=0.2), time_vector(3.0 + 0.5 * 0.2, 1.0 - 0.5 * 0.2))
    both = S.dcw(x, y, t, "double", s_low=0.2, s_high=0.4)
    assert torch.allclose(both, time_vector(3.0 + 0.1 + 0.2, 1.0 + 0.1 - 0.2))
    assert torch.allclose(S.dcw(x, y, t, "pix", s_low=0.25), time_vector(3.5, 1.0))  # x + s * (x - y)
    assert torch.equal(S.dcw(x, y, t, "off"), x)


def test_dcw_per_frame_scaler_is_resampled_to_the_band():
    x, y = time_vector(3.0, 1.0, 3.0, 1.0), time_vector(1.0, 1.0, 1.0, 1.0)
    s = torch.tensor([0.2, 0.2, 0.0, 0.0]).reshape(1, 4, 1)  # first frame pair corrected, second not
    out = S.dcw(x, y, 1.0, "low", s_low=s)
    assert torch.allclose(out, time_vector(3.2, 1.2, 3.0, 1.0))


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
