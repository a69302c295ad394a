"""``python -m demon_nb bench controls --json``: is every control of the instrument alive?

For every row of the control table, from the instrument's defaults (with what the
control needs set first, e.g. a source), write a different valid value through the
instrument's own write path (``Controls.set``) and compare the completions that
follow with a counterfactual run without the write, equal seeds, matched by birth.
A control is alive when a completion within its class's convergence window
differs (``decode``: the decoded audio; ``structure``: when completions arrive).

    {"model": "mini", "controls": {NAME: {"class", "alive", "onset_ticks", "needs"}}, "inert": [NAMES]}
"""

from __future__ import annotations

import json
from typing import Any

import torch

from ..engine.control_table import CONTROLS
from ..live.runner import Runner
from ..models import load
from . import bench_parser

# a different valid value per control (the instrument's defaults are the starting point)
PROBE_VALUES = {
    "velocity_scale": 1.3, "source_blend": 0.3, "ode_noise": 0.5, "x0_target_strength": 0.9,
    "x0_target_gate": 0.6, "guidance_scale": 4.0, "apg_momentum": 0.5, "apg_norm_threshold": 0.05,
    "cfg_rescale": 0.7, "cfg_interval_start": 0.8, "cfg_interval_end": 0.1, "dcw_scaler": 0.3,
    "dcw_high_scaler": 0.3, "lora_strength": 0.3, "prompt_blend": 0.5, "denoise": 0.6,
    "seed": 7, "vary_seed": True, "steps": 6, "shift": 1.5, "init_noise": 0.6, "depth": 2, "gain": 0.5,
    "mask": 0.5, "feedback": 0.5, "first_look": 2, "prompt_c_weight": 0.5, "prompt_d_weight": 0.5,
}


def probe_value(name: str, current: Any, frames: int, channels: int, prompts: tuple[str, str]) -> Any:
    """A valid value different from ``current``."""
    row = CONTROLS[name]
    if name in PROBE_VALUES:
        return PROBE_VALUES[name]
    if row.kind == "choice":
        return next(c for c in reversed(row.choices) if c != current)
    if row.kind == "text":
        return prompts[1] if current != prompts[1] else prompts[0]
    if row.kind == "gain":
        return torch.linspace(0.5, 1.5, channels)
    # latents: a source / x0 target
    return torch.randn(frames, channels, generator=torch.Generator().manual_seed(11 if name == "source" else 12))


def preconditions(need: str | None, model, source: torch.Tensor, prompts: tuple[str, str]) -> dict:
    """The writes that meet a control's need (NEEDS in the control table)."""
    # guidance at every step (mini guides only its first steps by default), so that a guidance control's
    # onset measures its class, not where the interval ends
    guidance = {"cfg_mode": "full", "guidance_scale": 3.0, "cfg_interval_start": 0.0, "cfg_interval_end": 1.0}
    return {
        None: {}, "source": {"source": source},
        "x0_target": {"x0_target": -source, "x0_target_strength": 0.5},
        "x0_target_strength": {"x0_target_strength": 0.5},
        "prompt_b": {"prompt_b": prompts[1]}, "prompt_blend": {"prompt_blend": 0.5},
        "guidance": guidance, "guidance_scale": {"guidance_scale": 3.0},
        "apg": {**guidance, "guidance_kind": "apg"}, "dcw": {"dcw_mode": "double"},
        "lora": {LORA: _random_lora_file(model)},
        "full_cfg": guidance,
        "prompt_c": {"prompt_c": prompts[1]}, "prompt_c_weight": {"prompt_c_weight": 0.5},
        "prompt_d": {"prompt_d": prompts[1]}, "prompt_d_weight": {"prompt_d_weight": 0.5},
    }[need]


LORA = "(load a LoRA)"  # a precondition that is not a control write: runner.load_lora(path)


def _random_lora_file(model) -> str:
    """A random adapter for the model's DiT, written once to a temporary file."""
    import tempfile

    from safetensors.torch import save_file

    from ..models.lora import random_adapter

    path = f"{tempfile.gettempdir()}/demon_nb_bench_lora_{model.name}.safetensors"
    save_file(random_adapter(model.denoiser.lora_target(), scale=0.2), path)
    return path


def run(model, writes: dict, change: tuple[str, Any] | None, change_tick: int, ticks: int, depth: int) -> dict:
    """Tick a fresh runner (no thread); returns ``{tag: (tick, latent, gain)}``."""
    runner = Runner(model, depth=depth)
    for name, value in writes.items():
        runner.load_lora(value) if name == LORA else runner.set(name, value)
    out = {}
    with torch.inference_mode():
        for tick in range(ticks):
            if change is not None and tick == change_tick:
                runner.set(*change)
            runner.prepare_tick()  # what Runner.step does before each tick (LoRA swaps, MIDI)
            for completion in runner.ring.tick():
                out[completion.request.tag] = (tick, completion.latent, runner.controls.gain)
                runner.controls.newest = completion.latent  # what Runner.step does: the source feedback
    runner.unload_lora()  # the model is shared by every run: leave its DiT as it was
    runner.prepare_tick()
    return out


def measure(model, name: str, value: Any, writes: dict, reference: dict, steps: int, depth: int) -> dict:
    """Alive and onset of one control against the reference run (same writes, no change)."""
    klass = CONTROLS[name].klass
    change_tick = 2 * steps
    window = {"step": steps + 1, "decode": steps, "structure": 2 * steps}.get(klass, 2 * steps + 2)
    changed = run(model, writes, (name, value), change_tick, change_tick + window, depth)
    onset = None
    for tag, (tick, latent, gain) in sorted(changed.items(), key=lambda item: item[1][0]):
        if tick < change_tick or tag not in reference:
            continue
        ref_tick, ref_latent, ref_gain = reference[tag]
        if klass == "decode":
            differs = not torch.equal(gain * model.codec.decode(latent), ref_gain * model.codec.decode(ref_latent))
        elif klass == "structure":
            differs = tick != ref_tick
        else:
            differs = not torch.equal(latent, ref_latent)
        if differs:
            onset = tick - change_tick + 1
            break
    return {"class": klass, "alive": onset is not None, "onset_ticks": onset, "needs": CONTROLS[name].needs}


def main(argv: list[str]) -> int:
    parser = bench_parser("controls", model="mini")
    parser.add_argument("--depth", type=int, default=4)
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    model = load(args.model)
    frames, channels = model.frames, model.denoiser.channels
    steps = model.defaults.get("steps", 8)
    prompts = tuple(_prompts(args.model))
    source = torch.randn(frames, channels, generator=torch.Generator().manual_seed(5))
    references: dict[str | None, dict] = {}
    result: dict[str, Any] = {"model": args.model, "depth": args.depth, "steps": steps, "controls": {}}
    for name, row in CONTROLS.items():
        writes = preconditions(row.needs, model, source, prompts)
        if row.needs not in references:
            references[row.needs] = run(model, writes, None, 0, 4 * steps + 4, args.depth)
        runner_default = writes.get(name, Runner(model, depth=args.depth).controls.get(name))  # the default
        value = probe_value(name, runner_default, frames, channels, prompts)
        result["controls"][name] = measure(model, name, value, writes, references[row.needs], steps, args.depth)
    result["inert"] = sorted(n for n, r in result["controls"].items() if not r["alive"])
    print(json.dumps(result))
    return 0


def _prompts(model: str) -> list[str]:
    if model == "analytic":
        return ["0", "1"]
    return ["warm house in A minor, 120 bpm, piano and bass", "slow jazz ballad in F major, 70 bpm"]
