"""``python -m demon_nb bench acestep --json``: ring tick time of the ACE-Step 1.5 turbo DiT.

Random weights in the real 2B turbo configuration (timing needs no checkpoint),
a 60 s loop (1500 latent frames), 8 steps, depths 1/4/8, the ring kept full by a
feed. ``completions_per_s = depth / steps / tick_s``. On a CPU the loop and the
layer count are reduced so the run ends in about a minute; the JSON says so.
"""

from __future__ import annotations

import json
import sys
import time

import torch
from . import bench_parser

# acestep-v15-turbo/config.json (the fields the networks read)
TURBO_2B = {
    "model_type": "acestep", "model_version": "turbo", "is_turbo": True,
    "hidden_size": 2048, "intermediate_size": 6144, "num_hidden_layers": 24, "num_attention_heads": 16,
    "num_key_value_heads": 8, "head_dim": 128, "rms_norm_eps": 1e-6, "rope_theta": 1000000,
    "sliding_window": 128, "layer_types": ["sliding_attention", "full_attention"] * 12,
    "attention_bias": False, "attention_dropout": 0.0, "in_channels": 192, "audio_acoustic_hidden_dim": 64,
    "patch_size": 2, "pool_window_size": 5, "text_hidden_dim": 1024, "timbre_hidden_dim": 64,
    "num_lyric_encoder_hidden_layers": 8, "num_timbre_encoder_hidden_layers": 4,
}
REFERENCE_RTX5090 = {"1": {"tick_ms": 14.0, "completions_per_s": 8.9}, "4": {"tick_ms": 42.8, "completions_per_s": 11.3},
                     "8": {"tick_ms": 81.1, "completions_per_s": 12.3}}
CONDITION_TOKENS = 256  # packed caption + lyrics + timbre tokens


def parse(argv):
    p = bench_parser("acestep")
    p.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    p.add_argument("--dtype", default=None, choices=["bf16", "fp16", "fp32"], help="default: bf16 on cuda, fp32 on cpu")
    p.add_argument("--loop-s", type=float, default=None, help="loop length in seconds (default 60; cpu: 4)")
    p.add_argument("--layers", type=int, default=None, help="DiT layers (default 24; cpu: 1)")
    p.add_argument("--depths", default="1,4,8")
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--ticks", type=int, default=None, help="timed ticks per depth (default 30; cpu: 3)")
    args = p.parse_args(argv)
    depths = [int(d) for d in args.depths.split(",") if d.strip()]
    if not depths or any(not 1 <= d <= 16 for d in depths):
        raise ValueError(f"--depths: expected integers in 1..16, got {args.depths!r}")
    if args.layers is not None and not 1 <= args.layers <= 24:
        raise ValueError(f"--layers: expected 1..24, got {args.layers}")
    return args, depths


def build_denoiser(layers: int, device, dtype, seed: int = 0):
    """The turbo DiT with random weights (``layers`` of the real 24) behind the Denoiser protocol."""
    from demon_nb.models.acestep import _move
    from demon_nb.models.acestep.denoiser import AceStepDenoiser
    from demon_nb.models.acestep.loader import _classes, component_configs

    config = dict(TURBO_2B, num_hidden_layers=layers, layer_types=TURBO_2B["layer_types"][:layers])
    kwargs = component_configs(config)["transformer"]
    torch.manual_seed(seed)
    with torch.device(device):
        transformer = _classes()["transformer"](**kwargs)
    _move(transformer, torch.device(device), dtype)
    transformer = transformer.eval().requires_grad_(False)
    null = torch.randn(1, 1, TURBO_2B["hidden_size"], device=device, dtype=dtype)
    silence = torch.randn(750, TURBO_2B["audio_acoustic_hidden_dim"], device=device, dtype=dtype)
    return AceStepDenoiser(transformer, null, silence)


def time_depth(denoiser, cond, frames: int, depth: int, steps: int, ticks: int, device) -> float:
    """Median seconds per steady-state tick of a full ring."""
    from demon_nb.engine.request import Request
    from demon_nb.engine.ring import Ring

    ring = Ring(denoiser, frames=frames, channels=denoiser.channels, depth=depth, steps=steps, shift=3.0,
                device=device, dtype=torch.float32)
    seeds = iter(range(1 << 30))
    ring.feed = lambda: Request(cond, seed=next(seeds))
    sync = torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)
    for _ in range(2 * steps + 2):  # fill the (staggered) ring and warm up kernels
        ring.tick()
    sync()
    times = []
    for _ in range(ticks):
        start = time.perf_counter()
        ring.tick()
        sync()
        times.append(time.perf_counter() - start)
    times.sort()
    return times[len(times) // 2]


def main(argv: list[str]) -> int:
    from demon_nb.models.acestep import pick_device
    from demon_nb.models.acestep.text import AceCondition

    try:
        args, depths = parse(argv)
        dtype_arg = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}.get(args.dtype)
        device, dtype = pick_device(args.device, dtype_arg)
    except ValueError as exc:
        print(f"bench acestep: {exc}", file=sys.stderr)
        return 2
    cpu = device.type == "cpu"
    loop_s = args.loop_s or (4.0 if cpu else 60.0)
    layers = args.layers or (1 if cpu else 24)
    ticks = args.ticks or (3 if cpu else 30)
    frames = round(loop_s * 25)
    denoiser = build_denoiser(layers, device, dtype)
    g = torch.Generator(device="cpu").manual_seed(1)
    hidden = torch.randn(CONDITION_TOKENS, TURBO_2B["hidden_size"], generator=g).to(device, dtype)
    cond = AceCondition(hidden, torch.ones(CONDITION_TOKENS, dtype=torch.bool, device=device), "bench")
    result = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "dtype": str(dtype).replace("torch.", ""), "loop_s": loop_s, "frames": frames, "steps": args.steps,
        "layers": layers, "condition_tokens": CONDITION_TOKENS, "config": "acestep-v15-turbo (2B), random weights",
        "ticks": {},
    }
    for depth in depths:
        tick_s = time_depth(denoiser, cond, frames, depth, args.steps, ticks, device)
        result["ticks"][str(depth)] = {"tick_ms": round(tick_s * 1e3, 2),
                                       "completions_per_s": round(depth / args.steps / tick_s, 3)}
    if loop_s != 60.0 or layers != 24:
        result["reduced"] = {"loop_s": loop_s, "layers": layers, "of_layers": 24,
                             "why": "CPU run: shorter loop and fewer layers so it ends in about a minute"
                             if cpu else "reduced by the command line"}
    result["reference_rtx5090_paper"] = REFERENCE_RTX5090
    print(json.dumps(result))
    return 0
