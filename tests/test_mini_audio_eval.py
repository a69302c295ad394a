"""Audio-domain evaluation of the mini model (issue #16): the analyzer on audio with known answers,
and the shipped model against the random-init one in decoded audio."""

import numpy as np
import pytest
import torch

from demon_nb.models.mini import audio_eval as AE
from demon_nb.models.mini import layout as L
from demon_nb.models.mini.codec import SynthCodec

torch.set_num_threads(1)
SR = L.SAMPLE_RATE
FRAMES = 250


@pytest.fixture(scope="module")
def codec():
    return SynthCodec()


def _note(raw, midi, start, length, vel=1.0):
    raw[start:start + length, midi - L.MIDI_LOW] = np.maximum(raw[start:start + length, midi - L.MIDI_LOW], vel)


def _finish(raw, level=0.8):
    """Loudness-normalize the pitched channels (as the composer does) and set dynamics."""
    norm = np.linalg.norm(raw[:, L.PITCHED], axis=1, keepdims=True)
    raw[:, L.PITCHED] = np.where(norm > 0, raw[:, L.PITCHED] / np.maximum(norm, 1e-9), 0.0)
    raw[:, L.DYNAMICS] = np.where(norm[:, 0] > 0, level, 0.0)
    return raw


def _cadence(tonic: int, mode: str) -> np.ndarray:
    """Raw latent: I-IV-V-I (i-iv-v-i) triads near middle C with the root in the bass, 2.5 s each."""
    scale = AE.SCALES[mode]
    raw = np.zeros((FRAMES, L.CHANNELS), dtype=np.float32)
    for k, degree in enumerate((0, 3, 4, 0)):
        start = k * 62
        for step in (0, 2, 4):
            pc = (tonic + scale[(degree + step) % 7]) % 12
            _note(raw, 60 + pc, start, 62, 0.7)
        _note(raw, 36 + (tonic + scale[degree]) % 12, start, 62, 1.0)
    return _finish(raw)


def _drums(bpm: float, frames: int = FRAMES) -> np.ndarray:
    """Raw latent: kick on every beat, snare on the backbeats, at ``bpm`` (frame-rounded)."""
    raw = np.zeros((frames, L.CHANNELS), dtype=np.float32)
    period = 60.0 * L.FRAME_RATE / bpm
    for k, f in enumerate(np.round(np.arange(0, frames, period)).astype(int)):
        if f < frames:
            raw[f, L.KICK] = 1.0
            raw[f, L.SNARE] = 1.0 if k % 2 else 0.0
    raw[:, L.DYNAMICS] = 0.8
    return raw


@pytest.mark.parametrize("tonic, mode", [(2, "major"), (9, "minor"), (6, "minor")])
def test_key_of_a_decoded_cadence(codec, tonic, mode):
    audio = codec.decode_raw(torch.from_numpy(_cadence(tonic, mode))[None])[0]
    mag, energy = AE.chroma(AE.harmonic(AE.to_mono(audio, SR)))
    est = AE.estimate_key(mag)
    assert est[:2] == (tonic, mode)
    assert AE.key_exact(est, tonic, mode) and AE.key_notes(est, tonic, mode)
    assert AE.scale_share(energy, tonic, mode) > 0.95
    # the key a tritone away shares only 2 of its 7 pitch classes with the cadence, neither a chord root
    assert not AE.key_notes(est, (tonic + 6) % 12, mode)
    assert AE.scale_share(energy, (tonic + 6) % 12, mode) < 0.4


def test_relative_keys_share_their_notes():
    assert AE.relative(0, "major") == (9, "minor") and AE.relative(9, "minor") == (0, "major")
    assert AE.key_notes((9, "minor"), 0, "major") and not AE.key_exact((9, "minor"), 0, "major")
    assert not AE.key_notes((4, "minor"), 0, "major")
    flat = np.ones(12)
    assert AE.scale_share(flat, 5, "minor") == pytest.approx(7 / 12)
    assert AE.estimate_key(np.roll(AE.KK_MINOR, 4))[:2] == (4, "minor")


@pytest.mark.parametrize("bpm", [84, 128])
def test_tempo_and_pulse_of_decoded_drums(codec, bpm):
    audio = codec.decode_raw(torch.from_numpy(_drums(bpm))[None])[0]
    env = AE.onset_envelope(AE.to_mono(audio, SR))
    est = AE.estimate_tempo(env)
    assert AE.tempo_error(est, bpm) < 0.03, est
    assert AE.pulse_clarity(env) > 0.45


def test_tempo_of_a_click_track_and_pulse_clarity_against_noise():
    import librosa

    sr, bpm = AE.ANALYSIS_SR, 97.0
    times = np.arange(0.0, 12.0, 60.0 / bpm)
    clicks = librosa.clicks(times=times, sr=sr, length=12 * sr)
    rng = np.random.default_rng(0)
    noise = rng.standard_normal(12 * sr).astype(np.float32) * 0.1
    env_clicks, env_noise = AE.onset_envelope(clicks), AE.onset_envelope(noise)
    assert abs(AE.estimate_tempo(env_clicks) - bpm) / bpm < 0.03
    pc_clicks, pc_noise = AE.pulse_clarity(env_clicks), AE.pulse_clarity(env_noise)
    assert pc_clicks > 0.7 and pc_noise < 0.2, (pc_clicks, pc_noise)
    assert AE.pulse_clarity(np.zeros(500)) == 0.0
    assert np.isnan(AE.estimate_tempo(np.zeros(500)))


