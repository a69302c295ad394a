"""Receptive field: analytic module walk vs hand-derived answers vs the empirical probe."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from demon_nb.engine import receptive_field as rf
from demon_nb.engine.protocols import Codec


class ConvCodec:
    """A conv net ``[B, C, T] -> [B, A, T*hop]`` behind the Codec protocol."""

    sample_rate = 1000

    def __init__(self, net: nn.Module, hop: int, channels: int = 3, audio_channels: int = 1, reach=None):
        self.net, self.hop, self.channels, self.audio_channels = net.double(), hop, channels, audio_channels
        self.receptive_field = reach if reach is not None else rf.analytic_reach(net, hop)

    @property
    def decoder_module(self):
        return self.net

    def encode(self, audio):
        raise NotImplementedError

    def decode(self, latent):
        return self.net(latent.to(torch.float64).transpose(1, 2))


class Residual(nn.Module):
    def __init__(self, ch: int, dilation: int):
        super().__init__()
        self.conv = nn.utils.parametrizations.weight_norm(nn.Conv1d(ch, ch, 3, dilation=dilation, padding=dilation))

    def forward(self, x):
        return x + self.conv(torch.sin(x))


def _dilated(ch=3):
    return nn.Sequential(*[m for d in (1, 2, 4) for m in (nn.Conv1d(ch, ch, 3, dilation=d, padding=d), nn.Tanh())])


def _seeded(make):
    torch.manual_seed(0)
    return make()


# (network, hop, reach derived by hand)
KNOWN = {
    # 1 + 2 + 4 samples each side at hop 1
    "dilated 1/2/4": (lambda: _dilated(), 1, (7, 7)),
    # frame f -> samples 2f, 2f+1; j*2 - 1 + m = i, m in 0..3 -> j in {f-1, f} and {f, f+1}
    "convT k4 s2 p1": (lambda: nn.ConvTranspose1d(3, 1, 4, stride=2, padding=1), 2, (1, 1)),
    # no overlap between frames
    "convT k2 s2": (lambda: nn.ConvTranspose1d(3, 1, 2, stride=2), 2, (0, 0)),
    # conv k3 (1 frame) -> convT k4 s2 p1 (1 frame) -> conv k3 at 2x (rounds into 0 more frames)
    "conv-upsample-conv": (
        lambda: nn.Sequential(
            nn.Conv1d(3, 4, 3, padding=1), nn.GELU(), nn.ConvTranspose1d(4, 4, 4, 2, 1), nn.ELU(), nn.Conv1d(4, 1, 3, padding=1)
        ),
        2,
        (2, 2),
    ),
    # causal: left pad 2, kernel 3 -> only the past
    "causal k3": (lambda: nn.Sequential(nn.ConstantPad1d((2, 0), 0.0), nn.Conv1d(3, 1, 3)), 1, (2, 0)),
    # x + conv(x) with dilation 1 then 3: 1 + 3 each side (weight-normed convs)
    "residual 1/3": (lambda: nn.Sequential(Residual(3, 1), Residual(3, 3)), 1, (4, 4)),
    # stride-2 conv k4 p1 (downsampler) after a 4x transposed upsampler: hop 2
    "convT s4 then conv s2": (
        lambda: nn.Sequential(nn.ConvTranspose1d(3, 2, 8, 4, 2), nn.Conv1d(2, 1, 4, stride=2, padding=1)),
        2,
        (1, 1),
    ),
}


@pytest.mark.parametrize("name", sorted(KNOWN))
def test_analytic_reach_of_hand_built_stacks(name):
    make, hop, expected = KNOWN[name]
    assert rf.analytic_reach(_seeded(make), hop) == expected


@pytest.mark.parametrize("name", sorted(KNOWN))
def test_probe_agrees_with_analytic_both_directions(name):
    make, hop, expected = KNOWN[name]
    codec = ConvCodec(_seeded(make), hop)
    assert isinstance(codec, Codec)
    probe = rf.probe_reach(codec, dtype=torch.float64)
    assert probe.forward == expected and probe.backward == expected and probe.agree


def test_perturb_method_agrees_in_float64():
    codec = ConvCodec(_seeded(KNOWN["conv-upsample-conv"][0]), 2)
    assert rf.probe_reach(codec, method="perturb", dtype=torch.float64).reach == (2, 2)


def test_input_span_math():
    conv = rf.TemporalLayer(kernel=3, dilation=2, padding=2)
    assert rf.input_span(conv, 10, 10) == (8, 12)
    up = rf.TemporalLayer(kernel=4, stride=2, padding=1, transposed=True)
    assert rf.input_span(up, 6, 6) == (2, 3)  # 2j - 1 + m = 6: j=3 (m=1), j=2 (m=3)
    assert rf.input_span(up, 7, 7) == (3, 4)
    strided = rf.TemporalLayer(kernel=4, stride=2, padding=1)
    assert rf.input_span(strided, 3, 4) == (5, 10)
    assert rf.chain_span([conv, strided], 3, 3) == (3, 10)


def test_transposed_gap_raises():
    sparse = rf.TemporalLayer(kernel=1, stride=3, transposed=True)  # outputs 1, 2 of every 3 read nothing
    assert rf.input_span(sparse, 3, 3) == (1, 1)
    with pytest.raises(ValueError, match="layer"):
        rf.input_span(sparse, 4, 5)


def test_one_sample_depends_on_fewer_frames_than_its_frame():
    net = _seeded(KNOWN["conv-upsample-conv"][0])
    codec = ConvCodec(net, 2)
    latent = torch.randn(1, 20, 3, dtype=torch.float64)
    layers = rf.temporal_layers(net)
    for sample in (20, 21):
        assert rf.frames_heard_by(codec, latent, sample) == rf.chain_span(layers, sample, sample)


class MovingAverageCodec:
    """Not a conv module: each frame's audio is the mean of frames [f - 2, f + 1], repeated hop times."""

    sample_rate, hop, channels, audio_channels = 100, 4, 2, 1

    def __init__(self, reach=(2, 1)):
        self.receptive_field = reach

    def encode(self, audio):
        raise NotImplementedError

    def decode(self, latent):
        x = nn.functional.pad(latent.sum(-1), (2, 1))
        avg = x.unfold(-1, 4, 1).mean(-1)
        return avg.repeat_interleave(self.hop, dim=-1)[:, None]


