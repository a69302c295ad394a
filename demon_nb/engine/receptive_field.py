"""How far a decoder reaches: which latent frames one frame of audio depends on.

``reach = (left, right)``: the output samples of latent frame ``f`` depend only on
latent frames ``[f - left, f + right]`` (the ``Codec.receptive_field`` contract).

Two independent ways to get it, which must agree:

* :func:`analytic_reach` walks a module's temporal layers (``Conv1d``,
  ``ConvTranspose1d``, 1-D pooling and padding; weight-normed or parametrized convs
  are still ``Conv1d``) and propagates an interval of output indices back to input indices.
  Everything else (activations such as Snake, norms over channels, reshapes that
  keep the time axis) is taken as pointwise in time.
* :func:`probe_reach` measures it on a real codec: which output samples change when
  one latent frame changes (forward), and which latent frames one frame's samples
  depend on (backward, autograd).

This module imports no model; it works on any ``torch.nn.Module`` / any object
satisfying ``demon_nb.engine.protocols.Codec``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

Reach = tuple[int, int]

# modules whose output at time t can depend on the whole sequence: no finite reach
_UNBOUNDED = (nn.RNNBase, nn.MultiheadAttention, nn.TransformerEncoderLayer, nn.TransformerDecoderLayer)


@dataclass(frozen=True)
class TemporalLayer:
    """One time-axis operation: ``transposed`` False for conv/pool, True for transposed conv."""

    kernel: int
    stride: int = 1
    dilation: int = 1
    padding: int = 0
    transposed: bool = False

    def __post_init__(self):
        for name in ("kernel", "stride", "dilation"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be >= 1, got {getattr(self, name)}")
        if self.padding < 0:
            raise ValueError(f"padding: must be >= 0, got {self.padding}")


def _first(value) -> int:
    return int(value[0] if isinstance(value, (tuple, list)) else value)


def _conv_padding(module: nn.Module, kernel: int, dilation: int) -> int:
    padding = module.padding
    if padding == "valid":
        return 0
    if padding == "same":  # torch puts the odd extra sample on the right
        return (dilation * (kernel - 1)) // 2
    return _first(padding)


def layer_of(module: nn.Module) -> TemporalLayer | None:
    """The :class:`TemporalLayer` of a module, ``None`` if it is pointwise in time.

    Raises ValueError for modules with unbounded reach (RNNs, attention).
    """
    if isinstance(module, nn.ConvTranspose1d):
        k, s, d = _first(module.kernel_size), _first(module.stride), _first(module.dilation)
        return TemporalLayer(k, s, d, _first(module.padding), transposed=True)
    if isinstance(module, nn.Conv1d):
        k, s, d = _first(module.kernel_size), _first(module.stride), _first(module.dilation)
        return TemporalLayer(k, s, d, _conv_padding(module, k, d))
    if isinstance(module, (nn.AvgPool1d, nn.MaxPool1d)):
        k = _first(module.kernel_size)
        s = _first(module.stride) if module.stride is not None else k
        d = _first(getattr(module, "dilation", 1))
        return TemporalLayer(k, s, d, _first(module.padding))
    if isinstance(module, (nn.ConstantPad1d, nn.ReflectionPad1d, nn.ReplicationPad1d, nn.CircularPad1d)):
        # output i reads input i - pad_left (reflect/replicate/circular read other
        # samples only inside the padding, i.e. at the edges of the signal)
        return TemporalLayer(1, padding=int(module.padding[0]))
    if isinstance(module, _UNBOUNDED):
        raise ValueError(
            f"module: {type(module).__name__} has unbounded temporal reach; "
            "only Conv1d / ConvTranspose1d / 1-D pooling and pointwise modules can be analysed "
            "(declare the codec's receptive_field instead)"
        )
    return None


def temporal_layers(module: nn.Module) -> list[TemporalLayer]:
    """Temporal layers of ``module`` in registration order (assumed to be execution order)."""
    if not isinstance(module, nn.Module):
        raise ValueError(f"module: expected a torch.nn.Module, got {type(module).__name__}")
    layers = []
    for sub in module.modules():
        layer = layer_of(sub)
        if layer is not None:
            layers.append(layer)
    return layers


def input_span(layer: TemporalLayer, a: int, b: int) -> tuple[int, int]:
    """Input indices ``[lo, hi]`` that output indices ``[a, b]`` of one layer depend on.

    Conv/pool: output ``i`` reads inputs ``i*s - p + d*m``, ``m in [0, k)``.
    Transposed conv: input ``j`` writes outputs ``j*s - p + d*m``; so input ``j`` is
    read by ``[a, b]`` iff ``j*s`` lies in ``[a + p - d*m, b + p - d*m]`` for some m.
    Indices are on an unbounded axis (edges are the caller's business).
    """
    if a > b:
        raise ValueError(f"a, b: need a <= b, got [{a}, {b}]")
    k, s, d, p = layer.kernel, layer.stride, layer.dilation, layer.padding
    if not layer.transposed:
        return a * s - p, b * s - p + d * (k - 1)
    los, his = [], []
    for m in range(k):
        lo_t, hi_t = a + p - d * m, b + p - d * m
        lo_j, hi_j = -((-lo_t) // s), hi_t // s  # ceil, floor
        if lo_j <= hi_j:
            los.append(lo_j)
            his.append(hi_j)
    if not los:  # stride larger than the kernel's footprint: these outputs read nothing
        raise ValueError(f"layer: outputs [{a}, {b}] of {layer} depend on no input")
    return min(los), max(his)


def chain_span(layers: list[TemporalLayer], a: int, b: int) -> tuple[int, int]:
    """Propagate an output interval back through a chain of layers (last layer first)."""
    for layer in reversed(layers):
        a, b = input_span(layer, a, b)
    return a, b


def chain_reach(layers: list[TemporalLayer], hop: int) -> Reach:
    """(left, right) in latent frames for a chain whose output has ``hop`` samples per frame.

    Frame ``f``'s samples are ``[f*hop, (f+1)*hop - 1]``; for a chain whose strides
    multiply to ``hop`` the answer does not depend on ``f`` (shifting ``f`` by one
    shifts every intermediate interval by a whole number of steps).
    """
    if hop < 1:
        raise ValueError(f"hop: must be >= 1, got {hop}")
    f = 1_000_003  # far from 0 so that no floor/ceil crosses the origin oddly
    lo, hi = chain_span(layers, f * hop, (f + 1) * hop - 1)
    return f - lo, hi - f


def analytic_reach(module: nn.Module, hop: int) -> Reach:
    """Reach of a conv decoder ``[B, C, T] -> [B, A, T*hop]`` by walking its modules.

    Exact for a chain of temporal layers and for residual blocks ``x + g(x)`` whose
    branch ``g`` covers its own centre sample (Oobleck, HiFi-GAN, DAC): the skip adds
    nothing beyond the branch. For parallel branches the chain sum is an upper bound.
    """
    return chain_reach(temporal_layers(module), hop)


def codec_reach(codec: Any) -> Reach:
    """Analytic reach of a codec's ``decoder_module`` if it has one, else its declared reach."""
    module = getattr(codec, "decoder_module", None)
    if isinstance(module, nn.Module):
        return analytic_reach(module, int(codec.hop))
    return check_reach(getattr(codec, "receptive_field", None), "codec.receptive_field")


def check_reach(reach: Any, name: str = "reach") -> Reach:
    """Validate a ``(left, right)`` pair of non-negative ints."""
    try:
        left, right = (int(v) for v in reach)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: expected (left, right) non-negative ints, got {reach!r}") from None
    if left < 0 or right < 0:
        raise ValueError(f"{name}: expected (left, right) non-negative ints, got {reach!r}")
    return left, right


# ----------------------------------------------------------------- empirical probe


def _decode(codec: Any, latent: torch.Tensor) -> torch.Tensor:
    out = codec.decode(latent)
    if out.ndim != 3 or out.shape[-1] != latent.shape[1] * codec.hop:
        raise ValueError(
            f"codec: decode([1, {latent.shape[1]}, C]) returned shape {tuple(out.shape)}, "
            f"expected [1, A, {latent.shape[1] * codec.hop}]"
        )
    return out


def _nonzero_span(mask: torch.Tensor) -> tuple[int, int] | None:
    idx = torch.nonzero(mask).flatten()
    return None if idx.numel() == 0 else (int(idx[0]), int(idx[-1]))


def frames_hearing(codec: Any, latent: torch.Tensor, frame: int, method: str = "grad") -> tuple[int, int]:
    """Frames ``[lo, hi]`` whose audio changes when latent ``frame`` changes (forward probe).

    ``method="grad"``: forward-mode derivative (``torch.func.jvp``) with a random
    tangent on that frame only; an output sample is touched iff its tangent is
    non-zero. Exact: samples outside the reach get a tangent that is a sum of
    exact zeros (0 * w = 0), while inside it the tangent is a sum of tiny but
    non-zero products compared against 0, so nothing is lost to rounding.
    ``method="perturb"``: decode twice (frame replaced by other random values) and
    compare with ``!=``, tolerance 0. Sound for codecs without autograd, but a far
    sample's change can be smaller than half an ulp of its value and round away,
    so it may under-report the reach of deep random-weight nets; prefer "grad".
    """
    T = latent.shape[1]
    if not 0 <= frame < T:
        raise ValueError(f"frame: must be in [0, {T}), got {frame}")
    gen = torch.Generator().manual_seed(1234 + frame)
    bump = torch.zeros_like(latent)
    bump[:, frame] = torch.randn(latent.shape[0], latent.shape[2], generator=gen, dtype=latent.dtype)
    if method == "grad":
        _, tangent = torch.func.jvp(lambda z: _decode(codec, z), (latent,), (bump,))
        touched = (tangent != 0).flatten(0, 1).any(0)
    elif method == "perturb":
        with torch.no_grad():
            base, moved = _decode(codec, latent), _decode(codec, latent + bump)
        touched = (base != moved).flatten(0, 1).any(0)
    else:
        raise ValueError(f"method: expected 'grad' or 'perturb', got {method!r}")
    span = _nonzero_span(touched)
    if span is None:
        raise ValueError(f"codec: changing frame {frame} changed no output sample")
    return span[0] // codec.hop, span[1] // codec.hop


def frames_heard_by(codec: Any, latent: torch.Tensor, first_sample: int, last_sample: int | None = None) -> tuple[int, int]:
    """Latent frames ``[lo, hi]`` that output samples ``[first, last]`` depend on (autograd).

    Back-propagates a random cotangent supported on those samples (all audio
    channels); a latent frame is a dependency iff its gradient is non-zero (exact
    zeros outside the reach, as in :func:`frames_hearing`).
    """
    last_sample = first_sample if last_sample is None else last_sample
    n = latent.shape[1] * codec.hop
    if not 0 <= first_sample <= last_sample < n:
        raise ValueError(f"first_sample, last_sample: need 0 <= first <= last < {n}, got {first_sample}, {last_sample}")
    z = latent.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        out = _decode(codec, z)
        if not out.requires_grad:
            raise ValueError("codec: decode is not differentiable; use method='perturb'")
        gen = torch.Generator().manual_seed(4321 + first_sample)
        cot = torch.zeros_like(out)
        width = last_sample - first_sample + 1
        cot[..., first_sample : last_sample + 1] = torch.randn(*out.shape[:2], width, generator=gen, dtype=out.dtype)
        (grad,) = torch.autograd.grad(out, z, cot)
    span = _nonzero_span((grad != 0).any(-1).any(0))
    if span is None:
        raise ValueError(f"codec: samples [{first_sample}, {last_sample}] depend on no latent frame")
    return span


@dataclass(frozen=True)
class Probe:
    forward: Reach  # from which frames hear one perturbed frame
    backward: Reach  # from which frames one frame's samples depend on
    frames: int  # latent length used

    @property
    def reach(self) -> Reach:
        return max(self.forward[0], self.backward[0]), max(self.forward[1], self.backward[1])

    @property
    def agree(self) -> bool:
        return self.forward == self.backward


def probe_reach(codec: Any, *, frames: int | None = None, method: str = "grad", seed: int = 0, dtype=None) -> Probe:
    """Measure a codec's reach on a random latent (grows the latent until the edges are clear).

    Forward: perturb the middle frame ``f``; the frames whose audio changes are
    ``[f - right, f + left]``. Backward: frame ``f``'s samples depend on
    ``[f - left, f + right]``. The backward probe needs autograd; with
    ``method="perturb"`` only the forward probe runs and is reported for both.
    """
    declared = getattr(codec, "receptive_field", None)
    guess = sum(check_reach(declared, "codec.receptive_field")) if declared is not None else 8
    T = frames if frames is not None else max(16, 2 * guess + 8)
    if T < 3:
        raise ValueError(f"frames: must be >= 3, got {T}")
    dtype = dtype or torch.float32
    for _ in range(6):
        gen = torch.Generator().manual_seed(seed)
        latent = torch.randn(1, T, int(codec.channels), generator=gen, dtype=dtype)
        f = T // 2
        lo, hi = frames_hearing(codec, latent, f, method)
        if method == "grad":
            blo, bhi = frames_heard_by(codec, latent, f * codec.hop, (f + 1) * codec.hop - 1)
        else:
            blo, bhi = f - (hi - f), f + (f - lo)
        if min(lo, blo) > 0 and max(hi, bhi) < T - 1:
            return Probe(forward=(hi - f, f - lo), backward=(f - blo, bhi - f), frames=T)
        T = 2 * T + 1  # a span touching the edge may be clipped: measure again, longer
    raise ValueError(f"codec: reach did not fit in {T // 2} frames; is it finite?")


__all__ = [
    "TemporalLayer", "layer_of", "temporal_layers", "input_span", "chain_span", "chain_reach",
    "analytic_reach", "codec_reach", "check_reach", "frames_hearing", "frames_heard_by",
    "Probe", "probe_reach",
]
