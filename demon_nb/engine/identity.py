"""Streaming == batch: a depth-D interleaved stream against D one-slot runs.

Every slot draws all its noise from its own generator, so running requests side
by side in one ring, born at staggered ticks, must give the same latents as
running each alone with :func:`demon_nb.engine.sampler.sample` (the same
sampler, one request, no ring). Returns the largest absolute difference.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch

from .request import Request, prepare
from .ring import Ring
from .sampler import sample


def run_alone(make_ring: Callable[[int], Ring], request: Request) -> torch.Tensor:
    """One request through :func:`sample`, with the ring's denoiser, shape, schedule and state."""
    ring = make_ring(1)
    prepared = prepare(request, ring.frames, ring.channels, ring.device, ring.dtype)
    return sample(ring.denoiser, prepared, ring.schedule_for(prepared), ring.state.snapshot(),
                  frames=ring.frames, channels=ring.channels, device=ring.device, dtype=ring.dtype)


def run_interleaved(make_ring: Callable[[int], Ring], requests: Sequence[Request], depth: int) -> dict:
    ring = make_ring(depth)
    pending = list(requests)
    results = {}
    while len(results) < len(requests):
        if pending and len(ring.queue) < ring.queue.maxlen:
            ring.submit(pending.pop(0))
        for completion in ring.tick():
            results[completion.tag] = completion.latent
    return results


def max_abs_diff(make_ring: Callable[[int], Ring], requests: Sequence[Request], depth: int) -> float:
    """``max |stream - alone|`` over requests (tags must be unique)."""
    together = run_interleaved(make_ring, requests, depth)
    return max(float((together[r.tag] - run_alone(make_ring, r)).abs().max()) for r in requests)
