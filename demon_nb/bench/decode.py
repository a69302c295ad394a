"""``python -m demon_nb bench decode --json``: windowed vs full decode, side by side.

For each codec (random-weight ACE-Step Oobleck VAE, and the built-in synthesizer
codec when it imports) on CPU fp32 under ``torch.inference_mode``:

* ``full_ms``: one decode of the whole ``loop_s`` loop (best of ``--full-repeats``);
* ``window_ms``: ``decode_window`` of ``window_s`` in the middle of the loop (best
  of ``--repeats``); ``speedup = full_ms / window_ms``;
* ``max_abs_err``: window vs the same samples of the full decode (the middle of the
  loop, where the full decode's zero-padded edges are out of reach);
* ``rf_analytic``: module walk (or the declared reach); ``rf_empirical``: autograd probe;
* ``batch4_ms`` / ``serial4_ms``: four windows at once vs one by one.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any, Callable

import torch

from demon_nb.engine.decode import decode_window, decode_windows
from demon_nb.engine.receptive_field import codec_reach, probe_reach
from . import bench_parser


def _best_ms(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    best, result = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        best = min(best, (time.perf_counter() - t0) * 1e3)
    return best, result


def _probe(codec: Any) -> list[int]:
    try:
        return list(probe_reach(codec, method="grad").reach)
    except (ValueError, RuntimeError):  # decode without autograd: finite perturbation
        return list(probe_reach(codec, method="perturb").reach)


def measure(codec: Any, loop_s: float, window_s: float, repeats: int = 3, full_repeats: int = 1, seed: int = 0) -> dict:
    """One codec's entry of the benchmark JSON."""
    frames_per_s = codec.sample_rate / codec.hop
    frames = max(1, round(loop_s * frames_per_s))
    width = max(1, round(window_s * frames_per_s))
    if width > frames:
        raise ValueError(f"window_s: {window_s} s is longer than the loop ({loop_s} s)")
    rf_analytic = list(codec_reach(codec))
    rf_empirical = _probe(codec)
    gen = torch.Generator().manual_seed(seed)
    latent = torch.randn(frames, codec.channels, generator=gen)
    start = (frames - width) // 2
    hop = codec.hop
    # mid-loop window: its margins do not reach the loop's ends, so loop=True would
    # decode the same frames; loop=False also keeps position-dependent codecs
    # (``offset``) on the full decode's time axis
    one = lambda: decode_window(codec, latent, start, start + width, loop=False)  # noqa: E731
    with torch.inference_mode():
        one()  # warm-up (allocator, kernels)
        window_ms, window = _best_ms(one, repeats)
        full_ms, full = _best_ms(lambda: codec.decode(latent[None])[0], full_repeats)
        err = (window - full[:, start * hop : (start + width) * hop]).abs().max().item()
        starts = [(start + k * width) % frames for k in range(4)]
        windows = [(s, s + width) for s in starts]
        serial_ms, _ = _best_ms(lambda: [decode_window(codec, latent, a, b) for a, b in windows], repeats)
        batch_ms, _ = _best_ms(lambda: decode_windows(codec, latent, windows), repeats)
    return {
        "loop_s": loop_s,
        "window_s": round(width / frames_per_s, 4),
        "window_frames": width,
        "full_ms": round(full_ms, 2),
        "window_ms": round(window_ms, 2),
        "speedup": round(full_ms / window_ms, 2),
        "max_abs_err": err,
        "rf_analytic": rf_analytic,
        "rf_empirical": rf_empirical,
        "rf_agree": rf_analytic == rf_empirical,
        "serial4_ms": round(serial_ms, 2),
        "batch4_ms": round(batch_ms, 2),
        "device": f"cpu {latent.dtype}, torch {torch.__version__}, {torch.get_num_threads()} threads",
    }


def _oobleck(decoder_channels: int | None):
    from demon_nb.models.oobleck import OobleckCodec

    overrides = {} if decoder_channels is None else {"decoder_channels": decoder_channels}
    return OobleckCodec.random(seed=0, **overrides)


def _mini():
    from demon_nb.models.mini.codec import SynthCodec

    return SynthCodec()


def main(argv: list[str]) -> int:
    parser = bench_parser("decode")
    parser.add_argument("--loop-seconds", type=float, default=60.0, help="loop length (default 60)")
    parser.add_argument("--window-seconds", type=float, default=1.0, help="decoded window (default 1)")
    parser.add_argument("--repeats", type=int, default=3, help="window decodes timed, best kept")
    parser.add_argument("--full-repeats", type=int, default=1, help="full decodes timed, best kept")
    parser.add_argument("--decoder-channels", type=int, default=None, help="narrower random Oobleck (default: real 128)")
    parser.add_argument("--codecs", default="oobleck,mini", help="comma list from: oobleck, mini")
    args = parser.parse_args(argv)
    for name in ("loop_seconds", "window_seconds"):
        if getattr(args, name) <= 0:
            parser.error(f"--{name.replace('_', '-')}: must be > 0")
    if args.repeats < 1 or args.full_repeats < 1:
        parser.error("--repeats/--full-repeats: must be >= 1")
    makers = {"oobleck": lambda: _oobleck(args.decoder_channels), "mini": _mini}
    chosen = [c.strip() for c in args.codecs.split(",") if c.strip()]
    bad = [c for c in chosen if c not in makers]
    if bad or not chosen:
        parser.error(f"--codecs: unknown {bad}; allowed: {sorted(makers)}")
    result: dict[str, Any] = {}
    for name in chosen:
        try:
            codec = makers[name]()
        except Exception as exc:  # the other engineer's codec may not exist yet
            result[name] = {"error": f"{type(exc).__name__}: {exc}"}
            continue
        try:
            result[name] = measure(codec, args.loop_seconds, args.window_seconds, args.repeats, args.full_repeats)
        except Exception as exc:
            result[name] = {"error": f"{type(exc).__name__}: {exc}"}
    print(json.dumps(result))
    return 0 if all("error" not in result[name] for name in chosen if name != "mini") else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