def test_tempo_error_folds_octaves_only_by_default():
    assert AE.tempo_error(60.0, 120.0) == 0.0 and AE.tempo_error(240.0, 120.0) == 0.0
    assert AE.tempo_error(123.0, 120.0) == pytest.approx(0.025)
    assert AE.tempo_error(180.0, 120.0) == pytest.approx(0.25)  # x1.5: not an octave error
    assert AE.tempo_error(180.0, 120.0, AE.METRICAL_FACTORS) == 0.0
    assert AE.tempo_error(float("nan"), 120.0) == float("inf")


def test_melody_onsets_count_notes_and_ignore_a_haze(codec):
    rng = np.random.default_rng(3)
    chords = np.zeros((FRAMES, L.CHANNELS), dtype=np.float32)
    for start in range(0, FRAMES, 50):  # C major pad, re-attacked every 2 s
        for m in (60, 64, 67, 48):
            _note(chords, m, start, 50, 0.6)
    melody = chords.copy()
    starts = np.arange(10, 240, 23)  # 10 notes, 0.92 s apart, in the melody register
    pitches = (76, 79, 84, 81, 77, 86, 83, 79, 88, 74)
    for s, m in zip(starts, pitches):
        _note(melody, m, s, 6, 0.9)  # 0.24 s: an 8th at 125 bpm (HPSS's default 31-frame median loses it)
    haze = chords.copy()
    # every melody-register sine flickering at random, up to 20 dB below the chord notes (mini's note haze)
    haze[:, 38:54] = np.maximum(haze[:, 38:54], 0.05 * rng.random((FRAMES, 16)))
    counts = {}
    for name, raw in (("chords", chords), ("melody", melody), ("haze", haze)):
        audio = codec.decode_raw(torch.from_numpy(_finish(raw))[None])[0]
        counts[name] = len(AE.melody_onsets(AE.harmonic(AE.to_mono(audio, SR))))
    assert abs(counts["melody"] - len(starts)) <= 1, counts
    assert counts["chords"] <= 1 and counts["haze"] <= 1, counts


def test_peak_summary_and_style_classifier():
    audio = torch.zeros(2, 1000)
    audio[1, 10] = -1.25
    assert AE.peak(audio) == 1.25 and AE.peak(np.zeros((2, 4))) == 0.0
    rows = [{"peak": p, "key_exact": e, "key_notes": True, "in_scale_chroma": 0.9, "tempo_error": t,
             "tempo_error_metrical": t, "pulse_clarity": 0.5, "melody_onsets_per_s": 1.0}
            for p, e, t in ((0.5, True, 0.01), (1.5, False, 0.03), (1.01, True, float("inf")))]
    s = AE.summarize(rows)
    assert s["over_full_scale"] == 2 and s["tempo_error_median"] == 0.03
    assert s["key_exact"] == pytest.approx(2 / 3, abs=1e-4)
    rng = np.random.default_rng(0)
    centers = rng.normal(0, 5, (10, 8))
    labels = np.repeat(np.arange(10), 4)
    x = centers[labels] + rng.normal(0, 0.5, (40, 8))
    folds = np.tile([0, 1], 20)
    assert AE.style_accuracy(x, labels, folds) == 1.0
    shuffled = rng.permutation(labels)  # features carry no label: about chance
    assert AE.style_accuracy(rng.normal(0, 1, (40, 8)), shuffled, folds) < 0.4


@pytest.fixture(scope="module")
def models():
    from demon_nb.models import load
    from demon_nb.models.mini import load as load_mini

    model = load("mini")
    return model, load_mini(random_init=True, text_encoder=model.text_encoder)


def test_shipped_model_beats_random_init_in_decoded_audio(models):
    """10 held-out prompts (one per style) rendered by both models: audio key and pulse figures
    (measured: in-scale chroma 0.93 vs 0.59, key notes 0.6 vs 0.1, pulse clarity 0.31 vs 0.14)."""
    from demon_nb.bench.mini import audio_pieces, audio_rows, generate

    model, base = models
    pieces, _ = audio_pieces(10)
    prompts, metas = [c for _, c, _ in pieces], [m for _, _, m in pieces]
    figures = {}
    for name, m in (("mini", model), ("random", base)):
        latents, _ = generate(m, prompts, list(range(10)))
        raws = [m.codec.denormalize(z.float()).numpy() for z in latents]
        figures[name] = AE.summarize(audio_rows(m.codec, raws, metas))
    mini, rand = figures["mini"], figures["random"]
    assert mini["in_scale_chroma"] > 0.85 and rand["in_scale_chroma"] < 0.7, figures
    assert mini["in_scale_chroma"] > rand["in_scale_chroma"] + 0.2, figures
    assert mini["key_notes"] >= rand["key_notes"] + 0.3, figures
    assert mini["pulse_clarity"] > 1.5 * rand["pulse_clarity"], figures
    assert mini["tempo_error_median"] < 0.03 < rand["tempo_error_median"], figures


def test_the_lora_section_classifies_renders_with_the_adapter_off_and_on(tmp_path):
    from safetensors.torch import save_file

    from demon_nb.bench.mini import lora_section
    from demon_nb.models.lora import random_adapter
    from demon_nb.models.mini import load

    model = load()
    dit = model.denoiser.lora_target()
    path = tmp_path / "lora-jazz.safetensors"
    save_file(random_adapter(dit, scale=0.2), str(path))
    out = lora_section(model, str(path), "jazz", n=2)
    assert out["style"] == "jazz" and out["renders"] == 2
    assert 0.0 <= out["accuracy_off"] <= 1.0 and 0.0 <= out["accuracy_on"] <= 1.0
    assert not getattr(dit, "peft_config", None)        # the adapter is gone again: the shared model is clean
    with pytest.raises(ValueError, match="style"):
        lora_section(model, str(path), "polka", n=1)
