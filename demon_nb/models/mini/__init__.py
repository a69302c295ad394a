"""The built-in ``mini`` model: synth codec + small ACE-Step DiT + MiniLM text, trained on composer pieces.

``load(**options) -> Model``; options: ``weights`` (folder with ``model.safetensors`` +
``config.json``, default the shipped one), ``random_init`` (untrained weights, the
benchmark baseline), ``seed`` (for ``random_init``), ``threads`` (torch CPU threads).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

WEIGHTS_DIR = Path(__file__).parent / "weights"
FRAMES = 250
# `python -m demon_nb bench backends` on the 2-core CPU machine, per depth-4 forward with 1 thread (2 threads):
# onnx 15.3 (13.9) ms, eager 20.4 (14.2) ms, compile 14.4 (8.5) ms but 13-31 s to prepare at every start
# (breaking the 5 s load contract); the onnx export takes 8 s once per machine (cached on disk), so onnx is
# the fastest backend that keeps a live start.
DEFAULT_BACKEND = "onnx"
# One ONNX Runtime thread: the same 14 ms tick as two on the 2-core machine (the network is small),
# and the other core stays free for the browser and the kernel (control-to-ear p50 about 10 ms lower).
ONNX_THREADS = 1
# Full CFG at g = 4 on the first steps only (1 - t <= 0.2: 4 of 8 at shift 3, ACE-Step's cfg_interval):
# in the decoded audio the key is exactly right 0.73 of the time vs 0.52 with residual-self (the
# composer: 0.73), for a tick 1.5x as long (6 rows per tick at depth 4 instead of 4). bench mini, README.
DEFAULTS = {"prompt": "warm house in A minor, 120 bpm, piano and bass", "steps": 8, "shift": 3.0,
            "cfg_mode": "full", "guidance_scale": 4.0, "guidance_kind": "cfg",
            "cfg_interval_end": 0.2}


def load_net(weights: str | Path | None = None, random_init: bool = False, seed: int = 0):
    """``(MiniNet, config dict)`` from ``weights/config.json`` + ``model.safetensors``."""
    from safetensors.torch import load_file

    from .denoiser import DEFAULT_CONFIG, MiniNet
    from .text import COND_TOKENS

    folder = Path(weights) if weights is not None else WEIGHTS_DIR
    config_path, model_path = folder / "config.json", folder / "model.safetensors"
    if random_init:
        config = json.loads(config_path.read_text())["dit"] if config_path.is_file() else dict(DEFAULT_CONFIG)
        torch.manual_seed(seed)
        return MiniNet(config), {"dit": config, "random_init": True}
    if not model_path.is_file() or not config_path.is_file():
        raise ValueError(f"weights: {folder} has no model.safetensors + config.json; "
                         "create them with `python -m demon_nb train-mini`")
    try:
        config = json.loads(config_path.read_text())
        net = MiniNet(config["dit"])
        tokens = config["text_encoder"].get("cond_tokens")
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise ValueError(f"weights: {config_path} is not a valid mini config ({error})") from None
    if tokens != COND_TOKENS:
        raise ValueError(f"weights: {folder} was trained with {tokens} condition tokens, this version uses "
                         f"{COND_TOKENS} (MiniLM states + tempo token); retrain with `python -m demon_nb train-mini`")
    try:
        state = load_file(str(model_path))  # safetensors only: nothing is unpickled
    except Exception as error:
        raise ValueError(f"weights: {model_path} is not a readable safetensors file ({error}); "
                         "re-create it with `python -m demon_nb train-mini`") from None
    expected = net.state_dict()
    for key, tensor in state.items():
        if key in expected and tuple(tensor.shape) != tuple(expected[key].shape):
            raise ValueError(f"weights: {model_path} key {key!r} has shape {tuple(tensor.shape)}, "
                             f"config.json expects {tuple(expected[key].shape)}")
    missing, unexpected = net.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"weights: {model_path} does not match config.json (missing {missing[:3]}, "
                         f"unexpected {unexpected[:3]})")
    return net, config


def load(weights: str | Path | None = None, random_init: bool = False, seed: int = 0, threads: int | None = None,
         text_encoder=None, backend: str = DEFAULT_BACKEND, **defaults):
    """The mini model bundle; extra keyword arguments override the sampler ``defaults``."""
    from demon_nb.models import Model

    from .codec import SynthCodec
    from .denoiser import MiniDenoiser
    from .text import MiniLMTextEncoder

    if threads is not None:
        if not isinstance(threads, int) or threads < 1:
            raise ValueError(f"threads: expected a positive int, got {threads!r}")
        torch.set_num_threads(threads)
    unknown = set(defaults) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"options: unknown {sorted(unknown)}; expected weights, random_init, seed, threads, "
                         f"text_encoder or one of {sorted(DEFAULTS)}")
    net, config = load_net(weights, random_init, seed)
    if text_encoder is None:
        pinned = config.get("text_encoder", {}).get("sha256")
        text_encoder = MiniLMTextEncoder(expected_sha256=pinned) if pinned else MiniLMTextEncoder()
    text = text_encoder
    denoiser = MiniDenoiser(net, text.encode(""))
    if backend != "eager":
        denoiser.use_backend(backend, FRAMES, threads=ONNX_THREADS if threads is None else threads)
    from . import layout as L

    groups = {"bass": (L.BASS.start, L.BASS.stop), "notes": (L.NOTES.start, L.NOTES.stop),
              "drums": (L.DRUMS.start, L.DRUMS.stop), "brightness": (L.BRIGHT, L.BRIGHT + 1)}
    return Model(name="mini", denoiser=denoiser, codec=SynthCodec(), text_encoder=text, frames=FRAMES,
                 defaults=dict(DEFAULTS, **defaults), backends={"denoiser": backend, "decode": "eager", "encode": "eager"},
                 channel_groups=groups)
