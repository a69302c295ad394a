"""``python -m demon_nb bench stream --json [--seconds 30] [--sweep]``.

The real instrument runtime headless: the runner's tick thread, windowed decode
and the player, with a simulated playhead instead of a browser. ``audio_age`` is
the time from the start of the tick that finished a completion to the moment its
patch's first sample reaches the playhead.
"""

from __future__ import annotations

import json
import time

import torch

from ..engine.request import Request
from ..engine.ring import Ring
from ..live.runner import Runner
from ..models import load
from ._runtime import PlayheadClock, cpus, percentile, rss_mb
from . import bench_parser

PROMPT = "bright house groove in A minor, 124 bpm, piano and bass"


def run_stream(model, seconds: float, depth: int) -> dict:
    runner = Runner(model, depth=depth, prompt=PROMPT if model.name != "analytic" else "1")
    PlayheadClock(runner)
    ages: list[float] = []
    loop = runner.player.loop_samples
    sr = runner.player.sample_rate

    def on_patch(patch):
        wait_s = ((patch.start_sample - runner.player.playhead()) % loop) / sr
        ages.append((time.perf_counter() - runner.last_tick_started) + wait_s)

    runner.on_patch(on_patch)
    runner.start()
    time.sleep(min(2.0, seconds / 5))  # warm-up
    runner.tick_ms.clear(), runner.decode_ms.clear(), ages.clear()
    first = runner.completions
    started = time.perf_counter()
    time.sleep(seconds)
    elapsed = time.perf_counter() - started
    completions = runner.completions - first
    runner.stop()
    return {
        "tick_ms_p50": round(percentile(runner.tick_ms, 50), 2), "tick_ms_p95": round(percentile(runner.tick_ms, 95), 2),
        "decode_ms_p50": round(percentile(runner.decode_ms, 50), 2),
        "completions_per_s": round(completions / elapsed, 2),
        "audio_age_ms_p50": round(1e3 * percentile(ages, 50), 1),
        "errors": len(runner.errors),
    }


def tick_sweep(model, loop_model, depths=(1, 2, 4, 8), loops_s=(5, 10, 20, 40), ticks: int = 24) -> dict:
    """Tick time against depth (model's loop) and against loop length (depth 4, on ``loop_model``:
    an exported network has a fixed loop length, so that sweep runs eager)."""
    cond = model.text_encoder.encode(PROMPT if model.name != "analytic" else "1")
    frames_per_s = model.codec.sample_rate / model.codec.hop

    def time_ring(depth: int, frames: int, model=model) -> float:
        ring = Ring(model.denoiser, frames=frames, channels=model.denoiser.channels, depth=depth, steps=8, stagger=False)
        births = iter(range(10**9))
        ring.feed = lambda: Request(cond=cond, seed=next(births))
        times = []
        with torch.inference_mode():
            for _ in range(ticks):
                start = time.perf_counter()
                ring.tick()
                times.append((time.perf_counter() - start) * 1e3)
        return round(percentile(times[4:], 50), 2)

    return {
        "depth": {str(d): time_ring(d, model.frames) for d in depths},
        "loop_s": {str(s): time_ring(4, int(round(s * frames_per_s)), loop_model) for s in loops_s},
        "loop_s_backend": (loop_model.backends or {}).get("denoiser", "eager"),
    }


def main(argv: list[str]) -> int:
    parser = bench_parser("stream", model="mini")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--sweep", action="store_true")
    args = parser.parse_args(argv)
    model = load(args.model)
    result = {"model": model.name, "backend": model.backends or {"denoiser": "eager", "decode": "eager"},
              "depth": args.depth, "steps": model.defaults.get("steps", 8), "seconds": args.seconds}
    result |= run_stream(model, args.seconds, args.depth)
    result |= {"rss_mb": round(rss_mb(), 1), "cpus": cpus(), "torch_threads": torch.get_num_threads()}
    if args.sweep:
        loop_model = load(args.model, backend="eager") if model.backends.get("denoiser", "eager") != "eager" else model
        result["sweep_tick_ms_p50"] = tick_sweep(model, loop_model)
    print(json.dumps(result))
    return 0
