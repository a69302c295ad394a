"""AudioOut, the browser's loop buffer as an anywidget, without a browser: messages, the ready
handshake, acks, reloads, and the transport negotiation (binary buffers, or base64 text)."""

import numpy as np
import pytest

from demon_nb.live.player import Patch, Player


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


def test_only_about_one_patch_a_second_asks_for_an_ack(monkeypatch):
    from demon_nb.live import audio_out

    clock = [100.0]
    monkeypatch.setattr(audio_out.time, "monotonic", lambda: clock[0])
    audio, sent = make_audio()
    pcm = np.zeros((2, 10), np.float32)
    audio.send_patch(Patch(0, pcm, {}, completion_id=1))          # before the first ready: no ack
    assert sent.pop()[0]["ack"] is False
    audio.ready = True
    audio.ack_every_s = 1.0
    for i, dt in enumerate((0.0, 0.3, 0.3, 0.5)):
        clock[0] += dt
        audio.send_patch(Patch(0, pcm, {}, completion_id=i + 1))
    audio.send_patch(Patch(0, pcm, {}, completion_id=-1))       # a resend from the mirror: never acked
    clock[0] += 5.0
    audio.send_patch(Patch(0, pcm, {}, completion_id=-1))
    assert [c["ack"] for c, _ in sent] == [True, False, False, True, False, False]


def test_latency_hint_is_checked_where_it_enters():
    from demon_nb.live.audio_out import AudioOut

    assert AudioOut(latency_hint="interactive").latency_hint == "interactive"
    assert AudioOut().latency_hint == "lowest"
    with pytest.raises(ValueError, match="latency_hint"):
        AudioOut(latency_hint="fast")
    audio = AudioOut()
    with pytest.raises(ValueError, match="latency_hint"):
        audio.latency_hint = "0"          # a later write is checked too (the page reads it at start)
    assert audio.latency_hint == "lowest"
