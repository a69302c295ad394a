"""The control table: every control the instrument offers, declared once.

One row per control: its propagation class (DESIGN.md section 4), its kind,
allowed range, default, unit, help text and what it needs to be heard. The
shared state, the validators, the panel, the curve editors and ``bench
controls`` all read this table; nothing else declares a range or a default.

Classes: ``step`` (shared per-step state, next tick), ``submission`` (slots born
from now on), ``structure`` (depth: grows at once, drains on shrink), ``decode``
(post-decode playback, next patch). A loop-length change is the one ``rebuild``.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Mapping

import torch

from .checks import check_bool, check_choice, check_float, check_int, check_text
from .curves import check_latent, normalize_channel_gain, normalize_curve
from .request import CFG_MODES, MAX_SEED
from .schedule import MAX_STEPS
from .steps import DCW_MODES

MAX_DEPTH = 16
MAX_PROMPT_CHARS = 2000


@dataclass(frozen=True)
class Spec:
    name: str
    klass: str  # step | submission | structure | decode
    kind: str  # curve (scalar or per frame) | scalar | int | choice | bool | text | latent | gain
    default: Any
    lo: float = 0.0
    hi: float = 1.0
    choices: tuple = ()
    label: str = ""
    help: str = ""
    unit: str = ""
    needs: str | None = None  # a key of NEEDS: what must be set for the control to be heard
    ui: tuple[float, float, float] | None = None  # slider (lo, hi, step) when narrower than [lo, hi]
    optional: bool = False  # None is allowed (and means "the model's / ring's default")

    @property
    def title(self) -> str:
        return self.label or self.name.replace("_", " ")


# what a control needs to be heard: shown at the control, set by `bench controls`
NEEDS: Mapping[str, str] = MappingProxyType({
    "source": "needs a source (load audio or a latent)",
    "x0_target": "needs an x0 target latent",
    "x0_target_strength": "needs an x0-target strength above 0",
    "prompt_b": "needs a prompt B",
    "prompt_blend": "needs an A-B blend above 0",
    "guidance": "needs a CFG mode other than none",
    "guidance_scale": "needs a guidance scale other than 1",
    "apg": "needs guidance with kind apg",
    "dcw": "needs a DCW mode other than off",
    "lora": "needs a LoRA adapter (inst.load_lora)",
    "full_cfg": "needs CFG mode full or residual-initialize",
    "prompt_c": "needs a prompt C", "prompt_c_weight": "needs a prompt C weight above 0",
    "prompt_d": "needs a prompt D", "prompt_d_weight": "needs a prompt D weight above 0",
})

_ROWS = (
    # -- step: the shared per-step state (mechanism 2) --
    Spec("velocity_scale", "step", "curve", 1.0, 0.0, 4.0, ui=(0.0, 2.0, 0.01),
         help="x0_hat = x_t - t_c * (v * vs); Euler: x_n = x_t + (t_n - t_c) * v * vs"),
    Spec("source_blend", "step", "curve", 1.0, needs="source",
         help="SDE re-noise toward s * x0_hat + (1 - s) * source, per frame (taken whatever the solver)"),
    Spec("ode_noise", "step", "curve", 0.0, 0.0, 2.0, ui=(0.0, 1.0, 0.01), label="ODE noise",
         help="ODE noise injection: + randn * onc * t_n"),
    Spec("x0_target_strength", "step", "curve", 0.0, needs="x0_target", label="x0 target strength",
         help="x0_hat <- (1 - a) x0_hat + a x_target"),
    Spec("x0_target_gate", "step", "scalar", 0.0, needs="x0_target", label="x0 target gate",
         help="morph only once the slot is this far (fraction) through its schedule"),
    Spec("guidance_scale", "step", "curve", 1.0, 0.0, 30.0, ui=(0.0, 10.0, 0.05), needs="guidance",
         help="CFG/APG scale g (1 = no guidance)"),
    Spec("guidance_kind", "step", "choice", "apg", choices=("apg", "cfg"), needs="guidance",
         help="APG (projected over time, momentum) or plain CFG"),
    Spec("apg_momentum", "step", "scalar", -0.75, -1.0, 1.0, needs="apg", label="APG momentum",
         help="APG momentum: r <- d + m * r"),
    Spec("apg_norm_threshold", "step", "scalar", 2.5, 0.0, 100.0, ui=(0.0, 10.0, 0.1), needs="apg",
         label="APG norm threshold", help="APG: clip ||d|| over time per channel (0 = off)"),
    Spec("cfg_interval_start", "step", "scalar", 0.0, needs="guidance", label="guidance from",
         help="guidance applies while 1 - t is in [from, until] (ACE-Step's cfg_interval); elsewhere the step "
              "uses the conditional velocity and full CFG skips its negative forward"),
    Spec("cfg_interval_end", "step", "scalar", 1.0, needs="guidance", label="guidance until",
         help="end of the guidance interval in 1 - t (1 = to the last step; from > until: no guidance)"),
    Spec("cfg_rescale", "step", "scalar", 0.0, needs="guidance", label="CFG rescale",
         help="CFG-rescale phi: per-channel norms over time"),
    Spec("channel_gain", "step", "gain", 1.0, 0.0, 4.0, help="multiplier on the denoiser input, [1, T|1, C]"),
    Spec("solver", "step", "choice", "ode", choices=("ode", "sde"), help="Euler ODE step or SDE re-noise step"),
    Spec("dcw_mode", "step", "choice", "off", choices=DCW_MODES, label="DCW",
         help="post-step wavelet correction: off, low, high, double, pix"),
    Spec("dcw_scaler", "step", "curve", 0.05, -1.0, 1.0, ui=(-0.2, 0.2, 0.005), needs="dcw", label="DCW low",
         help="DCW low band (and pix): x_L += t * s * (x_L - y_L)"),
    Spec("dcw_high_scaler", "step", "curve", 0.02, -1.0, 1.0, ui=(-0.2, 0.2, 0.005), needs="dcw", label="DCW high",
         help="DCW high band: x_H += (1 - t) * s * (x_H - y_H)"),
    Spec("lora_strength", "step", "scalar", 1.0, -1.0, 2.0, ui=(0.0, 1.5, 0.01), needs="lora", label="LoRA strength",
         help="scale of the active LoRA adapter, applied between ticks"),
    # -- submission: the next requests (mechanism 1: each slot keeps what it was born with) --
    Spec("prompt_a", "submission", "text", "", label="prompt A", help="the text prompt"),
    Spec("prompt_b", "submission", "text", "", needs="prompt_blend", label="prompt B",
         help="a second prompt, blended per frame with A"),
    Spec("prompt_blend", "submission", "curve", 0.0, needs="prompt_b", label="A ↔ B blend",
         help="weight of prompt B per frame (A gets 1 - w, less the weights of C and D)"),
    Spec("prompt_c", "submission", "text", "", needs="prompt_c_weight", label="prompt C",
         help="a third prompt, mixed in per frame by its weight"),
    Spec("prompt_c_weight", "submission", "curve", 0.0, needs="prompt_c", label="C weight",
         help="weight of prompt C per frame; weights over 1 in all are normalized"),
    Spec("prompt_d", "submission", "text", "", needs="prompt_d_weight", label="prompt D",
         help="a fourth prompt, mixed in per frame by its weight"),
    Spec("prompt_d_weight", "submission", "curve", 0.0, needs="prompt_d", label="D weight",
         help="weight of prompt D per frame; weights over 1 in all are normalized"),
    Spec("denoise", "submission", "scalar", 1.0, needs="source",
         help="start lower on the schedule: t_start = S / floor(S / d)"),
    Spec("seed", "submission", "int", 0, 0, MAX_SEED, help="the initial noise and every per-step draw"),
    Spec("vary_seed", "submission", "bool", False, label="new seed per completion", help="seed + birth"),
    Spec("negative_prompt", "submission", "text", "", needs="full_cfg", label="negative prompt",
         help="the prompt of the unconditional row (empty: the model's own unconditional)"),
    Spec("mask", "submission", "curve", None, needs="source", optional=True, ui=(0.0, 1.0, 0.01),
         help="inpainting per frame: 1 = generate, 0 = keep the source"),
    Spec("feedback", "submission", "scalar", 0.0, needs="source",
         help="source' = (1 - fb) * source + fb * the newest completion"),
    Spec("cfg_mode", "submission", "choice", "none", choices=CFG_MODES, needs="guidance_scale", label="CFG mode",
         help="none, full (negative forward each step), residual-initialize (once), residual-self (free)"),
    Spec("steps", "submission", "int", 8, 1, MAX_STEPS, ui=(1, 32, 1), help="solver steps of each new slot"),
    Spec("first_look", "submission", "int", 3, 0, MAX_STEPS, ui=(0, 16, 1), label="first look steps",
         help="a submission change is first heard from a slot with this many steps, then at full quality "
              "(0 or >= steps: one full-quality express slot)"),
    Spec("shift", "submission", "scalar", None, 0.05, 20.0, ui=(0.5, 10.0, 0.25), optional=True,
         help="t' = k t / (1 + (k - 1) t)"),
    Spec("init_noise", "submission", "curve", None, needs="source", optional=True, label="initial noise", ui=(0.0, 1.0, 0.01),
         help="per-frame start level c: c * eps + (1 - c) * source"),
    Spec("source", "submission", "latent", None, optional=True, label="source latent",
         help="the latent the source-blend, denoise and mask act on"),
    Spec("x0_target", "submission", "latent", None, needs="x0_target_strength", optional=True,
         label="x0 target latent", help="x0_hat is morphed toward it"),
    # -- structure and decode --
    Spec("depth", "structure", "int", 4, 1, MAX_DEPTH, ui=(1, MAX_DEPTH, 1), help="slots in flight: grows at once, drains on shrink"),
    Spec("gain", "decode", "scalar", 1.0, 0.0, 4.0, ui=(0.0, 2.0, 0.01), label="output gain",
         help="post-decode gain, felt at the next patch"),
)

CONTROLS: Mapping[str, Spec] = MappingProxyType({spec.name: spec for spec in _ROWS})
STEP_PARAMS: Mapping[str, Spec] = MappingProxyType({n: s for n, s in CONTROLS.items() if s.klass == "step"})


def spec(name: str) -> Spec:
    """The row of ``name``; ValueError listing the known controls otherwise."""
    row = CONTROLS.get(name) if isinstance(name, str) else None
    if row is None:
        raise ValueError(f"unknown control {name!r}; expected one of {sorted(CONTROLS)}")
    return row


def validate(name: str, value: Any, frames: int, channels: int, device=None, dtype=torch.float32) -> Any:
    """Check one value against its row and convert it to what the engine uses (curves become
    ``[1, T, 1]`` tensors, latents ``[T, C]``); ValueError names the control and what is allowed."""
    row = spec(name)
    if value is None and row.optional:
        return None
    kind = row.kind
    if kind == "curve":
        return normalize_curve(name, value, frames, row.lo, row.hi, device, dtype)
    if kind == "scalar":
        return check_float(name, value, row.lo, row.hi)
    if kind == "int":
        return check_int(name, value, int(row.lo), int(row.hi))
    if kind == "choice":
        return check_choice(name, value, row.choices)
    if kind == "bool":
        return check_bool(name, value)
    if kind == "text":
        return check_text(name, value, MAX_PROMPT_CHARS)
    if kind == "gain":
        return normalize_channel_gain(name, value, frames, channels, row.lo, row.hi, device, dtype)
    return check_latent(name, value, frames, channels).to(device, dtype)  # latent
