"""Mechanism 4, the windowed decode: only the audio of frames ``[start, stop)``, exactly.

With reach ``(left, right)`` (``Codec.receptive_field``), the samples of frames
``[start, stop)`` depend only on frames ``[start - left, stop - 1 + right]``. So
decode that segment and crop ``left' * hop`` samples off its head, where ``left'``
is how many context frames the segment really has:

* ``loop=True``: the piece loops, frame ``i`` means ``i mod T``; the segment wraps
  around (the head of the loop hears its tail). Reference: the same samples of a
  decode of the latent tiled three times (middle copy).
* ``loop=False``: the segment is clamped to ``[0, T)``; the decoder's own zero
  padding at the ends then matches a plain full decode.

Agreement with the reference is to float rounding (conv kernels may sum in a
different order for a different length), not bit for bit.

Position-dependent codecs (``decode(latent, offset=...)``, ``offset`` = absolute
index of the first frame, e.g. a synthesizer whose oscillator phase is absolute)
get the absolute index of the decoded segment: with ``loop=False`` a frame's own
index; with ``loop=True`` its index in the middle copy of the tiled reference,
i.e. ``k + copies_before * T`` (``copies_before = 1 + left // T``), since
the head's context (unwrapped index ``< 0``) needs a non-negative offset too.
"""

from __future__ import annotations

import inspect
from typing import Any, Sequence

import torch

from demon_nb.engine.receptive_field import check_reach


def _as_batch(codec: Any, latent: torch.Tensor, name: str = "latent") -> torch.Tensor:
    if not isinstance(latent, torch.Tensor) or latent.ndim not in (2, 3):
        shape = tuple(latent.shape) if isinstance(latent, torch.Tensor) else type(latent).__name__
        raise ValueError(f"{name}: expected a tensor [T, C] or [B, T, C], got {shape}")
    if latent.shape[-1] != codec.channels:
        raise ValueError(f"{name}: expected {codec.channels} channels (last dim), got {latent.shape[-1]}")
    if latent.shape[-2] < 1:
        raise ValueError(f"{name}: needs at least one frame, got shape {tuple(latent.shape)}")
    return latent if latent.ndim == 3 else latent.unsqueeze(0)


def _check_window(start: int, stop: int, frames: int, loop: bool) -> tuple[int, int]:
    start, stop = int(start), int(stop)
    if stop <= start:
        raise ValueError(f"window: need stop > start (a positive length), got [{start}, {stop})")
    if loop:
        if not 0 <= start < frames or stop - start > frames:
            raise ValueError(
                f"window: with loop=True need 0 <= start < {frames} and length <= {frames} "
                f"(the window may run past the loop end and wrap), got [{start}, {stop})"
            )
    elif not (0 <= start and stop <= frames):
        raise ValueError(f"window: with loop=False need 0 <= start < stop <= {frames}, got [{start}, {stop})")
    return start, stop


def segment(start: int, stop: int, frames: int, reach: tuple[int, int], loop: bool) -> tuple[torch.Tensor, int]:
    """Frame indices to decode for window ``[start, stop)`` and the number of head frames to crop.

    Pure index math: ``loop=True`` -> ``(arange(start - l, stop + r) mod T, l)``;
    ``loop=False`` -> ``(arange(max(0, start - l), min(T, stop + r)), start - max(0, start - l))``.
    """
    left, right = reach
    if loop:
        return torch.arange(start - left, stop + right) % frames, left
    lo, hi = max(0, start - left), min(frames, stop + right)
    return torch.arange(lo, hi), start - lo


def copies_before(frames: int, reach: tuple[int, int]) -> int:
    """Loop copies placed before the reference's middle copy: ``1 + left // T``."""
    return 1 + reach[0] // frames


def _takes_offset(codec: Any) -> bool:
    try:
        return "offset" in inspect.signature(codec.decode).parameters
    except (TypeError, ValueError):
        return False


def _decode(codec: Any, latent: torch.Tensor, offset: int | None) -> torch.Tensor:
    return codec.decode(latent) if offset is None else codec.decode(latent, offset=offset)


def _offset(codec: Any, first: int, frames: int, reach: tuple[int, int], loop: bool) -> int | None:
    """Absolute index of a segment's first frame (unwrapped ``first``), None if not needed."""
    if not _takes_offset(codec):
        return None
    return first + copies_before(frames, reach) * frames if loop else first


def _reach(codec: Any, reach) -> tuple[int, int]:
    if reach is None:
        return check_reach(getattr(codec, "receptive_field", None), "codec.receptive_field")
    return check_reach(reach, "reach")


