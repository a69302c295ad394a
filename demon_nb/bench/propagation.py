"""``python -m demon_nb bench propagation --json``: the propagation classes, measured.

Counterfactual runs on the analytic Gaussian-mixture denoiser (exact, fast), see
``demon_nb.engine.propagation``.
"""

from __future__ import annotations

import json
import statistics

import torch

from ..engine.propagation import denoise_sweep, measure_classes, time_ticks
from ..engine.request import Request
from ..engine.ring import Ring
from ..models.analytic import load
from . import bench_parser


def main(argv: list[str]) -> int:
    parser = bench_parser("propagation")
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--sweep-ticks", type=int, default=64)
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    model = load(frames=64)
    sources = {}

    def make_request(birth: int, controls: dict) -> Request:
        frames = controls["frames"]
        if frames not in sources:  # the loop-length probe changes the latent shape
            sources[frames] = model.denoiser.sample_data(label=1, frames=frames, seed=123)
        return Request(cond=birth % 4, seed=birth, source=sources[frames], denoise=controls["denoise"],
                       steps=controls["steps"], tag=birth)

    def make_ring(mode: str = "per_slot") -> Ring:
        return Ring(model.denoiser, frames=model.frames, channels=model.denoiser.channels,
                    depth=args.depth, steps=args.steps, mode=mode)

    classes = measure_classes(make_ring, make_request, args.steps, args.depth)
    warmup = 2 * args.steps
    sweep = {
        "per_slot_completions": denoise_sweep(make_ring, make_request, args.sweep_ticks, warmup),
        "baseline_completions": denoise_sweep(lambda: make_ring("global"), make_request, args.sweep_ticks, warmup),
        "ticks": args.sweep_ticks,
    }
    tick_ms = statistics.median(time_ticks(make_ring(), make_request, 64)[8:])
    result = {
        "model": "analytic", "depth": args.depth, "steps": args.steps, "tick_ms": round(tick_ms, 3),
        "classes": classes,
        "sweep": sweep,
    }
    print(json.dumps(result))
    return 0
