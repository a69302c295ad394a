"""The ACE-Step 1.5 checkpoint layouts, checked before any weights are read.

``missing_official`` / ``missing_diffusers`` list every path a folder lacks, and
``check_complete`` raises one :class:`MissingCheckpointFiles` naming all of them.
"""

from __future__ import annotations

import json
from pathlib import Path

VARIANT_DIRS = {v: f"acestep-v15-{v}" for v in ("turbo", "base", "sft", "xl-turbo", "xl-base", "xl-sft")}
TEXT_DIR = "Qwen3-Embedding-0.6B"


class MissingCheckpointFiles(ValueError, FileNotFoundError):
    """A checkpoint folder lacks files; the message lists every missing path at once (a
    ValueError that callers catching FileNotFoundError, as earlier versions raised, still catch)."""


def shards(index: Path) -> list[str]:
    return sorted(set(json.loads(index.read_text())["weight_map"].values()))


CONFIG = (("config.json",), "config")
TOKENIZER = (("tokenizer.json", "vocab.json"), "tokenizer")


def missing_weights(folder: Path, stem: str) -> list[str]:
    """``stem.safetensors`` (or the shards its ``.index.json`` names) when absent from ``folder``."""
    single = folder / f"{stem}.safetensors"
    index = folder / f"{stem}.safetensors.index.json"
    if single.exists():
        return []
    if index.exists():
        return [f"{folder / s} (weights shard named in {index.name})" for s in shards(index)
                if not (folder / s).exists()]
    pickles = sorted(p.name for pattern in ("*.bin", "*.pt", "*.pth") for p in folder.glob(pattern))
    hint = f"; found {pickles[0]}: pickled weights are never loaded" if pickles else ""
    return [f"{single} (weights{hint})"]


def _missing_in(folder: Path, what: str, files=(), weights: str | None = None) -> list[str]:
    """Missing paths of one folder as ``'PATH (what it is)'``, only the folder when it is absent;
    ``files``: ``(names, what)`` pairs, where any one of ``names`` will do."""
    if not folder.is_dir():
        return [f"{folder} ({what})"]
    missing = [f"{folder / names[0]} ({desc})" for names, desc in files
               if not any((folder / name).exists() for name in names)]
    return missing + (missing_weights(folder, weights) if weights else [])


def missing_official(root: Path, variant: str) -> list[str]:
    """Every path of the official layout for ``variant`` that ``root`` lacks."""
    present = sorted(k for k, d in VARIANT_DIRS.items() if (root / d).is_dir())
    return (_missing_in(root / VARIANT_DIRS[variant], f"variant {variant!r} folder; this folder has variants {present}",
                        (CONFIG, (("silence_latent.pt",), "silence latent")), "model")
            + _missing_in(root / "vae", "VAE folder", (CONFIG,), "diffusion_pytorch_model")
            + _missing_in(root / TEXT_DIR, "text encoder folder", (CONFIG, TOKENIZER), "model"))


def missing_diffusers(root: Path, index: dict, components: tuple[str, ...]) -> list[str]:
    """Every path of a diffusers pipeline folder that ``root`` lacks (semantic networks are optional)."""
    missing = []
    for component in components:
        if component.startswith("audio_") and absent(root, index, component):
            continue
        missing += _missing_in(root / component, f"{component} folder", (CONFIG,), "diffusion_pytorch_model")
    return (missing + _missing_in(root / "vae", "VAE folder", (CONFIG,), "diffusion_pytorch_model")
            + _missing_in(root / "text_encoder", "text encoder folder", (CONFIG,), "model")
            + _missing_in(root / "tokenizer", "tokenizer folder", (TOKENIZER,)))


def absent(root: Path, index: dict, component: str) -> bool:
    return index.get(component) in (None, [None, None]) or not (root / component).exists()


def check_complete(root: Path, missing: list[str]) -> None:
    """Raise :class:`MissingCheckpointFiles` listing every entry of ``missing``, if any."""
    if missing:
        lines = "\n".join(f"  - {m}" for m in missing)
        raise MissingCheckpointFiles(f"checkpoints: {root} is incomplete (nothing was loaded); "
                                     f"missing {len(missing)} path(s):\n{lines}")
