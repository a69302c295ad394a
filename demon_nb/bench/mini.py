"""``python -m demon_nb bench mini --json``: quality and speed of the built-in model.

* key_adherence: mean share of pitched energy on the prompted key's scale, over
  ``--prompts`` held-out composer captions (seeds never used in training).
* tempo_adherence: share of generations whose kick+snare comb tempo is within 4%
  of the prompted bpm.  Both also for a random-init model (the baseline).
* roundtrip_corr: mean corr(encode(decode(z)), z) over held-out composer latents.
* tick_ms_p50: one batched denoiser forward at depth 4 (``x [4, 250, 64]``).
* completions_per_s: the engine's Ring at depth 4, 8 steps, the model's CFG defaults.
"""

from __future__ import annotations

import json
import statistics
import sys
import time

import numpy as np
import torch
from . import bench_parser

HELD_OUT = 10**9  # composer seeds from here on are never used for training


def generate(model, prompts: list[str], seeds: list[int], depth: int = 4, steps: int = 8,
             cfg_mode: str | None = None, guidance_scale: float | None = None):
    """Latents ``[T, C]`` for each prompt through the engine's Ring; returns ``(latents, seconds)``."""
    from demon_nb.engine.request import Request
    from demon_nb.engine.ring import Ring

    d = model.defaults
    cfg_mode = d.get("cfg_mode", "none") if cfg_mode is None else cfg_mode
    ring = Ring(model.denoiser, frames=model.frames, channels=model.codec.channels, depth=depth, steps=steps,
                shift=d.get("shift", 3.0))
    ring.state.set("guidance_scale", d.get("guidance_scale", 1.0) if guidance_scale is None else guidance_scale)
    if "guidance_kind" in d:
        ring.state.set("guidance_kind", d["guidance_kind"])
    requests = [Request(cond=model.text_encoder.encode(p), seed=s, cfg_mode=cfg_mode, tag=i)
                for i, (p, s) in enumerate(zip(prompts, seeds))]
    pending = iter(requests)
    remaining = [len(requests)]

    def feed():
        remaining[0] -= 1
        if remaining[0] == 0:
            ring.feed = None
        return next(pending)

    ring.feed = feed
    out: dict[int, torch.Tensor] = {}
    start = time.perf_counter()
    while len(out) < len(requests):
        for c in ring.tick():
            out[c.tag] = c.latent
    return [out[i] for i in range(len(requests))], time.perf_counter() - start


def adherence(model, latents, metas) -> tuple[float, float]:
    """``(mean key share, share of tempo hits)`` of generated latents."""
    from demon_nb.models.mini.metrics import key_share, tempo_ok

    keys, tempos = [], []
    for z, meta in zip(latents, metas):
        raw = model.codec.denormalize(z.float()).numpy()
        keys.append(key_share(raw, meta["key"], meta["mode"]))
        tempos.append(tempo_ok(raw, meta["bpm"]))
    return float(np.mean(keys)), float(np.mean(tempos))


def roundtrip(codec, n: int = 16) -> float:
    from demon_nb.models.mini.composer import compose

    corrs = []
    for i in range(n):
        z = compose(HELD_OUT + 500_000 + i)[0]
        z2 = codec.encode(codec.decode(z[None]))[0]
        corrs.append(float(np.corrcoef(z.flatten().numpy(), z2.flatten().numpy())[0, 1]))
    return float(np.mean(corrs))


def tick_ms(model, depth: int = 4, reps: int = 20) -> float:
    den = model.denoiser
    cond = den.collate([model.text_encoder.encode("house in A minor, 124 bpm")] * depth, [None] * depth)
    x = torch.randn(depth, model.frames, den.channels)
    t = torch.full((depth,), 0.5)
    for _ in range(3):
        den.velocity(x, t, cond)
    times = []
    for _ in range(reps):
        a = time.perf_counter()
        den.velocity(x, t, cond)
        times.append((time.perf_counter() - a) * 1000)
    return float(statistics.median(times))


def main(argv: list[str]) -> int:
    p = bench_parser("mini")
    p.add_argument("--prompts", type=int, default=64, help="held-out prompts per model (>= 64 for the issue)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--cfg-mode", default=None, help="override the model's default cfg_mode")
    p.add_argument("--guidance-scale", type=float, default=None)
    a = p.parse_args(argv)
    if a.prompts < 1:
        p.error("--prompts: expected >= 1")
    torch.set_num_threads(a.threads)
    from demon_nb.models.mini import load
    from demon_nb.models.mini.composer import compose

    model = load()
    pieces = [compose(HELD_OUT + i) for i in range(a.prompts)]
    prompts, metas = [c for _, c, _ in pieces], [m for _, _, m in pieces]
    seeds = list(range(a.prompts))
    generate(model, prompts[:4], seeds[:4], cfg_mode=a.cfg_mode, guidance_scale=a.guidance_scale)  # warm-up
    latents, seconds = generate(model, prompts, seeds, cfg_mode=a.cfg_mode, guidance_scale=a.guidance_scale)
    key, tempo = adherence(model, latents, metas)
    base = load(random_init=True, text_encoder=model.text_encoder)
    base_latents, _ = generate(base, prompts, seeds, cfg_mode=a.cfg_mode, guidance_scale=a.guidance_scale)
    key0, tempo0 = adherence(base, base_latents, metas)
    result = {
        "params": sum(p.numel() for p in model.denoiser.net.parameters()),
        "key_adherence": round(key, 4),
        "key_adherence_random_init": round(key0, 4),
        "tempo_adherence": round(tempo, 4),
        "tempo_adherence_random_init": round(tempo0, 4),
        "roundtrip_corr": round(roundtrip(model.codec), 4),
        "tick_ms_p50": round(tick_ms(model), 2),
        "completions_per_s": round(len(latents) / seconds, 2),
        "depth": 4,
        "steps": 8,
        "prompts": a.prompts,
        "cfg_mode": a.cfg_mode or model.defaults["cfg_mode"],
        "guidance_scale": a.guidance_scale if a.guidance_scale is not None else model.defaults["guidance_scale"],
        "threads": a.threads,
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
