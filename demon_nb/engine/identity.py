"""Streaming == batch: a depth-D interleaved stream against D one-slot runs.

Every slot draws all its noise from its own generator, so running requests side
by side in one ring, born at staggered ticks, must give the same latents as
running each alone. Returns the largest absolute difference over all requests.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch

from .request import Request
from .ring import Ring


def run_alone(make_ring: Callable[[int], Ring], request: Request) -> torch.Tensor:
    ring = make_ring(1)
    ring.submit(request)
    while True:
        done = ring.tick()
        if done:
            return done[0].latent


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
