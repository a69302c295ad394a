"""``python -m demon_nb bench backends --json [--model mini]``: one component, every backend.

Times the denoiser network (the batched forward a tick runs: positive rows of a
depth-D ring) and, where the codec is a torch module, its decode, on each
backend available here, side by side in one run, with the max abs difference
against eager, with ``--threads`` CPU threads (default 1, what the instrument gives
the denoiser so that the browser keeps a core). The fastest backend for the denoiser
that keeps a live start is the one ``load`` picks by default (see the README table).
"""

from __future__ import annotations

import json
import time

import torch

from ..accel import BACKENDS, accelerate, availability
from ..models import load
from . import bench_parser

LOAD_BUDGET_S = 5.0


def time_ms(fn, inputs, repeats: int) -> float:
    with torch.inference_mode():
        for _ in range(3):
            fn(*inputs)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn(*inputs)
            times.append((time.perf_counter() - start) * 1e3)
    times.sort()
    return round(times[len(times) // 2], 2)


def denoiser_inputs(model, batch: int):
    """Example tensors for the network forward ``net(x, t, text, context)``."""
    net = model.denoiser.net
    g = torch.Generator().manual_seed(0)
    text = model.denoiser.unconditional().unsqueeze(0).expand(batch, -1, -1).contiguous()
    channels = model.denoiser.channels
    return (torch.randn(batch, model.frames, channels, generator=g), torch.rand(batch, generator=g), text,
            torch.zeros(batch, model.frames, 2 * channels)), net


def main(argv: list[str]) -> int:
    parser = bench_parser("backends", model="mini")
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--backends", default="eager,compile,onnx,tensorrt")
    parser.add_argument("--threads", type=int, default=1,
                        help="CPU threads per backend (default 1: live, the other core serves the browser and kernel)")
    args = parser.parse_args(argv)
    if args.threads < 1:
        parser.error("--threads: expected >= 1")
    torch.set_num_threads(args.threads)
    model = load(args.model, backend="eager") if args.model == "mini" else load(args.model)
    inputs, net = denoiser_inputs(model, args.depth)
    with torch.inference_mode():
        reference = net(*inputs)
    result = {"model": model.name, "component": "denoiser", "batch": args.depth, "frames": model.frames,
              "threads": torch.get_num_threads(), "backends": {}}
    for backend in args.backends.split(","):
        if backend not in BACKENDS:
            raise SystemExit(f"--backends: unknown {backend!r}; expected some of {list(BACKENDS)}")
        usable, reason = availability(backend)
        if not usable:
            result["backends"][backend] = {"skipped": reason}
            continue
        started = time.perf_counter()
        fn = accelerate(net, inputs, backend)
        with torch.inference_mode():
            out = fn(*inputs)
        prepare_s = time.perf_counter() - started
        result["backends"][backend] = {"forward_ms_p50": time_ms(fn, inputs, args.repeats),
                                       "max_abs_diff": float((out - reference).abs().max()),
                                       "prepare_s": round(prepare_s, 1)}
    timed = {k: v["forward_ms_p50"] for k, v in result["backends"].items() if "forward_ms_p50" in v}
    result["fastest"] = min(timed, key=timed.get)
    # the default: the fastest whose warm preparation fits the 5 s load budget of a live start
    live = {k: v for k, v in timed.items() if result["backends"][k]["prepare_s"] <= LOAD_BUDGET_S}
    result["default_rule"] = f"fastest with prepare_s <= {LOAD_BUDGET_S} s once cached"
    result["default"] = min(live, key=live.get) if live else "eager"
    print(json.dumps(result))
    return 0