@pytest.mark.parametrize("method", ["grad", "perturb"])
def test_probe_verifies_a_declared_reach(method):
    codec = MovingAverageCodec()
    assert rf.codec_reach(codec) == (2, 1)  # no decoder_module: the declaration
    assert rf.probe_reach(codec, method=method, dtype=torch.float64).reach == (2, 1)


def test_probe_catches_a_wrong_declaration():
    codec = MovingAverageCodec(reach=(1, 1))
    assert rf.probe_reach(codec).reach != codec.receptive_field


def test_probe_grows_latent_past_a_small_guess():
    codec = ConvCodec(_seeded(lambda: _dilated()), 1, reach=(0, 0))  # declared far too small
    probe = rf.probe_reach(codec, frames=5, dtype=torch.float64)
    assert probe.reach == (7, 7) and probe.frames > 15


def test_unbounded_modules_and_bad_values_raise():
    with pytest.raises(ValueError, match="unbounded"):
        rf.analytic_reach(nn.Sequential(nn.Conv1d(2, 2, 3), nn.GRU(2, 2)), 1)
    with pytest.raises(ValueError, match="module"):
        rf.analytic_reach("not a module", 1)
    with pytest.raises(ValueError, match="hop"):
        rf.chain_reach([], 0)
    with pytest.raises(ValueError, match="kernel"):
        rf.TemporalLayer(kernel=0)
    with pytest.raises(ValueError, match="reach"):
        rf.check_reach((1, -1))
    with pytest.raises(ValueError, match="method"):
        rf.probe_reach(MovingAverageCodec(), method="guess")


def test_same_padding_string():
    net = nn.Conv1d(1, 1, 4, padding="same")  # total 3: 1 left, 2 right
    assert rf.analytic_reach(net, 1) == (1, 2)
    assert rf.probe_reach(ConvCodec(net, 1, channels=1), dtype=torch.float64).reach == (1, 2)


def test_oobleck_reach_is_nine_frames_each_side():
    from demon_nb.models.oobleck import OobleckCodec

    # same geometry as the real VAE, narrow channels
    codec = OobleckCodec.random(decoder_channels=4, encoder_hidden_size=8, decoder_input_channels=4)
    assert codec.receptive_field == (9, 9)
    probe = rf.probe_reach(codec)
    assert probe.forward == (9, 9) and probe.backward == (9, 9)
    # one output sample depends on 17-18 frames; the analysis and autograd agree on which
    latent = torch.randn(1, 40, 4)
    layers = rf.temporal_layers(codec.decoder_module)
    for sample in (20 * 1920, 20 * 1920 + 1919):
        lo, hi = rf.frames_heard_by(codec, latent, sample)
        assert (lo, hi) == rf.chain_span(layers, sample, sample)
        assert hi - lo + 1 in (17, 18)
