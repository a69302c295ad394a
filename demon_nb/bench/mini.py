"""``python -m demon_nb bench mini --json``: quality and speed of the built-in model.

* key_adherence: mean share of pitched energy on the prompted key's scale, over
  ``--prompts`` held-out composer captions (seeds never used in training).
* tempo_adherence: share of generations whose kick+snare comb tempo is within 4%
  of the prompted bpm.  Both also for a random-init model (the baseline).
* roundtrip_corr: mean corr(encode(decode(z)), z) over held-out composer latents.
* tick_ms_p50: one Ring tick at depth 4, 8 steps, the model's CFG defaults (negative rows included).
* completions_per_s: the engine's Ring at depth 4, 8 steps, the model's CFG defaults.
* audio (issue #16; ``--no-audio`` skips it): the same figures measured in decoded audio by
  :mod:`demon_nb.models.mini.audio_eval` (librosa: HPSS + CQT chroma + Krumhansl-Kessler key,
  beat tracker, onset autocorrelation, melody-register CQT onsets, MFCC nearest-centroid style
  classifier) over ``--audio-prompts`` held-out prompts (styles in turn) x 2 seeds, for mini,
  the composer's ground truth (seed 0: the prompt's own piece; seed 1: another piece of the same
  style, key and tempo) and the random-init model, all decoded by the same codec.  The style
  classifier trains on one seed's renders and tests on the other's (both ways; ``style_accuracy``),
  on prompts 0-9, 20-23 vs 10-19 (``style_accuracy_unseen_prompts``), and on all ground-truth renders
  tested on mini's / random init's (``style_accuracy_trained_on_ground_truth``).
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
import sys
import time

import numpy as np
import torch
from . import bench_parser

HELD_OUT = 10**9  # composer seeds from here on are never used for training
LORA_SEEDS = HELD_OUT + 900_000  # the LoRA section's reference and test pieces
AUDIO_SEEDS = HELD_OUT + 100_000  # audio prompts: disjoint from the latent prompts and roundtrip pieces
AUDIO_TWINS = HELD_OUT + 200_000  # ground truth of seed 1: same style, key and tempo, another piece
# issue #16's goals: mini / ground truth ratios, over-full-scale renders, classifier accuracy
GOALS = {"key_exact": 0.9, "in_scale_chroma": 0.97, "pulse_clarity": 0.8, "melody_onsets_per_s": (0.7, 1.4)}


def settings(model, overrides: dict | None = None) -> dict:
    """The model's sampling defaults (``cfg_mode`` and shared-state values) with ``overrides``
    (``None`` values ignored): what the instrument plays, or a variant of it."""
    from demon_nb.engine.state import state_defaults

    out = {"cfg_mode": model.defaults.get("cfg_mode", "none"), **state_defaults(model.defaults)}
    out.update({k: v for k, v in (overrides or {}).items() if v is not None})
    return out


def _ring(model, depth: int, steps: int, overrides: dict | None):
    from demon_nb.engine.ring import Ring

    ring = Ring(model.denoiser, frames=model.frames, channels=model.codec.channels, depth=depth, steps=steps,
                shift=model.defaults.get("shift", 3.0))
    chosen = settings(model, overrides)
    ring.state.update(**{k: v for k, v in chosen.items() if k != "cfg_mode"})
    return ring, chosen["cfg_mode"]


def generate(model, prompts: list[str], seeds: list[int], depth: int = 4, steps: int = 8,
             overrides: dict | None = None):
    """Latents ``[T, C]`` for each prompt through the engine's Ring; returns ``(latents, seconds)``."""
    from demon_nb.engine.request import Request

    ring, cfg_mode = _ring(model, depth, steps, overrides)
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


def tick_ms(model, depth: int = 4, steps: int = 8, overrides: dict | None = None, ticks: int = 40) -> float:
    """Median time of one Ring tick at ``depth`` with the model's sampling settings (full CFG's
    negative rows included), the slots staggered as in the instrument."""
    from demon_nb.engine.request import Request

    ring, cfg_mode = _ring(model, depth, steps, overrides)
    cond = model.text_encoder.encode("house in A minor, 124 bpm")
    births = iter(range(10**9))
    ring.feed = lambda: Request(cond=cond, seed=next(births), cfg_mode=cfg_mode)
    times = []
    with torch.inference_mode():
        for _ in range(ticks + 2 * steps):
            start = time.perf_counter()
            ring.tick()
            times.append((time.perf_counter() - start) * 1000)
    return float(statistics.median(times[2 * steps:]))


def audio_pieces(n: int):
    """``n`` held-out composer pieces, styles in turn: ``[(raw, caption, meta)]`` and the seed-1
    twins (same style, key, tempo; another seed)."""
    from demon_nb.models.mini.composer import STYLE_NAMES, compose_raw

    pieces = [compose_raw(AUDIO_SEEDS + i, style=STYLE_NAMES[i % len(STYLE_NAMES)]) for i in range(n)]
    twins = [compose_raw(AUDIO_TWINS + i, style=m["style"], tonic=m["key"], mode=m["mode"], bpm=m["bpm"])
             for i, (_, _, m) in enumerate(pieces)]
    return pieces, twins


