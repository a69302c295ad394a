"""Audio loading and resampling for ``SynthCodec.encode_array`` / ``encode_file``."""

from __future__ import annotations

import math

import numpy as np
import torch


def resample(audio, sample_rate: int, target: int) -> torch.Tensor:
    """Polyphase resampling (``scipy.signal.resample_poly``) along the last axis."""
    if not isinstance(sample_rate, (int, np.integer)) or sample_rate <= 0:
        raise ValueError(f"sample_rate: expected a positive int, got {sample_rate!r}")
    if isinstance(audio, torch.Tensor):
        audio = audio.detach().cpu().numpy()
    try:
        x = np.asarray(audio, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"audio: expected a numeric array, got {type(audio).__name__}") from exc
    if x.size == 0:
        raise ValueError("audio: is empty")
    if sample_rate != target:
        from scipy.signal import resample_poly

        g = math.gcd(int(sample_rate), int(target))
        x = resample_poly(x, target // g, int(sample_rate) // g, axis=-1).astype(np.float32)
    return torch.from_numpy(np.ascontiguousarray(x))


def load_audio(path: str, target: int = 48_000) -> torch.Tensor:
    """Read a file with soundfile (falls back to PyAV) -> ``[A, N]`` float32 at ``target`` Hz."""
    try:
        import soundfile as sf

        data, sr = sf.read(str(path), dtype="float32", always_2d=True)
        x = data.T
    except Exception:  # noqa: BLE001 - formats libsndfile cannot read: try PyAV
        x, sr = _load_av(path)
    return resample(x, int(sr), target)


def _load_av(path: str):
    try:
        import av

        with av.open(str(path)) as container:
            stream = container.streams.audio[0]
            chunks = [f.to_ndarray() for f in container.decode(stream)]
            sr = stream.rate
    except Exception as exc:  # noqa: BLE001
        raise ValueError(f"path: could not read audio from {path!r} ({exc})") from exc
    if not chunks:
        raise ValueError(f"path: no audio samples in {path!r}")
    x = np.concatenate([c if c.ndim == 2 and c.shape[0] <= 8 else c.reshape(1, -1) for c in chunks], axis=-1)
    if x.dtype.kind == "i":
        x = x.astype(np.float32) / float(np.iinfo(x.dtype).max)
    return x.astype(np.float32), sr
