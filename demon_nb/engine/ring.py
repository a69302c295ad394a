"""The ring buffer: D generations in flight at different noise levels.

Read this file beside DEMON (arXiv 2605.28657), section "engine".

* A **slot** is one in-flight generation: its request, its noisy latent ``x``,
  its own timestep schedule chosen when it is born (mechanism 1) and its own
  random generator seeded from the request.
* A **tick** advances every active slot by one step with one batched denoiser
  call for the positive rows (every active condition of every slot) and at most
  one for the negative rows (classifier-free guidance).  The batch is assembled
  in persistent buffers (``_rows_x``, ``_rows_t``) and every slot draws its noise
  into its own buffer, so the engine allocates nothing per tick for them.
* Every parameter read at each step comes from the shared :class:`SharedState`
  (mechanism 2): a write lands at the next tick boundary for all slots at once.
  The SDE step blends toward the source per frame (mechanism 3, ``steps.py``).
* A slot that takes its last step returns its latent in that same tick; several
  slots may finish in one tick.

The per-step composition (model input, guidance, the ODE/SDE step, DCW) lives in
``sampler.py``; this file only orchestrates slots, batching, births and structure.

Step-write previews: a step write is read at the next tick, but at depth D and S steps a slot
finishes only every S / D ticks. When the tick that first reads a new state version finishes no
slot, the slot nearest its end also keeps its x0 estimate of that step
(``x0_hat = x_t - t v``, under the new state) as ``ring.preview``: a first look that the player
can play one or more ticks before the next completion. Slots are not touched.

Structure changes: growing the depth adds empty slots at once; shrinking lets
the surplus slots finish (drain) and never discards them. Steps and shift are
per-slot (submission class): slots in flight finish on the schedule they were
born with, new births take the new one, nothing is discarded. Only a change of
loop length is a *rebuild*: the latent shape changes, so in-flight slots are
discarded (dead air).
The ``mode="global"`` baseline mimics a global-schedule engine (StreamDiffusion):
a request whose schedule differs from the ring's flushes every slot in flight.
"""

from __future__ import annotations

import dataclasses
import math
import threading
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import torch

from . import sampler
from .checks import check_int
from .control_table import MAX_DEPTH
from .request import Request, prepare
from .sampler import Slot
from .schedule import MAX_STEPS, check_schedule_args, timesteps
from .state import SharedState



@dataclass(frozen=True)
class Completion:
    latent: torch.Tensor  # [T, C]
    request: Request
    slot: int
    born_tick: int
    finished_tick: int
    state_versions: tuple[int, ...]  # shared-state version read at each step
    param_versions: Mapping[str, int]  # per-parameter versions at the last step
    first_look: bool = False  # from the express lane's shorter schedule (see Ring.express)
    preview: bool = False  # not a finished slot: its x0 estimate after a step write (see Ring.preview)

    @property
    def tag(self) -> Any:
        return self.request.tag


