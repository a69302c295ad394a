import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from demon_nb.live.player import (
    LeadEstimator, LoopMirror, Patch, Player, extrapolate_playhead, fade_samples,
    fade_weights, place, plan_window, sanitize, soft_limit, window_frames,
)

HOP = 100
LOOP = 50 * HOP


def test_plan_window_starts_at_first_frame_after_lead():
    assert plan_window(0, LOOP, 0, 500, HOP) == (0, 5)
    assert plan_window(150, LOOP, 0, 500, HOP) == (2, 7)       # ceil(150 / 100)
    assert plan_window(150, LOOP, 250, 450, HOP) == (4, 9)     # ceil(400/100), ceil(450/100) frames


def test_plan_window_wraps_around_loop_end():
    a, b = plan_window(LOOP - 150, LOOP, 0, 600, HOP)
    assert (a, b) == (49, 55)
    assert window_frames(a, b, LOOP // HOP).tolist() == [49, 0, 1, 2, 3, 4]
    # a lead that passes the loop end wraps the start frame
    assert plan_window(LOOP - 50, LOOP, 200, 100, HOP) == (2, 3)


def test_plan_window_clamps_to_whole_loop():
    a, b = plan_window(0, LOOP, 0, 10 * LOOP, HOP)
    assert b - a == LOOP // HOP


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 10 * LOOP), st.integers(0, 2 * LOOP), st.integers(1, 2 * LOOP))
def test_plan_window_properties(playhead, lead, window):
    a, b = plan_window(playhead, LOOP, lead, window, HOP)
    frames = LOOP // HOP
    assert 0 <= a < frames and a < b <= a + frames
    # the window starts at or after playhead + lead, by less than one frame
    ahead = (a * HOP - (playhead + lead)) % LOOP
    assert 0 <= ahead < HOP
    assert (b - a) * HOP >= min(window, LOOP)


@pytest.mark.parametrize("kwargs, word", [
    (dict(playhead_sample=-1), "playhead_sample"),
    (dict(loop_samples=LOOP + 1), "loop_samples"),
    (dict(window_samples=0), "window_samples"),
    (dict(hop=0), "hop"),
    (dict(lead_samples=1.5), "lead_samples"),
])
def test_plan_window_bad_input(kwargs, word):
    args = dict(playhead_sample=0, loop_samples=LOOP, lead_samples=0, window_samples=100, hop=HOP)
    args.update(kwargs)
    with pytest.raises(ValueError, match=word):
        plan_window(**args)


def test_place_splits_at_loop_end():
    assert place(100, 50, 1000) == [(100, 0, 50)]
    assert place(980, 50, 1000) == [(980, 0, 20), (0, 20, 30)]
    assert place(1980, 50, 1000) == [(980, 0, 20), (0, 20, 30)]
    with pytest.raises(ValueError, match="samples"):
        place(0, 1001, 1000)


def test_fade_weights_edges_and_partition_of_unity():
    w = fade_weights(100, 10)
    assert w[10:90].tolist() == [1.0] * 80
    assert 0 < w[0] < 0.05 and 0 < w[-1] < 0.05
    assert np.all(np.diff(w[:10]) > 0)
    # the head ramp and the tail ramp of a following patch sum to 1 (sin^2 + cos^2)
    np.testing.assert_allclose(w[:10] + w[:10][::-1], 1.0, atol=1e-6)
    assert fade_weights(6, 10).tolist() == fade_weights(6, 3).tolist()   # fade capped at N/2
    assert fade_samples(48000, 5) == 240


def test_mirror_applies_crossfade_and_wraps():
    m = LoopMirror(1000, channels=2, fade=0)
    m.apply(Patch(950, np.ones((2, 100), np.float32)))
    assert m.filled.sum() == 100 and m.filled[:50].all() and m.filled[950:].all()
    assert m.pcm[:, 950:].min() == 1.0 and m.pcm[:, :50].min() == 1.0 and m.pcm[:, 50:950].max() == 0.0
    f = LoopMirror(1000, channels=2, fade=10)
    f.apply(Patch(0, np.ones((2, 1000), np.float32)))
    f.apply(Patch(100, np.full((2, 100), 3.0, np.float32)))
    w = fade_weights(100, 10)
    np.testing.assert_allclose(f.pcm[0, 100:200], 1.0 * (1 - w) + 3.0 * w, rtol=1e-6)
    assert f.pcm[0, 99] == 1.0 and f.pcm[0, 200] == 1.0
    np.testing.assert_allclose(f.read(990, 20)[0], np.ones(20))
    assert f.fill_fraction == 1.0


