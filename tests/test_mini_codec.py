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


# ---------------------------------------------------------------- issue #16: bounded, gated, crisp decode


def _adversarial_raws(t=40):
    """Raw latents meant to break the bound: huge, all channels on, alternating, random huge."""
    g = torch.Generator().manual_seed(16)
    full_on = torch.ones(1, t, 64)
    full_on[..., L.DRUMS] = 1.0
    all_huge = torch.full((1, t, 64), 1e6)
    alternating = torch.full((1, t, 64), 1e4) * (2 * (torch.arange(t) % 2) - 1).float()[None, :, None]
    alternating[..., L.DYNAMICS] = 1e4
    flat_drums = torch.zeros(1, t, 64)
    flat_drums[..., L.DRUMS] = 3.0  # every drum, every frame: the plateau peak picking halves
    flat_drums[..., L.DYNAMICS] = 1.5
    chord = torch.zeros(1, t, 64)
    chord[..., L.PITCHED] = 1.0 / np.sqrt(54)  # the L2 norm the composer keeps, spread over 54 notes
    chord[..., L.BRIGHT], chord[..., L.DYNAMICS] = 1.0, 1.0
    return [full_on, all_huge, alternating, flat_drums, chord,
            torch.randn(2, t, 64, generator=g) * 1e3, torch.randn(2, t, 64, generator=g) * 3 + 1]


def test_output_is_bounded_on_adversarial_latents(codec):
    from demon_nb.models.mini.codec import OUT_CEIL

    bound = codec.mix_bound()
    assert bound == pytest.approx(2.52, abs=0.01)
    for raw in _adversarial_raws():
        mix = codec.mix_raw(raw)
        audio = codec.decode_raw(raw)
        assert torch.isfinite(audio).all()
        assert mix.abs().max() <= bound + 1e-4
        assert audio.abs().max() <= OUT_CEIL < 1.0
    for z in (torch.full((1, 30, 64), 1e5), torch.full((1, 30, 64), -1e5), torch.randn(3, 30, 64) * 50):
        assert codec.decode(z).abs().max() <= OUT_CEIL  # normalized latents, same bound


def test_drum_bound_is_reached_only_by_one_hit_at_a_time(codec):
    """Choke: hits of one drum every 2 frames (peaks after picking) never sum over one hit's worth."""
    raw = torch.zeros(1, 40, 64)
    raw[0, ::2, L.SNARE] = 5.0
    raw[..., L.DYNAMICS] = 1.0
    mix = codec.mix_raw(raw)
    from demon_nb.models.mini.codec import OUT_GAIN

    assert mix.abs().max() <= OUT_GAIN * codec.drum_bounds[1] + 1e-5
    # the second of two hits cuts the first: after the 2 ms fade, the audio is the second hit's alone
    two, one = torch.zeros(1, 12, 64), torch.zeros(1, 12, 64)
    two[0, 2, L.SNARE] = two[0, 4, L.SNARE] = one[0, 4, L.SNARE] = 1.0
    two[..., L.DYNAMICS] = one[..., L.DYNAMICS] = 1.0
    hop = codec.hop
    after = slice(4 * hop + 96, 8 * hop)
    a, b = codec.mix_raw(two)[..., after], codec.mix_raw(one)[..., after]
    assert (a - b).abs().max() < 1e-4 * b.abs().max()


def test_output_saturation_is_identity_in_the_normal_range(codec):
    from demon_nb.models.mini.codec import OUT_KNEE, saturate

    x = torch.linspace(-OUT_KNEE, OUT_KNEE, 1001)
    assert torch.equal(saturate(x, OUT_KNEE, 0.99), x)
    big = torch.tensor([0.9, 1.5, 10.0, 1e30])
    y = saturate(big, OUT_KNEE, 0.99)
    assert (y[1:] >= y[:-1]).all() and (y <= 0.99).all() and (y > OUT_KNEE).all()
    z = compose(7)[0][None]
    mix = codec.mix_raw(codec.denormalize(z))
    assert (mix.abs() <= OUT_KNEE).float().mean() > 0.999  # composer music: (almost) untouched


