"""Measure the propagation classes by counterfactual runs with equal seeds.

For a probe parameter we run the same stream three times: A keeps the old value,
B has the new value from the start, C switches from old to new just before tick
``k``. Completions are matched by birth order (the k-th request born has the same
seed in every run). Then, in ticks counted from the change (the tick right after
the write is tick 1):

* onset: the first tick whose completions differ between C and A;
* convergence: the first tick with a completion from which every completion of
  C equals B's;
* gap: the longest run of ticks after the change without any completion in C;
* dead: that gap minus the longest gap of A and of B (the normal gap between
  completions under either value is not dead air: a longer schedule has a
  longer cadence, discarding work is what makes dead air).

Completions arrive every ``S / D`` ticks, so the measured latency depends on
where in that cadence the write lands. We repeat the measurement for every phase
of one cadence period and report the best case (the class's own latency) as
``onset_ticks`` / ``convergence_ticks`` and the worst case as ``..._max``.

Classes and their probes (DESIGN.md section 4): rebuild (loop length: the latent
shape changes, so the slots in flight are discarded), submission (denoise, and
steps: felt by slots born after the write, nothing discarded), step (velocity
scale, shared state), decode (a post-decode gain, felt at the next decode).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable

import torch

from .request import Request
from .ring import Completion, Ring

Controls = dict[str, Any]
MakeRequest = Callable[[int, Controls], Request]


@dataclass(frozen=True)
class Probe:
    name: str
    klass: str
    old: Any
    new: Any
    apply: Callable[[Ring, Controls, Any], None]  # write the value the way the instrument would


def _set_frames(ring: Ring, controls: Controls, value) -> None:
    ring.rebuild(frames=value)
    controls["frames"] = value  # requests born from the next tick on are sized by it


def _set_steps(ring: Ring, controls: Controls, value) -> None:
    controls["steps"] = value
    ring.express()  # as the instrument does for every submission write


def _set_denoise(ring: Ring, controls: Controls, value) -> None:
    controls["denoise"] = value
    ring.express()


def _set_velocity_scale(ring: Ring, controls: Controls, value) -> None:
    ring.state.set("velocity_scale", value)


def _set_gain(ring: Ring, controls: Controls, value) -> None:
    controls["gain"] = value


PROBES = (
    Probe("loop_length", "rebuild", None, 48, _set_frames),
    Probe("denoise", "submission", 1.0, 0.6, _set_denoise),
    Probe("steps", "submission", None, 10, _set_steps),
    Probe("velocity_scale", "step", 1.0, 1.3, _set_velocity_scale),
    Probe("gain", "decode", 1.0, 0.5, _set_gain),
)


@dataclass
class Run:
    outputs: list[list[tuple[int, torch.Tensor]]]  # per tick: (birth index, decoded output)


def run_stream(make_ring: Callable[[], Ring], make_request: MakeRequest, ticks: int,
               change: tuple[int, Probe, Any] | None = None, initial: tuple[Probe, Any] | None = None,
               decode: Callable[[torch.Tensor], torch.Tensor] = lambda z: z) -> Run:
    """Run ``ticks`` ticks with a continuous feed; apply ``change=(tick, probe, value)`` before that tick."""
    ring = make_ring()
    controls: Controls = {"denoise": 1.0, "gain": 1.0, "steps": None, "frames": ring.frames}
    births = iter(range(10**9))

    def feed() -> Request:
        return make_request(next(births), controls)

    ring.feed = feed
    if initial is not None:
        initial[0].apply(ring, controls, initial[1])
    outputs = []
    for tick in range(ticks):
        if change is not None and tick == change[0]:
            change[1].apply(ring, controls, change[2])
        gain = controls["gain"]
        outputs.append([(c.request.tag, gain * decode(c.latent)) for c in ring.tick()])
    return Run(outputs)


def _longest_gap(run: Run, start: int, stop: int) -> int:
    longest = current = 0
    for tick in range(start, stop):
        current = 0 if run.outputs[tick] else current + 1
        longest = max(longest, current)
    return longest


def _index(run: Run) -> dict[int, tuple[int, torch.Tensor]]:
    return {tag: (tick, out) for tick, outs in enumerate(run.outputs) for tag, out in outs}


def measure(probe: Probe, make_ring: Callable[[], Ring], make_request: MakeRequest, change_tick: int, ticks: int) -> dict:
    """Onset, convergence and dead ticks of one probe (see the module docstring)."""
    # the reference runs go on longer so that they reach every birth index that C completes
    old = run_stream(make_ring, make_request, 2 * ticks, initial=(probe, probe.old) if probe.old is not None else None)
    new = run_stream(make_ring, make_request, 2 * ticks, initial=(probe, probe.new))
    switched = run_stream(make_ring, make_request, ticks, change=(change_tick, probe, probe.new),
                          initial=(probe, probe.old) if probe.old is not None else None)
    old_by_tag, new_by_tag = _index(old), _index(new)
    onset = convergence = None
    for tick in range(change_tick, ticks):
        outs = switched.outputs[tick]
        if onset is None and any(tag not in old_by_tag or not torch.equal(out, old_by_tag[tag][1]) for tag, out in outs):
            onset = tick - change_tick + 1
    # convergence: the first tick with a completion from which every later one equals the always-new run's
    for tick in range(ticks - 1, change_tick - 1, -1):
        outs = switched.outputs[tick]
        if any(tag not in new_by_tag or not torch.equal(out, new_by_tag[tag][1]) for tag, out in outs):
            break
        if outs:
            convergence = tick - change_tick + 1
    gap = _longest_gap(switched, change_tick, ticks)
    normal = max(_longest_gap(old, change_tick, ticks), _longest_gap(new, change_tick, ticks))
    return {"probe": probe.name, "onset_ticks": onset, "convergence_ticks": convergence,
            "gap_ticks": gap, "dead_ticks": max(0, gap - normal)}


def measure_classes(make_ring: Callable[[], Ring], make_request: MakeRequest, steps: int, depth: int) -> dict:
    """Every probe at every phase of one completion cadence; best and worst case per class."""
    warmup, period = 2 * steps, max(1, -(-steps // depth))
    results = {}
    for probe in PROBES:
        runs = [measure(probe, make_ring, make_request, warmup + phase, warmup + phase + 4 * steps) for phase in range(period)]
        key_name = probe.klass if probe.klass not in results else probe.name
        results[key_name] = {"probe": probe.name, "class": probe.klass}
        for key in ("onset_ticks", "convergence_ticks", "gap_ticks", "dead_ticks"):
            values = [r[key] for r in runs]
            results[key_name][key] = min(values)
            results[key_name][key.replace("_ticks", "_ticks_max")] = max(values)
    return results


def denoise_sweep(make_ring: Callable[[], Ring], make_request: MakeRequest, ticks: int, warmup: int) -> int:
    """Completions while the denoise slider moves every tick (after a warm-up at rest)."""
    ring = make_ring()
    controls: Controls = {"denoise": 1.0, "gain": 1.0}
    births = iter(range(10**9))
    controls.update(steps=None, frames=ring.frames)
    ring.feed = lambda: make_request(next(births), controls)
    for _ in range(warmup):
        ring.tick()
    completions = 0
    for tick in range(ticks):
        controls["denoise"] = 0.5 + 0.45 * ((tick * 7919) % 97) / 97  # a new value every tick
        completions += len(ring.tick())
    return completions


def time_ticks(ring: Ring, make_request: MakeRequest, ticks: int) -> list[float]:
    """Wall-clock milliseconds of each tick of a fed ring."""
    births = iter(range(10**9))
    ring.feed = lambda: make_request(next(births), {"denoise": 1.0, "gain": 1.0, "steps": None, "frames": ring.frames})
    times = []
    for _ in range(ticks):
        start = time.perf_counter()
        ring.tick()
        times.append((time.perf_counter() - start) * 1e3)
    return times


__all__ = ["Probe", "PROBES", "measure", "measure_classes", "denoise_sweep", "run_stream", "time_ticks", "Completion"]
