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
    est = LeadEstimator(initial_s=0.3, margin_s=0.01, min_s=0.02, max_s=1.0)
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

def make_audio(**kwargs):
    from demon_nb.live.audio_out import AudioOut

    audio = AudioOut(**{"loop_samples": 1000, **kwargs})
    sent = []
    audio.send = lambda content, buffers=None: sent.append((content, buffers))
    return audio, sent


def test_encode_pcm_float32_and_int16():
    from demon_nb.live.audio_out import encode_pcm

    pcm = np.array([[0.5, -1.0, 2.0], [0.0, 0.25, -0.5]], np.float32)
    np.testing.assert_array_equal(np.frombuffer(encode_pcm(pcm), "<f4").reshape(2, 3), pcm)
    ints = np.frombuffer(encode_pcm(pcm, "int16"), "<i2").reshape(2, 3)
    assert ints.tolist() == [[16384, -32767, 32767], [0, 8192, -16384]]
    with pytest.raises(ValueError, match="dtype"):
        encode_pcm(pcm, "int8")


def test_audio_out_send_patch_message():
    audio, sent = make_audio(dtype="int16")
    pcm = np.full((2, 100), 0.5, np.float32)
    audio.send_patch(Patch(1950, pcm, {"gain": 4}, completion_id=9))
    (content, buffers), = sent
    assert content["type"] == "patch" and content["start"] == 950 and content["samples"] == 100
    assert content["channels"] == 2 and content["dtype"] == "int16" and content["versions"] == {"gain": 4}
    assert content["id"] == 9 and content["fade"] == 240
    assert len(buffers) == 1 and len(buffers[0]) == 2 * 100 * 2
    with pytest.raises(ValueError, match="channels"):
        audio.send_patch(Patch(0, np.zeros((1, 10), np.float32)))
    with pytest.raises(ValueError, match="loop_samples"):
        audio.send_patch(Patch(0, np.zeros((2, 1001), np.float32)))
    with pytest.raises(ValueError, match="Patch"):
        audio.send_patch(pcm)


@pytest.mark.parametrize("kwargs, word", [
    (dict(sample_rate=1000), "sample_rate"), (dict(channels=0), "channels"),
    (dict(loop_samples=-1), "loop_samples"), (dict(volume=2.0), "volume"), (dict(dtype="f64"), "dtype"),
])
def test_audio_out_bad_arguments(kwargs, word):
    from demon_nb.live.audio_out import AudioOut

    with pytest.raises(ValueError, match=word):
        AudioOut(**{"loop_samples": 1000, **kwargs})


def test_audio_out_ready_status_ack_and_reload_resend():
    audio, sent = make_audio(sample_rate=8000)
    player = Player(loop_samples=1000, hop=100, sample_rate=8000, fade_ms=0)
    audio.attach(player)
    readies = []
    audio.on_ready(readies.append)
    audio._on_custom_msg(audio, {"type": "ready", "sample_rate": 8000}, [])
    assert audio.ready and readies == [8000] and sent == []      # first ready: nothing to resend
    late = []
    audio.on_ready(late.append)                                  # registered late: called at once
    assert late == [8000]

    patch = player.make_patch(2, np.full((2, 300), 0.1, np.float32), {"tone": 1}, 5)
    audio.send_patch(patch)
    audio._on_custom_msg(audio, {"type": "ack", "id": 5}, [])
    assert player.lead.count == 1
    audio._on_custom_msg(audio, {"type": "status", "playhead": 640, "playing": True, "rendered": 900,
                                 "silent": 3, "filled": 0.3, "rms": 0.07, "peak": 0.1, "patches": 1,
                                 "heard": {"tone": 1}, "heard_at": {"tone": 12.5}}, [])
    assert audio.playhead == 640 and audio.silent_samples == 3 and audio.fill == pytest.approx(0.3)
    assert audio.heard_versions == {"tone": 1} and audio.heard_at == {"tone": 12.5}
    assert player.playhead(now=player._clock[1]) == 640  # (playhead, reported_at, playing)

    sent.clear()
    audio._on_custom_msg(audio, {"type": "ready", "sample_rate": 8000}, [])   # page reload
    assert audio.ready_events == 2 and readies == [8000, 8000]
    resent = [c for c, _ in sent if c["type"] == "patch"]
    assert sum(c["samples"] for c in resent) == 1000             # the filled mirror, whole loop
    audio._on_custom_msg(audio, {"type": "ready", "sample_rate": 44100}, [])
    assert "44100" in audio.error


# --- AudioOut transport negotiation (binary buffers, or base64 where they are dropped) ---

def ready_with_probe(audio, sent):
    """A front end that answers probes says ready; returns the probe the kernel sent."""
    audio._on_custom_msg(audio, {"type": "ready", "sample_rate": 48000, "probe": True}, [])
    probes = [(c, b) for c, b in sent if c["type"] == "probe"]
    assert probes, sent
    return probes[-1]


def browser_answer(probe):
    """What audio_out.js answers: did the buffer arrive with the bytes named in ``b64``?"""
    import base64

    content, buffers = probe
    arrived = bytes(buffers[0]) if buffers else None
    return {"type": "probe", "nonce": content["nonce"], "binary": arrived == base64.b64decode(content["b64"])}


def patch_of(value, cid, samples=100):
    return Patch(cid * 10, np.full((2, samples), value, np.float32), {"tone": cid}, completion_id=cid)