def test_gate_removes_haze_but_keeps_notes(codec):
    from demon_nb.models.mini.codec import GATE, note_amplitudes

    raw = torch.zeros(1, 50, 64)
    chord = [60 - L.MIDI_LOW, 64 - L.MIDI_LOW, 67 - L.MIDI_LOW]
    raw[..., L.DYNAMICS] = 0.8
    clean = raw.clone()
    clean[..., chord] = 0.55
    hazy = clean.clone()
    others = [c for c in range(54) if c not in chord]
    hazy[..., others] = torch.rand(1, 50, len(others), generator=torch.Generator().manual_seed(0)) * GATE[0]
    a = note_amplitudes(hazy[..., L.PITCHED])
    assert a[..., others].abs().max() == 0  # the haze is gone
    assert torch.allclose(a[..., chord], torch.full_like(a[..., chord], 0.55))  # the chord untouched
    assert torch.equal(codec.decode_raw(hazy), codec.decode_raw(clean))
    # the gate is a smooth fade, not a switch: amplitudes cross GATE continuously and monotonically
    ramp = torch.zeros(2001, 54)
    ramp[:, 0] = torch.linspace(0.0, 0.3, 2001)
    out = note_amplitudes(ramp)[:, 0]
    assert (out[1:] >= out[:-1]).all() and (out[1:] - out[:-1]).max() < 1e-3
    low, high = ramp[:, 0] < GATE[0], ramp[:, 0] >= GATE[1]
    assert out[low].max() == 0 and torch.equal(out[high], ramp[high, 0])


def test_loud_notes_and_dynamics_are_capped(codec):
    from demon_nb.models.mini.codec import note_amplitudes

    loud = torch.zeros(1, 20, 64)
    loud[..., [24, 28, 31]] = 2.0  # L2 norm 3.46
    loud[..., L.DYNAMICS] = 1.5
    a = note_amplitudes(loud[..., L.PITCHED])
    assert torch.allclose(torch.linalg.vector_norm(a, dim=-1), torch.ones(1, 20))
    capped = loud.clone()
    capped[..., [24, 28, 31]] = 1.0 / np.sqrt(3)
    capped[..., L.DYNAMICS] = 1.0
    torch.testing.assert_close(codec.decode_raw(loud), codec.decode_raw(capped), atol=1e-5, rtol=0)


def test_peak_picking_turns_a_smeared_block_into_hits(codec):
    from demon_nb.models.mini.codec import drum_velocities

    block = [0.0, 0.5, 0.7, 0.9, 0.8, 0.6, 0.75, 0.65, 0.5, 0.0, 0.0, 0.0]  # 0.3 s smear, peaks at 3 and 6
    raw = torch.zeros(1, 30, 64)
    raw[0, 5:5 + len(block), L.KICK] = torch.tensor(block)
    raw[..., L.DYNAMICS] = 1.0
    v = drum_velocities(raw[..., L.DRUMS])[0, :, 0]
    hits = torch.nonzero(v > 0.1).flatten().tolist()
    assert hits == [8, 11]
    assert v[8] > 0.85 and v[11] > 0.7 and v[[f for f in range(30) if f not in hits]].max() < 0.02
    # in the audio: the frame energy jumps at the two hits only, not on every frame of the 0.3 s smear
    e = codec.decode_raw(raw)[0, 0].reshape(30, codec.hop).pow(2).sum(1)
    onsets = [f for f in range(1, 30) if e[f] > 2 * e[f - 1] and e[f] > 0.05 * e.max()]
    assert onsets == [8, 11]
    # an isolated composer hit keeps its velocity; the trigger floor under the gate is silent
    single = torch.zeros(1, 9, 4)
    single[0, 4, 0], single[0, 6, 1] = 0.7, 0.3
    v = drum_velocities(single)[0]
    assert v[4, 0] == pytest.approx(0.7, abs=1e-3) and v[6, 1] < 1e-3


