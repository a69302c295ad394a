"""``python -m demon_nb train-lora --model mini --style lofi --minutes 10``: a style LoRA for mini.

Trains low-rank adapters (PEFT, through diffusers' adapter support) on the attention of
mini's DiT, on the composer's pieces of one style, with the base weights frozen; the
flow-matching loss of ``train-mini``. Writes one safetensors file in diffusers / PEFT
naming that ``inst.load_lora(path)`` loads. Deterministic: ``--steps N`` replays the same
batches on any machine.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from . import FRAMES, load_net
from .composer import STYLE_NAMES, compose
from .text import MiniLMTextEncoder
from .train import flow_loss

TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]


def resolve_style(name: str) -> str:
    """A style by its name or a unique prefix ("lofi" -> "lofi hip hop")."""
    matches = [s for s in STYLE_NAMES if s == name] or [s for s in STYLE_NAMES if s.startswith(str(name))]
    if len(matches) != 1:
        raise ValueError(f"style: expected one of {list(STYLE_NAMES)} (or a unique prefix), got {name!r}")
    return matches[0]


def style_batch(step: int, batch: int, seed: int, style: str, text) -> tuple:
    """``(x0, text_states, context, generator)`` of pieces in ``style``, deterministic in (seed, step)."""
    pieces = [compose(seed * 10_000_000 + step * batch + i, FRAMES, style=style) for i in range(batch)]
    x0 = torch.stack([p[0] for p in pieces])
    states = text.encode_batch([p[1] for p in pieces])
    return x0, states, torch.zeros(batch, FRAMES, 128), torch.Generator().manual_seed(seed * 1_000_003 + step)


def train_lora(style: str, out: Path, minutes: float = 10.0, steps: int | None = None, rank: int = 8,
               seed: int = 0, batch: int = 8, lr: float = 2e-3, shift: float = 3.0, progress: bool = True) -> dict:
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict
    from safetensors.torch import save_file

    style = resolve_style(style)
    torch.manual_seed(seed)
    net, _ = load_net()
    net.requires_grad_(False)
    net.dit.add_adapter(LoraConfig(r=rank, lora_alpha=rank, target_modules=TARGETS, init_lora_weights=True))
    params = [p for p in net.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    text = MiniLMTextEncoder()
    net.train()
    started, step, losses = time.time(), 0, []
    while (steps is not None and step < steps) or (steps is None and time.time() - started < minutes * 60):
        x0, states, ctx, g = style_batch(step, batch, seed, style, text)
        loss = flow_loss(net, x0, states, ctx, g, shift)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
        step += 1
        if progress and step % 25 == 0:
            print(f"step {step}: loss {sum(losses[-25:]) / 25:.4f}", flush=True)
    state = {k: v.detach().contiguous() for k, v in get_peft_model_state_dict(net.dit).items()}
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(out), metadata={"style": style, "rank": str(rank), "steps": str(step)})
    return {"style": style, "steps": step, "rank": rank, "loss_first": losses[0] if losses else None,
            "loss_last": sum(losses[-25:]) / max(1, len(losses[-25:])), "out": str(out), "tensors": len(state)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m demon_nb train-lora")
    parser.add_argument("--model", default="mini", choices=["mini"])
    parser.add_argument("--style", required=True, help=f"one of {', '.join(STYLE_NAMES)} (or a unique prefix)")
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--steps", type=int, default=None, help="train exactly N steps (overrides --minutes)")
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="output .safetensors (default lora-STYLE.safetensors)")
    args = parser.parse_args(argv)
    style = resolve_style(args.style)
    info = train_lora(style, Path(args.out or f"lora-{style.split()[0]}.safetensors"), args.minutes, args.steps,
                      args.rank, args.seed)
    print(info)
    return 0