def test_audio_out_probe_answered_ok_stays_binary():
    audio, sent = make_audio()
    assert audio.transport_encoding == "auto" and audio.encoding == "pending"
    probe = ready_with_probe(audio, sent)
    assert probe[1] and len(probe[1][0]) == 256 and audio.encoding == "pending"
    audio.send_patch(patch_of(0.5, 1))              # sent at once, binary, while the answer travels
    assert sent[-1][1] and "b64" not in sent[-1][0]
    audio._on_custom_msg(audio, browser_answer(probe), [])
    assert audio.encoding == "binary" and audio._kept == []
    n = len(sent)
    audio.send_patch(patch_of(0.25, 2))
    assert len(sent) == n + 1 and sent[-1][1] and "b64" not in sent[-1][0]   # nothing resent


@pytest.mark.parametrize("buffers", [[], [b"\x00" * 256], [bytes(range(255))]], ids=["missing", "garbled", "short"])
def test_audio_out_probe_missing_or_garbled_switches_to_base64_and_resends(buffers):
    audio, sent = make_audio()
    content, _ = ready_with_probe(audio, sent)
    audio.send_patch(patch_of(0.5, 1))
    audio.send_patch(patch_of(-0.5, 2))
    binary = [c for c, b in sent if c["type"] == "patch"]
    assert [c["id"] for c in binary] == [1, 2]
    sent.clear()
    audio._on_custom_msg(audio, browser_answer((content, buffers)), [])
    assert audio.encoding == "base64"
    assert [c["id"] for c, _ in sent] == [1, 2]              # the kept patches, in order, as text
    assert all(not b and "b64" in c for c, b in sent)
    audio.send_patch(patch_of(0.1, 3))
    assert sent[-1][0]["id"] == 3 and not sent[-1][1] and "b64" in sent[-1][0]
    assert audio._kept == [] and audio.patches_sent == 3


def test_audio_out_garbled_answers_and_stale_nonces():
    audio, sent = make_audio()
    content, _ = ready_with_probe(audio, sent)
    audio._on_custom_msg(audio, {"type": "probe", "nonce": content["nonce"] + 7, "binary": True}, [])
    assert audio.encoding == "pending"                       # not an answer to this probe
    audio._on_custom_msg(audio, {"type": "probe", "nonce": content["nonce"], "binary": "yes"}, [])
    assert audio.encoding == "base64"                        # only a literal true means binary
    audio._on_custom_msg(audio, {"type": "probe", "nonce": content["nonce"], "binary": True}, [])
    assert audio.encoding == "base64"                        # answered already


@pytest.mark.parametrize("dtype", ["float32", "int16"])
def test_audio_out_base64_patch_decodes_to_the_binary_buffer(dtype):
    import base64

    binary, sent_b = make_audio(dtype=dtype, transport_encoding="binary")
    text, sent_t = make_audio(dtype=dtype, transport_encoding="base64")
    pcm = np.random.default_rng(0).uniform(-1, 1, (2, 300)).astype(np.float32)
    for audio in (binary, text):
        audio.send_patch(Patch(5, pcm, {"tone": 2}, completion_id=4))
    (cb, bb), = sent_b
    (ct, bt), = sent_t
    assert not bt and base64.b64decode(ct.pop("b64")) == bb[0]
    assert ct == cb                                          # the rest of the message is the same


def test_audio_out_forced_encodings():
    text, sent = make_audio(transport_encoding="base64")
    assert text.encoding == "base64"
    text._on_custom_msg(text, {"type": "ready", "sample_rate": 48000, "probe": True}, [])
    assert sent == [] and text.encoding == "base64"          # no probe needed
    binary, sent = make_audio(transport_encoding="binary")
    assert binary.encoding == "binary"
    probe = ready_with_probe(binary, sent)                   # probed, to tell the user if it fails
    binary.send_patch(patch_of(0.5, 1))
    binary._on_custom_msg(binary, browser_answer((probe[0], [])), [])
    assert binary.encoding == "binary" and "transport_encoding" in binary.error
    assert binary._kept == [] and [c["type"] for c, _ in sent] == ["probe", "patch"]   # nothing resent


def test_audio_out_ready_without_probe_means_binary():
    audio, sent = make_audio()
    audio.send_patch(patch_of(0.5, 1))
    audio._on_custom_msg(audio, {"type": "ready", "sample_rate": 48000}, [])   # an older front end
    assert audio.encoding == "binary" and audio._kept == [] and len(sent) == 1


def test_audio_out_reload_renegotiates():
    audio, sent = make_audio()
    first = ready_with_probe(audio, sent)
    audio._on_custom_msg(audio, browser_answer((first[0], [])), [])
    assert audio.encoding == "base64"
    second = ready_with_probe(audio, sent)                   # page reload
    assert second[0]["nonce"] != first[0]["nonce"] and audio.encoding == "pending"
    audio._on_custom_msg(audio, browser_answer(first), [])   # a late answer to the old probe
    assert audio.encoding == "pending"
    audio._on_custom_msg(audio, browser_answer(second), [])
    assert audio.encoding == "binary" and audio.ready_events == 2


def test_audio_out_keeps_at_most_two_loops_while_pending():
    audio, sent = make_audio()                               # loop_samples=1000
    ready_with_probe(audio, sent)
    for cid in range(30):
        audio.send_patch(patch_of(0.1, cid))
    assert sum(c["samples"] for c, _ in audio._kept) <= 2000 and audio._kept[-1][0]["id"] == 29


@pytest.mark.parametrize("value", ["text", "", None, "BINARY"])
def test_audio_out_bad_transport_encoding(value):
    from demon_nb.live.audio_out import AudioOut

    with pytest.raises(ValueError, match=r"transport_encoding.*'auto', 'binary', 'base64'"):
        AudioOut(loop_samples=1000, transport_encoding=value)
