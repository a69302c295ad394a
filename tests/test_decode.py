"""Windowed decode equals the same samples of a full decode (looped: tiled 3x, middle copy)."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from demon_nb.engine.decode import decode_window, decode_windows, reference_window, segment
from demon_nb.engine.receptive_field import analytic_reach


class ConvCodec:
    """Small float64 conv decoder: dilated convs, a 2x transposed upsampler, nonlinearities."""

    sample_rate, hop, channels, audio_channels = 1000, 2, 3, 2

    def __init__(self, reach=None):
        torch.manual_seed(0)
        self.net = nn.Sequential(
            nn.Conv1d(3, 8, 3, dilation=2, padding=2), nn.Tanh(),
            nn.ConvTranspose1d(8, 8, 4, stride=2, padding=1), nn.SiLU(),
            nn.Conv1d(8, 2, 5, dilation=3, padding=6),
        ).double()
        self.receptive_field = reach if reach is not None else analytic_reach(self.net, self.hop)

    def encode(self, audio):
        raise NotImplementedError

    def decode(self, latent, offset=0):
        return self.net(latent.double().transpose(1, 2))


SMALL = {"decoder_channels": 8, "encoder_hidden_size": 8, "decoder_input_channels": 4}  # reach unchanged


@pytest.fixture(scope="module")
def oobleck():
    from demon_nb.models.oobleck import OobleckCodec

    return OobleckCodec.random(seed=0, **SMALL)


@pytest.fixture(scope="module")
def mini():
    try:
        from demon_nb.models.mini.codec import SynthCodec
    except ImportError as exc:
        pytest.skip(f"built-in synthesizer codec not importable yet: {exc}")
    return SynthCodec()


T = 24
# head, tail, middle, wrapping past the end, the whole loop
LOOP_WINDOWS = [(0, 3), (21, 24), (10, 13), (20, 27), (0, T), (23, 24)]
PLAIN_WINDOWS = [(0, 3), (21, 24), (10, 13), (0, T), (1, 2)]


def _check(codec, latent, atol, loop_windows=LOOP_WINDOWS, plain_windows=PLAIN_WINDOWS):
    with torch.inference_mode():
        for loop, windows in ((True, loop_windows), (False, plain_windows)):
            for a, b in windows:
                got = decode_window(codec, latent, a, b, loop=loop)
                ref = reference_window(codec, latent, a, b, loop=loop)
                assert got.shape == (codec.audio_channels, (b - a) * codec.hop)
                err = (got - ref).abs().max().item()
                assert err <= atol, f"loop={loop} window [{a}, {b}): max error {err}"


def test_conv_codec_exact(seed=1):
    codec = ConvCodec()
    assert codec.receptive_field == (6, 6)  # 2 + 1 + 6/2 frames each side
    _check(codec, torch.randn(T, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(seed)), 1e-12)


def test_too_small_reach_is_not_exact():
    """The reference is sensitive: one frame less of margin shows up at the loop head."""
    codec, short = ConvCodec(), ConvCodec(reach=(5, 6))
    latent = torch.randn(T, 3, dtype=torch.float64)
    ref = reference_window(codec, latent, 0, 3)
    assert (decode_window(codec, latent, 0, 3) - ref).abs().max() < 1e-12
    assert (decode_window(short, latent, 0, 3) - ref).abs().max() > 1e-6


def test_loop_head_hears_the_tail():
    codec = ConvCodec()
    latent = torch.randn(T, 3, dtype=torch.float64)
    changed = latent.clone()
    changed[-1] += 1.0  # last frame of the loop
    looped = (decode_window(codec, latent, 0, 2) - decode_window(codec, changed, 0, 2)).abs().max()
    plain = (decode_window(codec, latent, 0, 2, loop=False) - decode_window(codec, changed, 0, 2, loop=False)).abs().max()
    assert looped > 1e-3 and plain == 0


def test_oobleck_exact(oobleck):
    """Fewer windows: every new input length costs oneDNN a fresh kernel set (~1 s here)."""
    assert oobleck.receptive_field == (9, 9)
    latent = torch.randn(T, oobleck.channels, generator=torch.Generator().manual_seed(3))
    _check(oobleck, latent, 1e-5, [(0, 3), (21, 24), (10, 13), (20, 27)], [(0, 3), (21, 24), (10, 13)])


def test_mini_exact(mini):
    latent = torch.randn(T, mini.channels, generator=torch.Generator().manual_seed(4))
    _check(mini, latent, 1e-5)


def test_batch_dim_and_segment_math():
    codec = ConvCodec()
    latents = torch.randn(2, T, 3, dtype=torch.float64)
    both = decode_window(codec, latents, 22, 26)
    assert both.shape == (2, 2, 8)
    for row in range(2):
        assert torch.allclose(both[row], decode_window(codec, latents[row], 22, 26), atol=1e-12)
    index, head = segment(1, 3, 10, (2, 1), loop=True)
    assert index.tolist() == [9, 0, 1, 2, 3] and head == 2
    index, head = segment(1, 3, 10, (2, 1), loop=False)
    assert index.tolist() == [0, 1, 2, 3] and head == 1


@pytest.mark.parametrize("loop", [True, False])
def test_decode_windows_matches_single_windows(loop):
    codec = ConvCodec()
    latents = torch.randn(3, T, 3, dtype=torch.float64)
    windows = [(0, 0, 4), (1, 20, 24), (2, 5, 7), (1, 10, 14), (2, 0, 1)]
    out = decode_windows(codec, latents, windows, loop=loop)
    for got, (row, a, b) in zip(out, windows):
        assert torch.allclose(got, decode_window(codec, latents[row], a, b, loop=loop), atol=1e-12)
    two_d = decode_windows(codec, latents[1], [(20, 24), (3, 9)], loop=loop)
    assert [w.shape[-1] for w in two_d] == [8, 12]


def test_decode_windows_position_dependent(mini):
    latents = torch.randn(2, T, mini.channels)
    windows = [(0, 0, 4), (1, 0, 4), (0, 20, 26)]
    with torch.inference_mode():
        for got, (row, a, b) in zip(decode_windows(mini, latents, windows), windows):
            assert (got - reference_window(mini, latents[row], a, b)).abs().max() <= 1e-5


def test_bad_input():
    codec = ConvCodec()
    latent = torch.randn(T, 3, dtype=torch.float64)
    with pytest.raises(ValueError, match="window"):
        decode_window(codec, latent, 5, 5)  # zero length
    with pytest.raises(ValueError, match="window"):
        decode_window(codec, latent, 5, 3)  # negative length
    with pytest.raises(ValueError, match="window"):
        decode_window(codec, latent, T, T + 2)  # starts outside the loop
    with pytest.raises(ValueError, match="window"):
        decode_window(codec, latent, -1, 2)
    with pytest.raises(ValueError, match="window"):
        decode_window(codec, latent, 0, T + 1)  # longer than the loop
    with pytest.raises(ValueError, match="window"):
        decode_window(codec, latent, 20, 26, loop=False)  # past the end without looping
    with pytest.raises(ValueError, match="latent.*channels"):
        decode_window(codec, torch.randn(T, 4), 0, 2)
    with pytest.raises(ValueError, match="latent"):
        decode_window(codec, torch.randn(T), 0, 2)
    with pytest.raises(ValueError, match="reach"):
        decode_window(codec, latent, 0, 2, reach=(-1, 0))
    with pytest.raises(ValueError, match="windows"):
        decode_windows(codec, latent, [])
    with pytest.raises(ValueError, match=r"windows\[0\].*row"):
        decode_windows(codec, latent, [(1, 0, 2)])
    with pytest.raises(ValueError, match=r"windows\[0\]"):
        decode_windows(codec, latent, [(0, 1, 2, 3)])


def test_oobleck_codec_api(oobleck, tmp_path):
    from demon_nb.models.oobleck import OobleckCodec, ace_step_vae_config

    config = ace_step_vae_config()
    assert (oobleck.sample_rate, oobleck.hop, oobleck.channels, oobleck.audio_channels) == (48000, 1920, 4, 2)
    assert config["sampling_rate"] // oobleck.hop == 25 and config["decoder_input_channels"] == 64
    audio = torch.randn(1, 2, 3 * 1920 + 100)
    with torch.inference_mode():
        latent = oobleck.encode(audio)
        assert latent.shape == (1, 3, 4)
        assert torch.equal(latent, oobleck.encode(audio))  # posterior mean: deterministic
        assert oobleck.decode(latent).shape == (1, 2, 3 * 1920)
        again = OobleckCodec.random(seed=0, **SMALL)
        assert torch.equal(again.decode(latent), oobleck.decode(latent))
        other = OobleckCodec.random(seed=1, **SMALL)
        assert not torch.equal(other.decode(latent), oobleck.decode(latent))
        oobleck.vae.save_pretrained(tmp_path / "vae")
        loaded = OobleckCodec.from_pretrained(tmp_path / "vae")
        assert torch.equal(loaded.decode(latent), oobleck.decode(latent))
    with pytest.raises(ValueError, match="path"):
        OobleckCodec.from_pretrained(tmp_path / "missing")
    with pytest.raises(ValueError, match="config_overrides"):
        OobleckCodec.random(hop=3)
    with pytest.raises(ValueError, match="encoder_hidden_size"):
        OobleckCodec.random(encoder_hidden_size=8)
    with pytest.raises(ValueError, match="latent"):
        oobleck.decode(torch.randn(1, 3, 32))
    with pytest.raises(ValueError, match="audio"):
        oobleck.encode(torch.randn(1, 1, 4000))
    with pytest.raises(ValueError, match="vae"):
        OobleckCodec(nn.Conv1d(1, 1, 1))


def test_bench_contract(capsys):
    from demon_nb.bench.decode import main

    rc = main(["--json", "--loop-seconds", "2", "--window-seconds", "0.4", "--decoder-channels", "4",
               "--repeats", "1", "--codecs", "oobleck"])
    result = json.loads(capsys.readouterr().out)
    entry = result["oobleck"]
    assert rc == 0
    keys = {"loop_s", "window_s", "full_ms", "window_ms", "speedup", "max_abs_err", "rf_analytic", "rf_empirical"}
    assert keys <= set(entry)
    assert entry["rf_analytic"] == entry["rf_empirical"] == [9, 9]
    assert entry["max_abs_err"] <= 1e-5 and entry["window_s"] == 0.4
