"""``python -m demon_nb bench identity --json [--model NAME]``: streaming == batch, bit for bit.

ODE, SDE (with a source and a per-frame source-blend curve) and CFG (full and
residual) paths: a depth-D stream with staggered births against each request
run alone at depth 1. With the analytic model the differences must be exactly 0.
"""

from __future__ import annotations

import json

import torch

from ..engine.identity import max_abs_diff
from ..engine.request import Request
from ..engine.ring import Ring
from ..models import load
from . import bench_parser


def main(argv: list[str]) -> int:
    parser = bench_parser("identity", model="analytic")
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--requests", type=int, default=8)
    args = parser.parse_args(argv)
    torch.set_grad_enabled(False)
    model = load(args.model)
    frames, channels = model.frames, model.denoiser.channels
    prompts = [model.text_encoder.encode(p) for p in _prompts(args.model)]
    g = torch.Generator().manual_seed(7)
    source = torch.randn(frames, channels, generator=g)
    curve = torch.linspace(0.0, 1.0, frames)

    def make_ring(solver: str):
        def factory(depth: int) -> Ring:
            ring = Ring(model.denoiser, frames=frames, channels=channels, depth=depth,
                        steps=model.defaults.get("steps", 8), shift=model.defaults.get("shift", 3.0))
            ring.state.update(solver=solver, source_blend=curve, guidance_scale=3.0)
            return ring
        return factory

    def requests(**kw):
        return [Request(cond=prompts[i % len(prompts)], seed=100 + i, tag=i, **kw) for i in range(args.requests)]

    result = {
        "model": args.model, "depth": args.depth,
        "ode_max_abs_diff": max_abs_diff(make_ring("ode"), requests(), args.depth),
        "sde_max_abs_diff": max_abs_diff(make_ring("sde"), requests(source=source, denoise=0.8), args.depth),
        "cfg_max_abs_diff": max(max_abs_diff(make_ring("sde"), requests(cfg_mode=mode), args.depth)
                                for mode in ("full", "residual-initialize", "residual-self")),
    }
    print(json.dumps(result))
    return 0


def _prompts(model: str) -> list[str]:
    if model == "analytic":
        return ["0", "1", "2", "3"]
    return ["calm piano ballad in A minor, 80 bpm", "energetic techno in F major, 128 bpm",
            "funky bass groove in E minor, 100 bpm", "lofi hip hop in C major, 85 bpm"]