def test_mirror_rejects_wrong_channels():
    with pytest.raises(ValueError, match="channels"):
        LoopMirror(100, 2).apply(Patch(0, np.zeros((1, 10), np.float32)))


def test_patch_validation():
    with pytest.raises(ValueError, match="float32"):
        Patch(0, np.zeros((2, 10)))
    with pytest.raises(ValueError, match="shape"):
        Patch(0, np.zeros(10, np.float32))
    with pytest.raises(ValueError, match="start_sample"):
        Patch(-5, np.zeros((2, 10), np.float32))
    with pytest.raises(ValueError, match="versions"):
        Patch(0, np.zeros((2, 10), np.float32), {"gain": 1.5})


def test_sanitize_counts_and_zeroes():
    x = np.array([[0.1, np.nan, np.inf], [-np.inf, 0.2, 0.3]], np.float32)
    y, n = sanitize(x)
    assert n == 3 and np.isfinite(y).all()
    np.testing.assert_allclose(y, [[0.1, 0, 0], [0, 0.2, 0.3]], rtol=1e-6)
    assert np.isnan(x[0, 1])           # input untouched


def test_soft_limit_keeps_range_and_is_identity_below_threshold():
    x = np.linspace(-20, 20, 4001, dtype=np.float32)[None]
    y, n = soft_limit(x, 0.9)
    assert np.all(np.abs(y) <= 1.0) and np.all(np.diff(y[0]) >= 0)      # bounded, monotone
    small = np.abs(x) <= 0.9
    np.testing.assert_array_equal(y[small], x[small])
    assert n == int((~small).sum())
    # slope is continuous at the knee
    eps = 1e-3
    y2, _ = soft_limit(np.array([[0.9 + eps]], np.float32), 0.9)
    assert (y2[0, 0] - 0.9) / eps == pytest.approx(1.0, abs=0.01)
    with pytest.raises(ValueError, match="threshold"):
        soft_limit(x, 1.0)
    own = x.copy()
    z, m = soft_limit(own, 0.9, inplace=True)
    assert z is own and m == n and np.array_equal(z, y)  # in place: same result, no copy
    with pytest.raises(ValueError, match="float32"):
        soft_limit(x.astype(np.float64), 0.9, inplace=True)


def test_lead_estimator_adapts_and_clamps():
    est = LeadEstimator(initial_s=0.3, margin_s=0.01, min_s=0.02, max_s=1.0, quantile=0.9)
    assert est.seconds == pytest.approx(0.3)
    for _ in range(20):
        est.observe(0.08, 0.02)
    assert est.seconds == pytest.approx(0.11)
    for _ in range(20):
        est.observe(0.25, 0.05)
    assert est.seconds == pytest.approx(0.31)
    for _ in range(5):
        est.observe(5.0, 10.0)
    assert est.seconds == 1.0
    assert est.samples(48000) == 48000
    with pytest.raises(ValueError, match="decode_s"):
        est.observe(float("nan"), 0.0)


def test_default_lead_aims_below_the_arrival():
    """Late patches fade in at the playhead (the worklet), so the lead is the p10 of the arrivals:
    nine patches in ten are heard when they arrive, none waits for a margin."""
    est = LeadEstimator()
    arrivals = np.linspace(0.02, 0.06, 16)
    for a in arrivals:
        est.observe(0.0, a)
    assert est.seconds == pytest.approx(np.quantile(arrivals, 0.1))
    assert (arrivals >= est.seconds).mean() >= 0.85  # 14 of 16


def test_extrapolate_playhead():
    assert extrapolate_playhead(100, 10.0, 10.5, 1000, 2000, True) == 600
    assert extrapolate_playhead(1900, 10.0, 10.5, 1000, 2000, True) == 400
    assert extrapolate_playhead(1900, 10.0, 10.5, 1000, 2000, False) == 1900