def decode_window(codec: Any, latent: torch.Tensor, start: int, stop: int, *, loop: bool = True, reach=None) -> torch.Tensor:
    """Audio of frames ``[start, stop)``: ``[.., A, (stop - start) * hop]`` (batch dim kept if given)."""
    batch = _as_batch(codec, latent)
    frames = batch.shape[1]
    start, stop = _check_window(start, stop, frames, loop)
    reach = _reach(codec, reach)
    index, head = segment(start, stop, frames, reach, loop)
    audio = _decode(codec, batch[:, index.to(batch.device)], _offset(codec, start - head, frames, reach, loop))
    hop = codec.hop
    out = audio[..., head * hop : (head + stop - start) * hop]
    return out if latent.ndim == 3 else out[0]


def _normalise_windows(windows, rows: int) -> list[tuple[int, int, int]]:
    result = []
    for i, w in enumerate(windows):
        w = tuple(int(v) for v in w)
        if len(w) == 2:
            w = (0,) + w
        if len(w) != 3:
            raise ValueError(f"windows[{i}]: expected (start, stop) or (row, start, stop), got {w}")
        if not 0 <= w[0] < rows:
            raise ValueError(f"windows[{i}]: row must be in [0, {rows}), got {w[0]}")
        result.append(w)
    if not result:
        raise ValueError("windows: expected at least one window")
    return result


def decode_windows(
    codec: Any, latents: torch.Tensor, windows: Sequence[Sequence[int]], *, loop: bool = True, reach=None
) -> list[torch.Tensor]:
    """Several windows in as few ``decode`` calls as possible: one per distinct segment length.

    ``latents``: ``[T, C]`` or ``[B, T, C]`` (e.g. the latest completions);
    ``windows``: ``(start, stop)`` (row 0) or ``(row, start, stop)``. Returns one
    ``[A, (stop - start) * hop]`` tensor per window, in order. With ``loop=True``
    every segment is lengthened on the right (more real context, still exact) to
    the longest one, so all windows share one batched call. Position-dependent
    codecs (``offset``) are batched only across rows at the same position.
    """
    batch = _as_batch(codec, latents, "latents")
    rows, frames = batch.shape[:2]
    reach = _reach(codec, reach)
    plans = []
    for row, start, stop in _normalise_windows(windows, rows):
        start, stop = _check_window(start, stop, frames, loop)
        index, head = segment(start, stop, frames, reach, loop)
        plans.append((row, index, head, stop - start, _offset(codec, start - head, frames, reach, loop)))
    if loop:
        longest = max(len(p[1]) for p in plans)
        plans = [(r, torch.arange(i[0], i[0] + longest) % frames, h, n, o) for r, i, h, n, o in plans]
    groups: dict[tuple, list[int]] = {}
    for i, plan in enumerate(plans):
        groups.setdefault((len(plan[1]), plan[4]), []).append(i)
    hop, out = codec.hop, [None] * len(plans)
    for (_, offset), members in groups.items():
        rows_idx = torch.tensor([plans[i][0] for i in members], device=batch.device)
        frame_idx = torch.stack([plans[i][1] for i in members]).to(batch.device)
        audio = _decode(codec, batch[rows_idx[:, None], frame_idx], offset)
        for k, i in enumerate(members):
            _, _, head, n, _ = plans[i]
            out[i] = audio[k, :, head * hop : (head + n) * hop]
    return out


def reference_window(codec: Any, latent: torch.Tensor, start: int, stop: int, *, loop: bool = True) -> torch.Tensor:
    """The slow truth: a full decode, then crop.

    ``loop=True``: decode the latent tiled 3x and take the middle copy (more copies
    when the reach or a wrapping window needs them: at least one whole copy of
    context beyond the reach on each side).
    """
    batch = _as_batch(codec, latent)
    frames = batch.shape[1]
    start, stop = _check_window(start, stop, frames, loop)
    hop = codec.hop
    if loop:
        left, right = _reach(codec, None)
        before = copies_before(frames, (left, right))
        after = 1 + max(0, stop - frames + right) // frames
        audio = _decode(codec, batch.repeat(1, before + 1 + after, 1), 0 if _takes_offset(codec) else None)
        offset = before * frames
        out = audio[..., (offset + start) * hop : (offset + stop) * hop]
    else:
        out = _decode(codec, batch, 0 if _takes_offset(codec) else None)[..., start * hop : stop * hop]
    return out if latent.ndim == 3 else out[0]


__all__ = ["segment", "copies_before", "decode_window", "decode_windows", "reference_window"]