class Ring:
    def __init__(self, denoiser, *, frames: int, channels: int, depth: int = 4, steps: int = 8, shift: float = 3.0,
                 queue_size: int = 8, device="cpu", dtype=torch.float32, mode: str = "per_slot",
                 state: SharedState | None = None, stagger: bool = True):
        check_schedule_args(steps, shift, 1.0)
        _check_depth(depth)
        if mode not in ("per_slot", "global"):
            raise ValueError(f"mode: expected 'per_slot' or 'global', got {mode!r}")
        check_int("queue_size", queue_size, 1)
        self.denoiser = denoiser
        self.frames, self.channels = frames, channels
        self.device, self.dtype = torch.device(device), dtype
        self.steps, self.shift, self.mode = steps, float(shift), mode  # for births whose request leaves them None
        self.depth = depth
        self.stagger = stagger
        self._last_birth_tick = -(10**9)
        self._birth_steps = steps  # steps of the newest birth: sets the birth cadence
        self.state = state or SharedState(frames, channels, device, dtype)
        self.queue: deque[Request] = deque(maxlen=queue_size)
        self.feed: Callable[[], Request] | None = None
        # LoRA adapters are per slot (``Request.adapter``, chosen at birth: a swap is submission class).
        # Before each forward the ring calls ``select_adapter(name, snapshot)`` (the tick's shared-state
        # snapshot: e.g. its lora_strength) once per group of rows sharing an adapter (the base
        # network's rows first); None = the model runs without adapters.
        self.select_adapter: Callable[[str | None, Mapping[str, Any]], None] | None = None
        self._snap = None
        self.slots: list[Slot | None] = [None] * depth
        self.tick_count = 0
        self.dropped = 0  # requests dropped from a full queue (oldest first)
        self.discarded = 0  # in-flight slots thrown away by loop-length rebuilds or global flushes
        self.rebuilds = 0  # loop-length rebuilds applied
        self._global_schedule: tuple[float, ...] | None = None
        self._lock = threading.Lock()
        self._pending_structure: dict[str, Any] = {}
        self._express = False  # an express birth is due at the next birth phase
        self._express_steps: int | None = None  # its first-look steps (None: the request's schedule)
        self.previews = True  # see the module docstring; ``preview``: the last tick's, or None
        self.preview: Completion | None = None
        self._last_state_version: int | None = None
        self._rows_x = torch.empty(0, frames, channels, device=self.device, dtype=dtype)  # batch input buffer
        self._rows_t = torch.empty(0, device=self.device, dtype=dtype)

    # -- control (any thread) ---------------------------------------------------
    def submit(self, request: Request) -> None:
        """Validate and enqueue; a full queue drops its oldest request."""
        prepared = prepare(request, self.frames, self.channels, self.device, self.dtype)
        self._check_conditions(prepared)
        with self._lock:
            if len(self.queue) == self.queue.maxlen:
                self.dropped += 1
            self.queue.append(prepared)

    def _check_conditions(self, request: Request) -> None:
        """Collate each condition once at submit, so a malformed one fails here, not in the tick."""
        rows = [("cond", request.cond, request.context)]
        rows += [(f"conditions[{i}].cond", c.cond, c.context) for i, c in enumerate(request.conditions)]
        if request.negative is not None:
            rows.append(("negative", request.negative, request.context))
        for name, cond, context in rows:
            try:
                self.denoiser.collate([cond], [context])
            except Exception as error:
                raise ValueError(f"{name}: the denoiser cannot use this condition/context: {error}") from None

    def set_depth(self, depth: int) -> None:
        """Hot depth change at the next tick: growing adds slots, shrinking drains them."""
        _check_depth(depth)
        with self._lock:
            self._pending_structure["depth"] = depth

    def set_schedule(self, *, steps: int | None = None, shift: float | None = None) -> None:
        """Default steps / shift for births from the next tick on (submission class): the slots in
        flight finish on the schedule they were born with; nothing is discarded."""
        check_schedule_args(self.steps if steps is None else steps, self.shift if shift is None else shift, 1.0)
        with self._lock:
            earlier = self._pending_structure.get("schedule", {})
            self._pending_structure["schedule"] = {"steps": steps or earlier.get("steps"),
                                                   "shift": earlier.get("shift") if shift is None else float(shift)}

    def express(self, first_look: int | None = None) -> None:
        """Express lane: at the next tick one slot is born with the newest request, outside the birth
        cadence (in a free slot, else in one extra row that leaves when it finishes). At most one
        express slot is in flight; a write while it runs is picked up by the regular births.

        ``first_look=k`` (1 <= k < the request's steps): the express slot runs a k-step schedule, a
        first look heard after k ticks; the regular cadence goes on and its births bring the
        full-quality completions (``Completion.first_look`` tells them apart). None or 0: the
        express slot runs the request's own schedule and restarts the cadence."""
        if first_look is not None:
            check_int("first_look", first_look, 0, MAX_STEPS)
        with self._lock:
            self._pending_structure["express"] = first_look or None

    def rebuild(self, *, frames: int) -> None:
        """Loop-length change at the next tick: discards the slots in flight (their shape is gone)."""
        check_int("frames", frames, 1)
        with self._lock:
            self._pending_structure["frames"] = frames

    # -- the tick ------------------------------------------------------------------
    def tick(self) -> list[Completion]:
        """Advance every active slot one step; return every slot that finished now."""
        self.preview = None
        self._apply_structure_changes()
        snap = self._snap = self.state.snapshot()
        self._birth_slots()
        tick_index = self.tick_count
        self.tick_count += 1
        active = [(i, slot) for i, slot in enumerate(self.slots) if slot is not None]
        if not active:
            return []
        inputs = {i: sampler.model_input(slot, snap) for i, slot in active}
        positive = self._positive_velocities(active, inputs)
        negative = self._negative_velocities(active, inputs, snap)
        looker = self._preview_slot(active, snap.version)
        done = []
        for i, slot in active:
            velocities, weights = positive[i]
            info = sampler.advance(slot, velocities, weights, negative.get(i), snap, want_x0=i == looker)
            slot.versions.append(snap.version)
            if i == looker:
                self.preview = Completion(info["x0_hat"][0], slot.request, i, slot.born_tick, tick_index,
                                          tuple(slot.versions), snap.param_versions, first_look=True, preview=True)
            if slot.step == slot.steps:
                done.append(Completion(slot.x[0], slot.request, i, slot.born_tick, tick_index,
                                       tuple(slot.versions), snap.param_versions, slot.first_look))
                self.slots[i] = None
        self._trim_drained_slots()
        return done

    def _preview_slot(self, active, version: int) -> int | None:
        """The slot whose x0 estimate is this tick's preview: only at the first tick under a new
        state version, only when no slot finishes at it; the one with the fewest steps left."""
        new_version = self._last_state_version is not None and version != self._last_state_version
        self._last_state_version = version
        if not (self.previews and new_version) or any(slot.step + 1 == slot.steps for _, slot in active):
            return None
        return min(active, key=lambda item: (item[1].steps - item[1].step, item[1].born_tick))[0]

    def _positive_velocities(self, active, inputs) -> dict[int, tuple[list, list]]:
        """One batched forward over every active condition of every slot."""
        xs, ts, conds, contexts, adapters, owners = [], [], [], [], [], []
        for i, slot in active:
            for cond, context, weight in sampler.positive_rows(slot):
                xs.append(inputs[i])
                ts.append(slot.t)
                conds.append(cond)
                contexts.append(context)
                adapters.append(slot.request.adapter)
                owners.append((i, weight))
        v = self._forward(xs, ts, conds, contexts, adapters)
        by_slot: dict[int, tuple[list, list]] = {}
        for row, (i, weight) in enumerate(owners):
            velocities, weights = by_slot.setdefault(i, ([], []))
            velocities.append(v[row:row + 1])
            weights.append(weight)
        return by_slot

    def _negative_velocities(self, active, inputs, state) -> dict[int, torch.Tensor]:
        """At most one forward for the unconditional rows (full CFG at guided steps; residual-initialize at birth).
        They see the same model input as the positive rows (mask pre-blend included)."""
        rows = [(i, slot) for i, slot in active if sampler.needs_negative(slot, state)]
        if not rows:
            return {}
        xs = [inputs[i] for i, _ in rows]
        ts = [slot.t for _, slot in rows]
        conds = [slot.request.negative if slot.request.negative is not None else self.denoiser.unconditional()
                 for _, slot in rows]
        v = self._forward(xs, ts, conds, [slot.request.context for _, slot in rows],
                          [slot.request.adapter for _, slot in rows])
        return {i: v[row:row + 1] for row, (i, _) in enumerate(rows)}

    def _forward(self, xs, ts, conds, contexts, adapters) -> torch.Tensor:
        """One batched call per adapter in use (one in all but the ticks while a LoRA swap drains)."""
        names = sorted(set(adapters), key=lambda name: (name is not None, name or ""))  # the base network first
        if self.select_adapter is None or len(names) == 1:
            if self.select_adapter is not None:
                self.select_adapter(names[0], self._snap)
            return self._forward_rows(xs, ts, conds, contexts)
        out = None
        for name in names:
            rows = [r for r, a in enumerate(adapters) if a == name]
            self.select_adapter(name, self._snap)
            v = self._forward_rows([xs[r] for r in rows], [ts[r] for r in rows], [conds[r] for r in rows],
                                   [contexts[r] for r in rows])
            if out is None:
                out = v.new_empty((len(xs),) + tuple(v.shape[1:]))
            out[rows] = v
        return out

    def _forward_rows(self, xs, ts, conds, contexts) -> torch.Tensor:
        """One batched call; rows are copied into the persistent input buffers (grown, never shrunk)."""
        n = len(xs)
        if self._rows_x.shape[0] < n or self._rows_x.shape[1] != self.frames or sampler._unwritable(self._rows_x):
            self._rows_x = torch.empty(max(n, 2 * self.depth), self.frames, self.channels,
                                       device=self.device, dtype=self.dtype)
            self._rows_t = torch.empty(self._rows_x.shape[0], device=self.device, dtype=self.dtype)
        x, t = self._rows_x[:n], self._rows_t[:n]
        for row, (x_row, t_row) in enumerate(zip(xs, ts)):
            x[row].copy_(x_row[0])
            t[row] = t_row
        return self.denoiser.velocity(x, t, self.denoiser.collate(conds, contexts))

    # -- births, depth and rebuilds ---------------------------------------------
    def _next_request(self) -> Request | None:
        with self._lock:
            if self.queue:
                return self.queue.popleft()
        if self.feed is not None:
            return prepare(self.feed(), self.frames, self.channels, self.device, self.dtype)
        return None

    def _birth_slots(self) -> None:
        """Fill free slots. Staggered: births spaced ``S // D`` ticks apart (``ceil(D / S)`` per
        tick when D > S; S of the newest birth), so completions come at an even cadence of D / S per tick.
        An express birth (see :meth:`express`) comes first and restarts the cadence from this tick."""
        if self._express:
            self._express = False
            if not any(slot is not None and slot.express for slot in self.slots):
                free = [i for i in range(self.depth) if self.slots[i] is None]
                request = self._next_request()
                if request is not None:
                    if not free:
                        self.slots.append(None)
                    steps = len(self.schedule_for(request)) - 1
                    look = self._express_steps if self._express_steps and self._express_steps < steps else None
                    self._birth(free[0] if free else len(self.slots) - 1, request, express=True, first_look=look)
                    if look is None:
                        return
        limit = self.depth
        if self.stagger:
            if self.tick_count - self._last_birth_tick < max(1, self._birth_steps // self.depth):
                return
            limit = max(1, math.ceil(self.depth / self._birth_steps))
        for i in range(self.depth):
            if limit == 0:
                return
            if self.slots[i] is not None:
                continue
            request = self._next_request()
            if request is None:
                return
            self._birth(i, request)
            limit -= 1

    def _birth(self, i: int, request: Request, express: bool = False, first_look: int | None = None) -> None:
        """Start a slot; a first look (``first_look`` steps) keeps the birth cadence as it was."""
        schedule = self.schedule_for(request if first_look is None else dataclasses.replace(request, steps=first_look,
                                                                                             timesteps=None))
        if self.mode == "global" and schedule != self._global_schedule:
            self._flush()
            self._global_schedule = schedule
        slot = sampler.new_slot(request, schedule, (1, self.frames, self.channels), self.device, self.dtype,
                                born_tick=self.tick_count)
        slot.express, slot.first_look = express, first_look is not None
        self.slots[i] = slot
        if first_look is None:
            self._last_birth_tick, self._birth_steps = self.tick_count, len(schedule) - 1

    def schedule_for(self, request: Request) -> tuple[float, ...]:
        if request.timesteps is not None:
            return request.timesteps
        denoise = request.denoise if request.source is not None else 1.0
        steps = self.steps if request.steps is None else request.steps
        return timesteps(steps, self.shift if request.shift is None else request.shift, denoise)

    def _flush(self) -> None:
        for i, slot in enumerate(self.slots):
            if slot is not None:
                self.discarded += 1
                self.slots[i] = None
        self._last_birth_tick = -(10**9)  # an empty ring restarts its stagger at once

    def _apply_structure_changes(self) -> None:
        with self._lock:
            pending, self._pending_structure = self._pending_structure, {}
        if "schedule" in pending:
            change = pending["schedule"]
            self.steps = change["steps"] or self.steps
            self.shift = self.shift if change["shift"] is None else change["shift"]
        if "frames" in pending and pending["frames"] != self.frames:
            self._flush()
            self.rebuilds += 1
            self.frames = pending["frames"]
            self.state.resize(self.frames)
            with self._lock:
                self.queue.clear()
            self._global_schedule = None
        if "express" in pending:
            self._express, self._express_steps = True, pending["express"]
        if "depth" in pending:
            self.depth = pending["depth"]
            if len(self.slots) < self.depth:
                self.slots.extend([None] * (self.depth - len(self.slots)))
        self._trim_drained_slots()

    def _trim_drained_slots(self) -> None:
        while len(self.slots) > self.depth and self.slots[-1] is None:
            self.slots.pop()

    # -- views --------------------------------------------------------------------
    @property
    def in_flight(self) -> int:
        return sum(slot is not None for slot in self.slots)

    def adapters_in_use(self) -> set[str]:
        """LoRA adapter names of the slots in flight and the queued requests (what must stay loaded)."""
        with self._lock:
            queued = [request.adapter for request in self.queue]
        return {name for name in [s.request.adapter for s in self.slots if s is not None] + queued if name is not None}

    def slots_view(self) -> list[dict | None]:
        """Per slot: step, steps, current noise level t, birth tick, tag (for the ring view)."""
        return [None if s is None else {"step": s.step, "steps": s.steps, "t": s.schedule[s.step],
                                         "born_tick": s.born_tick, "draining": i >= self.depth and not s.express,
                                         "express": s.express, "tag": s.request.tag}
                for i, s in enumerate(self.slots)]


def _check_depth(depth) -> None:
    check_int("depth", depth, 1, MAX_DEPTH)