def test_player_first_patch_fills_loop_then_windows():
    p = Player(loop_samples=LOOP, hop=HOP, sample_rate=1000, window_s=1.0, fade_ms=0,
               lead=LeadEstimator(initial_s=0.25))
    p.report(1000, playing=True, now=0.0)
    a, b = p.plan(now=0.5)                       # playhead 1500 + lead 250 -> frame 18
    assert (a, b) == (18, 18 + LOOP // HOP)
    pcm = np.full((2, LOOP), 0.5, np.float32)
    pcm[0, 0] = np.nan
    patch = p.make_patch(a, pcm, {"gain": 3}, completion_id=7, decode_s=0.1, now=0.5)
    assert patch.start_sample == 1800 and p.nonfinite == 1 and p.mirror.filled.all()
    planned = p.plan(now=0.5)
    assert planned == (17, 27) and planned.skip == 50  # a 1 s window from the frame holding sample 1750
    window = p.make_patch(planned, np.full((2, 1000), 0.25, np.float32), {}, completion_id=8, now=0.5)
    assert window.start_sample == 1750 and window.samples == 950  # starts at the sample, not the frame
    assert p.make_patch(17, np.full((2, 1000), 0.25, np.float32), {}, 9).start_sample == 1700  # a bare frame
    p._pending.pop(8), p._pending.pop(9)
    transport = p.acked(7, now=patch_sent_plus(p, 0.05))
    assert transport is not None and p.lead.count == 1
    assert p.lead.seconds == pytest.approx(0.1 + transport / 2 + p.lead.margin_s)  # decode + one-way trip
    assert p.acked(7) is None                    # unknown / already acked


def patch_sent_plus(p, dt):
    (sent_at, _), = p._pending.values()
    return sent_at + dt


def test_player_limits_loud_patches():
    p = Player(loop_samples=LOOP, hop=HOP, sample_rate=1000)
    patch = p.make_patch(0, np.full((2, 100), 4.0, np.float32), {}, 1)
    assert 0.99 < patch.pcm.max() <= 1.0 and p.limited == 200


def test_mirror_patches_resend_filled_regions():
    m = LoopMirror(1000, 2, fade=0)
    m.apply(Patch(300, np.ones((2, 50), np.float32)))
    chunks = list(m.patches(256))
    assert [c.start_sample for c in chunks] == [256]
    assert chunks[0].pcm[:, 44:94].min() == 1.0


def test_mirror_first_fill_has_no_fade_from_silence():
    m = LoopMirror(100, channels=1, fade=10)
    m.apply(Patch(30, np.ones((1, 100), np.float32)))
    assert m.pcm.min() == 1.0


# --- AudioOut, kernel side (no browser: messages are captured) -----------------


def test_before_the_first_report_windows_rotate_through_the_loop():
    p = Player(loop_samples=LOOP, hop=HOP, sample_rate=1000, window_s=1.0, fade_ms=0)
    first = p.plan()
    assert first.b - first.a == LOOP // HOP                    # the mirror is empty: the whole loop
    p.make_patch(first, np.zeros((2, LOOP), np.float32), {}, 1)
    windows = [p.plan() for _ in range(6)]
    assert [(w.a, w.b) for w in windows[:5]] == [(0, 10), (10, 20), (20, 30), (30, 40), (40, 50)]
    assert (windows[5].a, windows[5].b) == (0, 10)             # around again
    p.report(2000, playing=True, now=0.0)                      # the browser speaks: ahead of its playhead
    ahead = p.plan(now=0.0)                                    # sample 2000 + lead 250: frame 22, 50 in
    assert (ahead.a, ahead.skip) == (22, 50)


def test_patch_budget_skips_only_unchanged_completions_sent_recently():
    p = Player(loop_samples=LOOP, hop=HOP, sample_rate=1000, window_s=1.0, patch_interval_s=0.2)
    v = {"state": 1, "submission": 0}
    assert p.due(v, now=0.0)                                   # nothing patched yet
    p.make_patch(0, np.zeros((2, 100), np.float32), v, 1)
    sent = p._last_patch[0]
    assert not p.due(dict(v), now=sent + 0.05) and p.skipped_patches == 1
    assert p.due({"state": 2, "submission": 0}, now=sent + 0.05)   # a control change is never held back
    assert p.due(dict(v), now=sent + 0.201)                     # the interval has passed
    with pytest.raises(ValueError, match="patch_interval_s"):
        Player(loop_samples=LOOP, hop=HOP, sample_rate=1000, window_s=0.5, patch_interval_s=0.5)
    always = Player(loop_samples=LOOP, hop=HOP, sample_rate=1000, patch_interval_s=0.0)
    always.make_patch(0, np.zeros((2, 100), np.float32), v, 1)
    assert always.due(dict(v)) and always.skipped_patches == 0