def audio_rows(codec, raws, metas) -> list[dict]:
    """:func:`audio_eval.analyze` of each raw latent decoded by ``codec`` (48 kHz stereo)."""
    from demon_nb.models.mini import audio_eval as AE

    rows = []
    for raw, meta in zip(raws, metas):
        audio = codec.decode_raw(torch.as_tensor(raw, dtype=torch.float32)[None])[0]
        rows.append(AE.analyze(audio, codec.sample_rate, meta["key"], meta["mode"], meta["bpm"]))
    return rows


def audio_section(model, base, n: int, overrides: dict | None = None) -> dict:
    """The ``audio`` JSON section over ``n`` prompts x 2 seeds: per-source summaries, style accuracy,
    mini / ground-truth ratios and issue #16's goals."""
    from demon_nb.models.mini import audio_eval as AE

    start = time.perf_counter()
    pieces, twins = audio_pieces(n)
    prompts = [c for _, c, _ in pieces] * 2
    metas = [m for _, _, m in pieces] * 2
    folds = [0] * n + [1] * n
    # prompts 0-9, 20-29, ... vs 10-19, 30-39, ...: every style on both sides once n >= 20, and no
    # test render shares its prompt with a training render (generations of one prompt look alike)
    prompt_folds = [(i // 10) % 2 for i in range(n)] * 2
    noise = [2 * i + s for s in (0, 1) for i in range(n)]  # a distinct noise seed per render
    sources = {"ground_truth": [r for r, _, _ in pieces] + [r for r, _, _ in twins]}
    for name, m in (("mini", model), ("random_init", base)):
        latents, _ = generate(m, prompts, noise, overrides=overrides)
        sources[name] = [m.codec.denormalize(z.float()).numpy() for z in latents]
    out, feats = {}, {}
    styles = np.asarray([m["style"] for m in metas])
    for name in ("ground_truth", "mini", "random_init"):
        rows = audio_rows(model.codec, sources[name], metas)
        out[name] = AE.summarize(rows)
        feats[name] = np.stack([r["mfcc"] for r in rows])
        out[name]["style_accuracy"] = _finite(AE.style_accuracy(feats[name], styles, folds))
        out[name]["style_accuracy_unseen_prompts"] = _finite(AE.style_accuracy(feats[name], styles, prompt_folds))
        if name != "ground_truth":  # does its "jazz" sound like the composer's jazz?
            guess = AE.nearest_centroid(feats["ground_truth"], styles, feats[name])
            out[name]["style_accuracy_trained_on_ground_truth"] = _finite(float(np.mean(guess == styles)))
    out = {k: out[k] for k in ("mini", "ground_truth", "random_init")}
    ratios = {}
    for k in ("key_exact", "key_notes", "in_scale_chroma", "tempo_error_median", "pulse_clarity",
              "melody_onsets_per_s", "style_accuracy", "style_accuracy_unseen_prompts"):
        a, b = out["mini"][k], out["ground_truth"][k]
        ratios[k] = round(a / b, 4) if a is not None and b else None

    def at_least(k):
        return ratios[k] is not None and ratios[k] >= GOALS[k]

    lo, hi = GOALS["melody_onsets_per_s"]
    melody = ratios["melody_onsets_per_s"]
    goals = {
        "key_exact >= 0.9x ground truth": at_least("key_exact"),
        "in_scale_chroma >= 0.97x": at_least("in_scale_chroma"),
        "pulse_clarity >= 0.8x": at_least("pulse_clarity"),
        "melody_onsets_per_s 0.7x-1.4x": melody is not None and lo <= melody <= hi,
        "no render over full scale": out["mini"]["over_full_scale"] == 0,
        "style_accuracy >= 3x chance (unseen prompts)": (out["mini"]["style_accuracy_unseen_prompts"] or 0.0) >= 0.3,
    }
    return {
        "prompts": n, "seeds": 2, "renders_per_source": 2 * n, "style_chance": 0.1,
        "in_scale_chance": round(7 / 12, 4),
        "tempo_folding": "tempo_error: x1, x2, x0.5 (octave errors); tempo_error_metrical also x1.5, x2/3",
        **out,
        "ratios_mini_over_ground_truth": ratios,
        "goals_met": goals,
        "seconds": round(time.perf_counter() - start, 1),
    }


def lora_section(model, path: str, style: str, n: int = 12) -> dict:
    """Does a style LoRA make mini sound like its style? ``n`` held-out prompts of ``style`` rendered
    with the adapter off and at strength 1 (same prompts and noise), each classified by a nearest
    centroid on MFCC statistics trained on the composer's own renders of every style (2 per
    style); ``accuracy_*`` is the share heard as ``style``."""
    from demon_nb.models.lora import LoraAdapters
    from demon_nb.models.mini import audio_eval as AE
    from demon_nb.models.mini.composer import STYLE_NAMES, compose_raw
    from demon_nb.models.mini.train_lora import resolve_style

    style = resolve_style(style)
    reference = [compose_raw(LORA_SEEDS + i, style=STYLE_NAMES[i % len(STYLE_NAMES)]) for i in range(2 * len(STYLE_NAMES))]
    ref_rows = audio_rows(model.codec, [r for r, _, _ in reference], [m for _, _, m in reference])
    ref_x, ref_y = np.stack([r["mfcc"] for r in ref_rows]), np.asarray([m["style"] for _, _, m in reference])
    pieces = [compose_raw(LORA_SEEDS + 1000 + i, style=style) for i in range(n)]
    prompts, metas, seeds = [c for _, c, _ in pieces], [m for _, _, m in pieces], list(range(n))
    adapters = LoraAdapters(model.denoiser)
    out = {"style": style, "renders": n, "file": str(path)}
    for label, strength in (("off", None), ("on", 1.0)):
        if strength is not None:
            adapters.stage(adapters.read(path))
            adapters.apply()
            adapters.select(adapters.active)  # no runner here: the DiT runs the adapter at strength 1
        latents, _ = generate(model, prompts, seeds)
        rows = audio_rows(model.codec, [model.codec.denormalize(z.float()).numpy() for z in latents], metas)
        guess = AE.nearest_centroid(ref_x, ref_y, np.stack([r["mfcc"] for r in rows]))
        out[f"accuracy_{label}"] = round(float(np.mean(guess == style)), 4)
    adapters.unload()
    adapters.apply()   # deletes it: the model is as it was
    return out


def _finite(x: float, digits: int = 4):
    return round(float(x), digits) if np.isfinite(x) else None


def main(argv: list[str]) -> int:
    p = bench_parser("mini")
    p.add_argument("--prompts", type=int, default=64, help="held-out prompts per model (>= 64 for the issue)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--cfg-mode", default=None, help="override the model's default cfg_mode")
    p.add_argument("--guidance-scale", type=float, default=None)
    p.add_argument("--cfg-interval-end", type=float, default=None,
                   help="override the model's guidance interval end (in 1 - t; 1 = every step)")
    p.add_argument("--audio-prompts", type=int, default=24,
                   help="held-out prompts (x 2 seeds) for the audio-domain section (default 24; >= 10 for "
                        "every style in the classifier's training set)")
    p.add_argument("--no-audio", action="store_true", help="skip the audio-domain section")
    p.add_argument("--weights", default=None, help="a weights folder (train-mini --out) instead of the shipped one")
    p.add_argument("--lora", default=None, help="a style LoRA (train-lora's output): the style classifier on its "
                                                "style's prompts, adapter off vs at strength 1")
    p.add_argument("--lora-style", default=None, help="the LoRA's style (default: from a lora-STYLE file name)")
    a = p.parse_args(argv)
    if a.prompts < 1:
        p.error("--prompts: expected >= 1")
    if a.audio_prompts < 1:
        p.error("--audio-prompts: expected >= 1")
    torch.set_num_threads(a.threads)
    from demon_nb.models.mini import load
    from demon_nb.models.mini.composer import compose

    model = load(weights=a.weights)
    pieces = [compose(HELD_OUT + i) for i in range(a.prompts)]
    prompts, metas = [c for _, c, _ in pieces], [m for _, _, m in pieces]
    seeds = list(range(a.prompts))
    overrides = {"cfg_mode": a.cfg_mode, "guidance_scale": a.guidance_scale, "cfg_interval_end": a.cfg_interval_end}
    generate(model, prompts[:4], seeds[:4], overrides=overrides)  # warm-up
    latents, seconds = generate(model, prompts, seeds, overrides=overrides)
    key, tempo = adherence(model, latents, metas)
    base = load(random_init=True, text_encoder=model.text_encoder)
    base_latents, _ = generate(base, prompts, seeds, overrides=overrides)
    key0, tempo0 = adherence(base, base_latents, metas)
    result = {
        "params": sum(p.numel() for p in model.denoiser.net.parameters()),
        "key_adherence": round(key, 4),
        "key_adherence_random_init": round(key0, 4),
        "tempo_adherence": round(tempo, 4),
        "tempo_adherence_random_init": round(tempo0, 4),
        "roundtrip_corr": round(roundtrip(model.codec), 4),
        "tick_ms_p50": round(tick_ms(model, overrides=overrides), 2),
        "completions_per_s": round(len(latents) / seconds, 2),
        "depth": 4,
        "steps": 8,
        "prompts": a.prompts,
        **{k: v for k, v in settings(model, overrides).items()
           if k in ("cfg_mode", "guidance_scale", "guidance_kind", "cfg_interval_start", "cfg_interval_end")},
        "threads": a.threads,
        "weights": a.weights or "shipped",
    }
    if not a.no_audio:
        result["audio"] = audio_section(model, base, a.audio_prompts, overrides)
    if a.lora:
        style = a.lora_style or Path(a.lora).stem.removeprefix("lora-")
        result["lora"] = lora_section(model, a.lora, style)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