def test_window_exact_and_reach_on_random_and_extreme_latents(codec):
    from demon_nb.engine.decode import decode_window, reference_window
    from demon_nb.engine.receptive_field import probe_reach

    assert codec.receptive_field == (4, 1)
    g = torch.Generator().manual_seed(3)
    for latent in (torch.randn(30, 64, generator=g), torch.randn(30, 64, generator=g) * 20):
        for loop in (True, False):
            for a, b in ((0, 3), (10, 13), (27, 30), (5, 6)) + (((25, 32),) if loop else ()):
                got = decode_window(codec, latent, a, b, loop=loop)
                ref = reference_window(codec, latent, a, b, loop=loop)
                assert (got - ref).abs().max() <= 2e-5, (loop, a, b)
    for seed in range(4):  # the autograd probe measures what the codec declares
        assert probe_reach(codec, seed=seed).reach == codec.receptive_field


def _partial(audio, freq, sr=48_000):
    """Magnitude of ``audio [N]`` (Hann-windowed FFT) near ``freq`` Hz."""
    x = audio.double().numpy()
    spec = np.abs(np.fft.rfft(x * np.hanning(x.size)))
    f = np.fft.rfftfreq(x.size, 1.0 / sr)
    return spec[(f > freq - 3) & (f < freq + 3)].max()


def test_brightness_picks_the_timbre(codec):
    """Sine at low brightness, octave drawbars at high; the octaves keep the pitch class."""
    raw = torch.zeros(2, 50, 64)
    raw[:, :, 48 - L.MIDI_LOW] = 1.0  # C3
    raw[..., L.DYNAMICS] = 0.8
    raw[1, :, L.BRIGHT] = 1.0
    f0 = float(L.midi_to_hz(48))
    audio = codec.decode_raw(raw)[:, 0, 10 * 1920:40 * 1920]
    dark = [_partial(audio[0], k * f0) for k in (1, 2, 4)]
    bright = [_partial(audio[1], k * f0) for k in (1, 2, 4)]
    assert dark[1] < 1e-3 * dark[0] and dark[2] < 1e-3 * dark[0]
    assert bright[1] / bright[0] == pytest.approx(0.35, rel=0.05)
    assert bright[2] / bright[0] == pytest.approx(0.15, rel=0.05)


def test_encode_takes_the_drawbars_back_off_the_notes(codec):
    """A bright chord whose bass octaves land on its own notes (in phase) encodes to its notes."""
    raw = torch.zeros(1, 60, 64)
    for midi, vel in ((36, 1.0), (48, 0.6), (52, 0.6), (55, 0.6), (67, 0.5)):  # C2, C3 E3 G3, G4
        raw[0, :, midi - L.MIDI_LOW] = vel
    raw[0, :, L.PITCHED] /= torch.linalg.vector_norm(raw[0, :, L.PITCHED], dim=-1, keepdim=True)
    raw[..., L.DYNAMICS] = 0.8
    for b in (0.2, 0.9):
        raw[..., L.BRIGHT] = b
        enc = codec.encode_raw(codec.decode_raw(raw))[0, 15:45]
        torch.testing.assert_close(enc[:, L.PITCHED].mean(0), raw[0, 0, L.PITCHED], atol=0.03, rtol=0)
        assert enc[:, 60 - L.MIDI_LOW].max() < 0.03  # C4 = 4f of C2 and 2f of C3: no phantom note
        assert enc[:, L.BRIGHT].mean() == pytest.approx(b, rel=0.12)  # the analysis leaks 5-10 % to neighbours
        assert enc[:, L.DYNAMICS].mean() == pytest.approx(0.8, abs=0.03)
