"""Offline render: ``python -m demon_nb render --model acestep --checkpoints DIR --prompt "..." --out out.wav``.

Drives the engine's :class:`~demon_nb.engine.ring.Ring` at depth 1 (one
generation, the model's default steps/shift/guidance), decodes the finished
latent with the model's codec and writes a WAV with soundfile. With
``--source in.wav --denoise 0.6`` the source is encoded, the generation starts
from its noised latent and (ACE-Step) the source conditions the DiT as a cover.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch
from tqdm.auto import tqdm


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m demon_nb render", description=__doc__.splitlines()[0])
    p.add_argument("--model", default="acestep", help="model name: acestep or mini (default: acestep)")
    p.add_argument("--checkpoints", default=None, help="checkpoint folder (ACE-Step: official or diffusers layout)")
    p.add_argument("--variant", default=None, help="ACE-Step variant: turbo (default), base, sft, xl-turbo, ...")
    p.add_argument("--prompt", required=True, help="caption describing the music")
    p.add_argument("--lyrics", default="", help="ACE-Step: lyrics text")
    p.add_argument("--bpm", type=float, default=None, help="ACE-Step: tempo metadata")
    p.add_argument("--key", default=None, help="ACE-Step: key metadata, e.g. 'C major'")
    p.add_argument("--source", default=None, help="source audio file (cover / audio-to-audio)")
    p.add_argument("--denoise", type=float, default=1.0, help="with --source: how much to regenerate, in [0, 1]")
    p.add_argument("--seconds", type=float, default=None,
                   help="ACE-Step: loop length (default: the source length, else 30)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=None, help="default: the model's (turbo: 8)")
    p.add_argument("--shift", type=float, default=None, help="default: the model's (turbo: 3)")
    p.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    p.add_argument("--out", required=True, help="output WAV path")
    return p


def check_args(args) -> None:
    if not 0.0 <= args.denoise <= 1.0:
        raise ValueError(f"--denoise: expected a number in [0, 1], got {args.denoise}")
    if args.denoise < 1.0 and args.source is None:
        raise ValueError("--denoise: a value below 1 needs --source (the audio to start from)")
    if args.seconds is not None and not 0 < args.seconds <= 600:
        raise ValueError(f"--seconds: expected a length in (0, 600], got {args.seconds}")
    if args.source is not None and not Path(args.source).is_file():
        raise ValueError(f"--source: no such file: {args.source}")
    if args.seed < 0:
        raise ValueError(f"--seed: expected an integer >= 0, got {args.seed}")
    if not str(args.out).lower().endswith(".wav"):
        raise ValueError(f"--out: expected a path ending in .wav, got {args.out}")


def read_audio(path: str, sample_rate: int, channels: int) -> torch.Tensor:
    """Audio file -> ``[channels, N]`` float32 at ``sample_rate`` (polyphase resampling)."""
    import soundfile as sf
    from scipy.signal import resample_poly

    data, rate = sf.read(path, dtype="float32", always_2d=True)  # [N, A]
    if rate != sample_rate:
        g = math.gcd(int(rate), int(sample_rate))
        data = resample_poly(data, sample_rate // g, int(rate) // g, axis=0).astype("float32")
    audio = torch.from_numpy(data.T.copy())
    if audio.shape[0] < channels:
        audio = audio.repeat(math.ceil(channels / audio.shape[0]), 1)
    return audio[:channels]


def fit_length(audio: torch.Tensor, samples: int) -> torch.Tensor:
    """Loop or cut ``[A, N]`` audio to exactly ``samples``."""
    if audio.shape[1] < samples:
        audio = audio.repeat(1, math.ceil(samples / audio.shape[1]))
    return audio[:, :samples]


def load_model(args):
    from demon_nb.models import load

    options = {}
    if args.checkpoints is not None:
        options["checkpoints"] = args.checkpoints
    if args.device is not None:
        options["device"] = args.device
    if args.model == "acestep":
        options["variant"] = args.variant
        options["seconds"] = args.seconds or 30.0
    return load(args.model, **options)


def render(args) -> Path:
    check_args(args)
    model = load_model(args)
    codec = model.codec
    device = next(iter(p.device for p in _params(model.denoiser)), torch.device("cpu"))
    source_latent = None
    frames = model.frames
    if args.source is not None:
        audio = read_audio(args.source, codec.sample_rate, codec.audio_channels)
        if model.name == "acestep" and args.seconds is None:  # the loop follows the source
            frames = max(1, audio.shape[1] // codec.hop)
        audio = fit_length(audio, frames * codec.hop)
        with torch.no_grad():
            source_latent = codec.encode(audio[None])[0].float()
    cond, context = _condition(model, args, frames, source_latent)
    defaults = model.defaults
    steps = args.steps or defaults.get("steps", 8)
    shift = args.shift or defaults.get("shift", 1.0)
    return _run_ring(model, args, frames, steps, shift, cond, context, source_latent, device)


def _params(denoiser):
    module = getattr(denoiser, "transformer", None) or getattr(denoiser, "model", None)
    return list(module.parameters())[:1] if isinstance(module, torch.nn.Module) else []


def _condition(model, args, frames, source_latent):
    if model.name != "acestep":
        return model.text_encoder.encode(args.prompt), None
    seconds = frames * model.codec.hop / model.codec.sample_rate
    task = "cover" if source_latent is not None else "text2music"
    cond = model.text_encoder.encode(args.prompt, lyrics=args.lyrics, bpm=args.bpm, key=args.key,
                                     duration=seconds, task=task)
    context = None if source_latent is None else model.denoiser.cover_context(source_latent)
    return cond, context


def _run_ring(model, args, frames, steps, shift, cond, context, source_latent, device):
    import soundfile as sf

    from demon_nb.engine.request import Request
    from demon_nb.engine.ring import Ring
    from demon_nb.engine.state import state_defaults

    ring = Ring(model.denoiser, frames=frames, channels=model.denoiser.channels, depth=1, steps=steps,
                shift=shift, device=device, dtype=torch.float32)
    state = state_defaults(model.defaults)
    if state:
        ring.state.update(**state)
    request = Request(cond, context=context, seed=args.seed, source=source_latent,
                      denoise=args.denoise if source_latent is not None else 1.0,
                      cfg_mode=model.defaults.get("cfg_mode", "none"))
    ring.submit(request)
    done = []
    with tqdm(total=steps, desc=f"render {model.name}", unit="step") as bar:
        while not done:
            done = ring.tick()
            bar.update(1)
    with torch.no_grad():
        audio = model.codec.decode(done[0].latent[None])[0].float().cpu()
    peak = audio.abs().max().item()
    if peak > 1.0:  # keep the waveform, avoid clipping
        audio = audio / peak
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(out), audio.T.numpy(), model.codec.sample_rate, subtype="PCM_16")
    return out


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    try:
        out = render(args)
    except (ValueError, FileNotFoundError) as exc:
        print(f"render: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {out}", file=sys.stderr)
    return 0
