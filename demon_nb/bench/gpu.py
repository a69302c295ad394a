"""``python -m demon_nb bench gpu --json``: every GPU figure in one process, no download.

On one CUDA device, with full-size random-weight ACE-Step 1.5 networks built from the
official turbo config (``bench acestep``'s ``TURBO_2B``): the ring's tick at depth
1 / 4 / 8 for a 60 s loop, 8 steps, bf16, on each backend (``eager``, ``compile``;
``tensorrt`` where it is installed), completions per second, windowed vs full decode
of the real-size Oobleck VAE, and peak memory. What a machine lacks is skipped with a
reason, in the JSON. Made to finish within about 8 minutes on one GPU.

``--smoke`` runs the same code path reduced (1 layer, 2 s loop, 2 timed ticks) on any
device, for tests on a CPU.
"""

from __future__ import annotations

import json
import time

import torch

from . import bench_parser
from .acestep import CONDITION_TOKENS, REFERENCE_RTX5090, TURBO_2B, build_denoiser, time_depth


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def backend_ticks(denoiser, cond, frames: int, depths: list[int], steps: int, ticks: int, backend: str,
                  device: torch.device) -> dict:
    """Tick ms and completions/s per depth on one backend; ``prepare_s``: compile time."""
    from demon_nb.accel import availability

    usable, why = availability(backend)
    if not usable:
        return {"skipped": why}
    original = denoiser.transformer.forward
    started = time.perf_counter()
    if backend == "compile":
        denoiser.transformer.forward = torch.compile(original, dynamic=True)
    elif backend == "tensorrt":
        return {"skipped": "tensorrt: the DiT's export with cached cross-attention is not built yet"}
    result: dict = {"ticks": {}}
    try:
        for depth in depths:
            tick_s = time_depth(denoiser, cond, frames, depth, steps, ticks, device)
            result["ticks"][str(depth)] = {"tick_ms": round(tick_s * 1e3, 2),
                                           "completions_per_s": round(depth / steps / tick_s, 3)}
        result["prepare_and_run_s"] = round(time.perf_counter() - started, 1)
    finally:
        denoiser.transformer.forward = original
    return result


def decode_figures(device: torch.device, dtype, loop_s: float, window_s: float, smoke: bool) -> dict:
    """Windowed vs full decode of the real-size (random-weight) Oobleck VAE on ``device``."""
    from demon_nb.engine.decode import decode_window
    from demon_nb.models.oobleck import OobleckCodec

    codec = OobleckCodec.random(seed=0, **({"decoder_channels": 16} if smoke else {})).to(device, dtype)
    frames, width = round(loop_s * 25), max(1, round(window_s * 25))
    latent = torch.randn(frames, codec.channels, generator=torch.Generator().manual_seed(0)).to(device, dtype)
    start = (frames - width) // 2
    with torch.inference_mode():
        def timed(fn):
            fn(), _sync(device)  # warm-up
            t0 = time.perf_counter()
            out = fn()
            _sync(device)
            return (time.perf_counter() - t0) * 1e3, out

        full_ms, full = timed(lambda: codec.decode(latent[None]))
        window_ms, window = timed(lambda: decode_window(codec, latent, start, start + width, loop=False))
    hop = codec.hop
    err = (window.float() - full[0, :, start * hop:(start + width) * hop].float()).abs().max().item()
    return {"loop_s": loop_s, "window_s": window_s, "full_ms": round(full_ms, 2), "window_ms": round(window_ms, 2),
            "speedup": round(full_ms / window_ms, 1), "max_abs_err": err, "paper_speedup": 8.0}


def main(argv: list[str]) -> int:
    parser = bench_parser("gpu")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--backends", default="eager,compile,tensorrt")
    parser.add_argument("--smoke", action="store_true", help="reduced run on any device (tests)")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print(json.dumps({"skipped": "no CUDA device on this machine: run this on a GPU machine "
                                     "(or --device cpu --smoke to check the code path)"}))
        return 0
    smoke = args.smoke
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    layers, loop_s, ticks, depths = (1, 2.0, 2, [1, 4]) if smoke else (24, 60.0, 20, [1, 4, 8])
    frames, steps = round(loop_s * 25), 8
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    started = time.perf_counter()
    denoiser = build_denoiser(layers, device, dtype)
    from demon_nb.models.acestep.text import AceCondition

    hidden = torch.randn(CONDITION_TOKENS, TURBO_2B["hidden_size"], generator=torch.Generator().manual_seed(1))
    cond = AceCondition(hidden.to(device, dtype), torch.ones(CONDITION_TOKENS, dtype=torch.bool, device=device), "bench")
    result: dict = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else str(device),
        "dtype": str(dtype).replace("torch.", ""), "layers": layers, "loop_s": loop_s, "frames": frames,
        "steps": steps, "config": "acestep-v15-turbo (2B), random weights", "smoke": smoke, "backends": {},
    }
    for backend in [b.strip() for b in args.backends.split(",") if b.strip()]:
        result["backends"][backend] = backend_ticks(denoiser, cond, frames, depths, steps, ticks, backend, device)
    result["decode"] = decode_figures(device, dtype, loop_s, 1.0 if not smoke else 0.5, smoke)
    if device.type == "cuda":
        result["peak_memory_gb"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
    result["seconds"] = round(time.perf_counter() - started, 1)
    result["reference_rtx5090_paper"] = REFERENCE_RTX5090
    print(json.dumps(result))
    return 0
