"""``python -m demon_nb bench soak --json --seconds 600``: random control changes at 20 Hz.

The instrument runtime runs headless (tick thread, windowed decode, player) while
another thread writes random controls 20 times a second: shared-state curves and
scalars, prompts, sources, denoise, seed, depth and steps, and some invalid values
(which must be rejected with a ValueError and change nothing). Reports exceptions
(other than those rejections), RSS growth after warm-up, NaN patches, stalls
(gaps between patches over 500 ms) and the tick p50 of the same run (gaps scale with it).
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections import deque

import numpy as np
import torch

from ..live.runner import Runner
from ..models import load
from ._runtime import PlayheadClock, rss_mb
from . import bench_parser

STALL_REPORT_S = 0.5  # gaps listed with the writes just before them
PROMPTS = ["calm piano ballad in A minor, 80 bpm", "energetic techno in F major, 128 bpm", "",
           "funky bass groove in E minor, 100 bpm", "lofi hip hop in C major, 85 bpm, dreamy", "ü曲🎵 " * 20]


def random_write(rng: random.Random, model, frames: int):
    """One (control, value) pair; about one in eight is invalid on purpose."""
    curve = lambda lo, hi: [rng.uniform(lo, hi)] * frames if rng.random() < 0.5 else np.linspace(lo, hi, frames).tolist()
    choices = [
        ("velocity_scale", lambda: curve(0.5, 1.5)), ("source_blend", lambda: curve(0.0, 1.0)),
        ("guidance_scale", lambda: rng.uniform(1.0, 5.0)), ("ode_noise", lambda: rng.uniform(0.0, 0.5)),
        ("solver", lambda: rng.choice(["ode", "sde"])), ("cfg_rescale", lambda: rng.uniform(0, 1)),
        ("channel_gain", lambda: rng.uniform(0.5, 1.5)), ("denoise", lambda: rng.uniform(0.3, 1.0)),
        ("seed", lambda: rng.randrange(0, 2**31)), ("prompt_blend", lambda: rng.uniform(0, 1)),
        ("prompt_a", lambda: rng.choice(PROMPTS) if model.name != "analytic" else str(rng.randrange(4))),
        ("prompt_b", lambda: rng.choice(PROMPTS) if model.name != "analytic" else str(rng.randrange(4))),
        ("source", lambda: None if rng.random() < 0.3 else torch.randn(frames, model.denoiser.channels)),
        ("depth", lambda: rng.randint(1, 6)), ("steps", lambda: rng.randint(4, 10)),
    ]
    if rng.random() < 0.125:
        name = rng.choice(["velocity_scale", "denoise", "depth", "steps", "solver", "source_blend"])
        return name, rng.choice([float("nan"), float("inf"), -3.0, "loud", [1.0] * (frames + 1), 10**9])
    name, make = rng.choice(choices)
    return name, make()


def main(argv: list[str]) -> int:
    parser = bench_parser("soak", model="mini")
    parser.add_argument("--seconds", type=float, default=600.0)
    parser.add_argument("--rate", type=float, default=20.0, help="control changes per second")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    model = load(args.model)
    runner = Runner(model, depth=4, prompt=PROMPTS[0] if model.name != "analytic" else "1")
    PlayheadClock(runner)
    patch_times: list[float] = []
    nan_patches = [0]

    writes: deque[tuple[float, str]] = deque(maxlen=256)  # (time, control) of recent writes, to explain stalls
    stalls: list[dict] = []

    def on_patch(patch):
        now = time.monotonic()
        if patch_times and now - patch_times[-1] > STALL_REPORT_S:
            during = [name for t, name in writes if patch_times[-1] - 0.5 <= t <= now]
            stalls.append({"gap_ms": round((now - patch_times[-1]) * 1e3), "writes": during[-8:]})
        patch_times.append(now)
        if not np.isfinite(patch.pcm).all():
            nan_patches[0] += 1

    runner.on_patch(on_patch)
    stop = threading.Event()
    stats = {"changes": 0, "rejected": 0, "exceptions": 0}

    def writer():
        rng = random.Random(args.seed)
        while not stop.is_set():
            name, value = random_write(rng, model, model.frames)
            try:
                runner.set(name, value)
                writes.append((time.monotonic(), name))
                stats["changes"] += 1
            except ValueError:
                stats["rejected"] += 1
            except Exception:  # anything else is a bug
                stats["exceptions"] += 1
            stop.wait(1.0 / args.rate)

    runner.start()
    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    warmup = min(60.0, 0.2 * args.seconds)
    time.sleep(warmup)
    rss_start = rss_mb()
    time.sleep(args.seconds - warmup)
    stop.set()
    thread.join()
    runner.stop()
    rss_end = rss_mb()
    after = [t for t in patch_times if t >= patch_times[0] + warmup] if patch_times else []
    gaps = np.diff(after) if len(after) > 1 else np.array([])
    result = {
        "model": model.name, "seconds": args.seconds, "changes": stats["changes"], "rejected": stats["rejected"],
        "exceptions": stats["exceptions"] + len(runner.errors), "rss_start_mb": round(rss_start, 1),
        "rss_end_mb": round(rss_end, 1), "rss_growth_pct": round(100.0 * (rss_end - rss_start) / rss_start, 2),
        "completions": runner.completions, "rebuilds": runner.ring.rebuilds, "nan_patches": nan_patches[0],
        "tick_ms_p50": round(float(np.median(runner.tick_ms)), 2) if runner.tick_ms else None,
        "nonfinite_samples_sanitized": runner.player.nonfinite,
        "stalls_over_500ms": int((gaps > 0.5).sum()), "max_gap_ms": round(float(gaps.max()) * 1e3, 1) if gaps.size else None,
    }
    if stalls:
        result["stalls"] = stalls[:10]
    if runner.errors:
        result["first_error"] = runner.errors[0].message
    print(json.dumps(result))
    return 0
