"""SynthCodec: window exactness, declared reach, shapes, roundtrip, bad and odd audio."""

import numpy as np
import pytest
import torch

from demon_nb.engine.protocols import Codec
from demon_nb.models.mini import layout as L
from demon_nb.models.mini.codec import SynthCodec
from demon_nb.models.mini.composer import compose, compose_raw


@pytest.fixture(scope="module")
def codec():
    return SynthCodec()


def _sine(freq, seconds=1.0, sr=48_000, amp=0.3):
    n = np.arange(int(seconds * sr))
    return (amp * np.sin(2 * np.pi * freq * n / sr)).astype(np.float32)


def test_protocol_and_grid(codec):
    assert isinstance(codec, Codec)
    assert (codec.sample_rate, codec.hop, codec.channels, codec.audio_channels) == (48_000, 1920, 64, 2)


def test_decode_shape_and_determinism(codec):
    z = torch.stack([compose(1, 30)[0], compose(2, 30)[0]])
    a = codec.decode(z)
    assert a.shape == (2, 2, 30 * 1920)
    assert torch.equal(a, codec.decode(z))
    assert a.abs().max() > 0.01


def test_decoded_window_equals_full_decode(codec):
    z = compose(3, 60)[0][None]
    full = codec.decode(z)
    left, right = codec.receptive_field
    start, stop = 17, 41
    window = codec.decode(z[:, start:stop], offset=start)
    hop = codec.hop
    inner = slice((left) * hop, (stop - start - right) * hop)
    ref = full[..., start * hop:stop * hop][..., inner]
    torch.testing.assert_close(window[..., inner], ref, atol=2e-5, rtol=0)


def test_receptive_field_is_what_it_declares(codec):
    z = compose(4, 40)[0][None]
    base = codec.decode(z)
    f = 20
    z2 = z.clone()
    z2[0, f] += torch.randn(64)
    diff = (codec.decode(z2) - base).abs().amax(dim=(0, 1)).reshape(40, codec.hop).amax(1)
    left, right = codec.receptive_field
    changed = torch.nonzero(diff > 1e-6).flatten().tolist()
    assert changed, "changing a frame must change the audio"
    assert min(changed) >= f - right and max(changed) <= f + left


def test_encode_shapes(codec):
    audio = torch.randn(3, 2, 1920 * 7 + 100) * 0.1
    assert codec.encode(audio).shape == (3, 7, 64)
    assert codec.encode(audio[0]).shape == (1, 7, 64)  # [A, N]
    assert codec.encode(audio[0, 0]).shape == (1, 7, 64)  # [N] mono


@pytest.mark.parametrize("seed", [5, 6])
def test_roundtrip_correlation(codec, seed):
    z = compose(seed)[0]
    z2 = codec.encode(codec.decode(z[None]))[0]
    assert z2.shape == z.shape
    assert np.corrcoef(z.flatten(), z2.flatten())[0, 1] >= 0.9


def test_encode_recovers_the_groove_clock(codec):
    """The clock channels are silent in decode and re-fitted from the drum onsets in encode."""
    raw = compose_raw(11)[0]
    silent_clock = torch.from_numpy(raw.copy())[None]
    silent_clock[..., L.CLOCK] = 0.0
    assert torch.equal(codec.decode_raw(torch.from_numpy(raw)[None]), codec.decode_raw(silent_clock))
    clock = codec.encode_raw(codec.decode_raw(torch.from_numpy(raw)[None]))[0, :, L.CLOCK].numpy()
    assert np.corrcoef(clock.ravel(), raw[:, L.CLOCK].ravel())[0, 1] > 0.95
    no_drums = torch.from_numpy(raw.copy())[None]
    no_drums[..., L.DRUMS] = 0.0
    assert codec.encode_raw(codec.decode_raw(no_drums))[0, :, L.CLOCK].abs().max() == 0


def test_encode_finds_the_played_note(codec):
    raw = torch.zeros(1, 50, 64)
    raw[..., L.DYNAMICS] = 0.8
    raw[..., 69 - L.MIDI_LOW] = 1.0  # A4
    enc = codec.encode_raw(codec.decode_raw(raw))[0, 10:40]
    assert int(enc[:, L.PITCHED].mean(0).argmax()) == 69 - L.MIDI_LOW
    assert enc[:, L.DYNAMICS].mean() == pytest.approx(0.8, abs=0.05)


def test_short_silent_and_clipped_audio(codec):
    assert codec.encode(torch.zeros(100)).shape == (1, 1, 64)  # shorter than a hop: one frame
    silent = codec.encode_raw(torch.zeros(2, 48_000))
    assert torch.isfinite(silent).all() and silent[..., L.PITCHED].abs().max() == 0
    clipped = np.clip(_sine(440.0) * 20, -1, 1)
    enc = codec.encode_raw(torch.from_numpy(clipped))
    assert torch.isfinite(enc).all()
    assert int(enc[0, 5:20, L.PITCHED].mean(0).argmax()) == 69 - L.MIDI_LOW


def test_other_sample_rate_is_resampled(codec):
    x = _sine(440.0, 2.0, sr=44_100)
    enc = codec.encode_array(x, 44_100)
    assert enc.shape == (1, 2 * 48_000 // 1920, 64)
    raw = codec.denormalize(enc)
    assert int(raw[0, 10:40, L.PITCHED].mean(0).argmax()) == 69 - L.MIDI_LOW


@pytest.mark.parametrize("bad", ["not audio", np.zeros((5, 100)), np.array([np.nan] * 4000), np.zeros(0)])
def test_bad_audio_raises_value_error(codec, bad):
    with pytest.raises(ValueError, match="audio"):
        codec.encode(bad)


def test_bad_latent_and_offset_raise(codec):
    with pytest.raises(ValueError, match="latent"):
        codec.decode(torch.zeros(1, 10, 32))
    with pytest.raises(ValueError, match="offset"):
        codec.decode(torch.zeros(1, 10, 64), offset=-1)
    with pytest.raises(ValueError, match="sample_rate"):
        codec.encode_array(np.zeros(1000), 0)


def test_encode_file_and_not_audio_file(codec, tmp_path):
    import soundfile as sf

    wav = tmp_path / "a4.wav"
    sf.write(wav, np.stack([_sine(440.0, 1.0, 22_050)] * 2, 1), 22_050)
    raw = codec.denormalize(codec.encode_file(wav))
    assert raw.shape == (1, 25, 64)
    assert int(raw[0, 5:20, L.PITCHED].mean(0).argmax()) == 69 - L.MIDI_LOW
    junk = tmp_path / "junk.wav"
    junk.write_text("this is not audio")
    with pytest.raises(ValueError, match="path"):
        codec.encode_file(junk)
