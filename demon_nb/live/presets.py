"""Presets: every control of the control table saved to JSON, and loaded back through the
same validated write path as a slider.

A preset file (schema ``demon_nb.preset``, version 1)::

    {"schema": "demon_nb.preset", "version": 1, "model": "mini",
     "controls": {"velocity_scale": 1.2, "source_blend": [0.0, ...], "seed": 7, ...,
                  "source": {"latent": "source", "file": "take.latents.safetensors", "sha256": "..."}}}

Curves are lists (one value per frame), latents (source, x0 target) live beside the
JSON in one safetensors file and are referenced by file name and content hash.
Loading validates each value with the control's own write; what it cannot apply is
skipped with a reason, and nothing already set is lost. Files are written to a
temporary name and renamed.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors.torch import load_file, save_file

from ..engine.control_table import CONTROLS

SCHEMA = "demon_nb.preset"
VERSION = 1
LATENT_KINDS = ("latent",)


@dataclass
class LoadReport:
    """What a load applied and what it skipped (control -> reason)."""

    applied: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    model: str | None = None
    extra: dict = field(default_factory=dict)  # the document's other top-level keys (e.g. "midi")

    def __str__(self) -> str:
        lines = [f"applied {len(self.applied)} controls"]
        lines += [f"skipped {name}: {reason}" for name, reason in self.skipped.items()]
        return "; ".join(lines)


def _plain(value: Any) -> Any:
    """A control value as JSON: tensors become (nested) lists, a per-frame curve a flat list."""
    if isinstance(value, torch.Tensor):
        if value.ndim == 3 and value.shape[0] == 1 and value.shape[2] == 1:
            return value.reshape(-1).tolist()
        return value.squeeze(0).tolist() if value.ndim == 3 else value.tolist()
    return value


def _sha256(tensor: torch.Tensor) -> str:
    return hashlib.sha256(tensor.detach().cpu().contiguous().float().numpy().tobytes()).hexdigest()


def _atomic_write(path: Path, write: Callable[[str], None]) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def check_target(path: str | os.PathLike, suffixes: tuple[str, ...]) -> Path:
    """``path`` as a Path whose folder exists and is writable; ValueError naming it otherwise."""
    path = Path(path)
    if path.suffix.lower() not in suffixes:
        raise ValueError(f"path: expected a file name ending in {' or '.join(suffixes)}, got {str(path)!r}")
    if not path.parent.is_dir():
        raise ValueError(f"path: the folder {str(path.parent)!r} does not exist")
    if not os.access(path.parent, os.W_OK):
        raise ValueError(f"path: the folder {str(path.parent)!r} is not writable")
    return path


def capture(get: Callable[[str], Any], model: str, latent_file: str) -> tuple[dict, dict[str, torch.Tensor]]:
    """``(document, latents)``: every control's current value (``get(name)``); latents are
    referenced by ``latent_file`` and returned to be saved there."""
    controls, latents = {}, {}
    for name, row in CONTROLS.items():
        value = get(name)
        if row.kind in LATENT_KINDS and value is not None:
            latents[name] = value.detach().cpu().float().contiguous()
            controls[name] = {"latent": name, "file": latent_file, "sha256": _sha256(value)}
        else:
            controls[name] = _plain(value)
    return {"schema": SCHEMA, "version": VERSION, "model": model, "controls": controls}, latents


def save(path: str | os.PathLike, get: Callable[[str], Any], model: str, extra: dict | None = None) -> Path:
    """Write every control's current value (``get(name)``) to ``path`` (.json); latents go to
    ``<stem>.latents.safetensors`` beside it. ``extra``: more top-level keys (e.g. a MIDI map)."""
    path = check_target(path, (".json",))
    document, latents = capture(get, model, f"{path.stem}.latents.safetensors")
    if latents:
        _atomic_write(path.with_name(f"{path.stem}.latents.safetensors"), lambda tmp: save_file(latents, tmp))
    document.update(extra or {})
    _atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(document, indent=1)))
    return path


def read(path: str | os.PathLike) -> dict:
    """The preset document, checked at the top level (ValueError naming what is wrong)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"path: no preset file at {str(path)!r}")
    try:
        document = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"path: {str(path)!r} is not a preset (not JSON: {error})") from None
    if not isinstance(document, dict) or document.get("schema") != SCHEMA:
        raise ValueError(f"path: {str(path)!r} is not a preset (schema must be {SCHEMA!r})")
    version = document.get("version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ValueError(f"version: expected an integer >= 1, got {version!r}")
    if version > VERSION:
        raise ValueError(f"version: {str(path)!r} was written by a newer demon_nb (preset version {version}; "
                         f"this one reads up to {VERSION})")
    if not isinstance(document.get("controls"), dict):
        raise ValueError(f"controls: expected an object of control values in {str(path)!r}")
    return document


def load(path: str | os.PathLike, write: Callable[[str, Any], Any]) -> LoadReport:
    """Apply a preset through ``write(name, value)`` (the validated write path). Unknown controls,
    values the write rejects and missing or altered latent files are skipped with a reason."""
    path = Path(path)
    document = read(path)
    report = LoadReport(model=document.get("model"), extra={k: v for k, v in document.items()
                                                            if k not in ("schema", "version", "model", "controls")})
    latents: dict[str, torch.Tensor] | None = None
    for name, value in document["controls"].items():
        if name not in CONTROLS:
            report.skipped[str(name)] = "unknown control"
            continue
        try:
            if isinstance(value, dict) and CONTROLS[name].kind in LATENT_KINDS:
                if latents is None:
                    latents = _read_latents(path.with_name(str(value.get("file", ""))))
                value = _latent(name, value, latents)
            write(name, value)
        except ValueError as error:
            report.skipped[name] = str(error)
            continue
        report.applied.append(name)
    return report


def _read_latents(file: Path) -> dict[str, torch.Tensor]:
    if not file.is_file():
        return {}
    try:
        return load_file(str(file))
    except Exception:  # a damaged file: every latent in it is skipped, with the reason below
        return {}


def _latent(name: str, ref: dict, latents: dict[str, torch.Tensor]) -> torch.Tensor:
    tensor = latents.get(str(ref.get("latent")))
    if tensor is None:
        raise ValueError(f"{name}: its latent file {ref.get('file')!r} is missing or unreadable")
    if _sha256(tensor) != ref.get("sha256"):
        raise ValueError(f"{name}: its latent in {ref.get('file')!r} does not match the saved hash")
    return tensor
