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

Structure changes: growing the depth adds empty slots at once; shrinking lets
the surplus slots finish (drain) and never discards them. A change of steps or
loop length is a *rebuild*: in-flight slots are discarded (dead air). Rebuilds
never chain: one that arrives before the previous rebuild's first completion
waits for it (later writes merge into it), so a burst of steps changes costs
at most one rebuild's dead air at a time, not the sum.
The ``mode="global"`` baseline mimics a global-schedule engine (StreamDiffusion):
a request whose schedule differs from the ring's flushes every slot in flight.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import torch

from . import steps as S
from .request import Request, prepare
from .schedule import check_schedule_args, timesteps
from .state import SharedState, Snapshot

MAX_DEPTH = 16


@dataclass
class Slot:
    request: Request
    schedule: tuple[float, ...]
    x: torch.Tensor  # [1, T, C]
    generator: torch.Generator
    initial_noise: torch.Tensor  # [1, T, C], also the residual-self "unconditional velocity"
    mask_noise: torch.Tensor | None
    born_tick: int
    noise: torch.Tensor | None = None  # [1, T, C] buffer the per-step noise is drawn into
    step: int = 0
    momentum: S.MomentumBuffer = field(default_factory=S.MomentumBuffer)
    uncond_velocity: torch.Tensor | None = None  # residual-initialize cache
    versions: list[int] = field(default_factory=list)

    @property
    def steps(self) -> int:
        return len(self.schedule) - 1


@dataclass(frozen=True)
class Completion:
    latent: torch.Tensor  # [T, C]
    request: Request
    slot: int
    born_tick: int
    finished_tick: int
    state_versions: tuple[int, ...]  # shared-state version read at each step
    param_versions: Mapping[str, int]  # per-parameter versions at the last step

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
        if isinstance(queue_size, bool) or not isinstance(queue_size, int) or queue_size < 1:
            raise ValueError(f"queue_size: expected an integer >= 1, got {queue_size!r}")
        self.denoiser = denoiser
        self.frames, self.channels = frames, channels
        self.device, self.dtype = torch.device(device), dtype
        self.steps, self.shift, self.mode = steps, float(shift), mode
        self.depth = depth
        self.stagger = stagger
        self._last_birth_tick = -(10**9)
        self.state = state or SharedState(frames, channels, device, dtype)
        self.queue: deque[Request] = deque(maxlen=queue_size)
        self.feed: Callable[[], Request] | None = None
        self.slots: list[Slot | None] = [None] * depth
        self.tick_count = 0
        self.dropped = 0  # requests dropped from a full queue (oldest first)
        self.discarded = 0  # in-flight slots thrown away by rebuilds or global flushes
        self.rebuilds = 0  # rebuilds applied (a burst that merged while held counts once)
        self._global_schedule: tuple[float, ...] | None = None
        self._lock = threading.Lock()
        self._pending_structure: dict[str, Any] = {}
        self._refilling = False  # a rebuild happened and nothing has completed since
        self._rebuild_tick = 0
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

    def rebuild(self, *, steps: int | None = None, frames: int | None = None, shift: float | None = None) -> None:
        """Steps / loop-length change at the next tick (a steps/shift change right after another
        rebuild waits for that one's first completion): discards the slots in flight."""
        check_schedule_args(self.steps if steps is None else steps, self.shift if shift is None else shift, 1.0)
        if frames is not None and (isinstance(frames, bool) or not isinstance(frames, int) or frames < 1):
            raise ValueError(f"frames: expected an integer >= 1, got {frames!r}")
        change = {"steps": steps, "frames": frames, "shift": shift}
        with self._lock:
            earlier = self._pending_structure.get("rebuild", {})
            self._pending_structure["rebuild"] = {k: earlier.get(k) if v is None else v for k, v in change.items()}

    # -- the tick ------------------------------------------------------------------
    def tick(self) -> list[Completion]:
        """Advance every active slot one step; return every slot that finished now."""
        self._apply_structure_changes()
        snap = self.state.snapshot()
        self._birth_slots()
        tick_index = self.tick_count
        self.tick_count += 1
        active = [(i, slot) for i, slot in enumerate(self.slots) if slot is not None]
        if not active:
            return []
        positive = self._positive_velocities(active, snap)
        negative = self._negative_velocities(active, snap)
        done = []
        for i, slot in active:
            v = S.blend_velocities(*positive[i])
            if slot.request.cfg_mode != "none":
                v = self._guide(slot, v, negative.get(i), snap)
            slot.x = self._step(slot, v, snap)
            slot.versions.append(snap.version)
            slot.step += 1
            if slot.step == slot.steps:
                done.append(Completion(slot.x[0], slot.request, i, slot.born_tick, tick_index,
                                       tuple(slot.versions), snap.param_versions))
                self.slots[i] = None
                self._refilling = False
        self._trim_drained_slots()
        return done

    def _positive_velocities(self, active, snap: Snapshot) -> dict[int, tuple[list, list]]:
        """One batched forward over every active condition of every slot."""
        xs, ts, conds, contexts, owners = [], [], [], [], []
        for i, slot in active:
            t_c = slot.schedule[slot.step]
            x_in = slot.x
            if slot.request.mask is not None:
                x_in = S.mask_input(x_in, slot.request.mask, slot.request.source, t_c, slot.mask_noise)
            x_in = S.channel_gain(x_in, snap["channel_gain"])
            fraction = slot.step / slot.steps
            rows = [(slot.request.cond, slot.request.context, slot.request.weight)]
            rows += [(c.cond, c.context, c.weight) for c in slot.request.conditions
                     if S.condition_active(fraction, c.start, c.end)]
            for cond, context, weight in rows:
                xs.append(x_in)
                ts.append(t_c)
                conds.append(cond)
                contexts.append(context)
                owners.append((i, weight))
        v = self._forward(xs, ts, conds, contexts)
        by_slot: dict[int, tuple[list, list]] = {}
        for row, (i, weight) in enumerate(owners):
            velocities, weights = by_slot.setdefault(i, ([], []))
            velocities.append(v[row:row + 1])
            weights.append(weight)
        return by_slot

    def _negative_velocities(self, active, snap: Snapshot) -> dict[int, torch.Tensor]:
        """At most one forward for the unconditional rows (full CFG; residual-initialize at birth)."""
        rows = [(i, slot) for i, slot in active
                if slot.request.cfg_mode == "full"
                or (slot.request.cfg_mode == "residual-initialize" and slot.uncond_velocity is None)]
        if not rows:
            return {}
        xs, ts, conds, contexts = [], [], [], []
        for _, slot in rows:
            xs.append(S.channel_gain(slot.x, snap["channel_gain"]))
            ts.append(slot.schedule[slot.step])
            conds.append(slot.request.negative if slot.request.negative is not None else self.denoiser.unconditional())
            contexts.append(slot.request.context)
        v = self._forward(xs, ts, conds, contexts)
        return {i: v[row:row + 1] for row, (i, _) in enumerate(rows)}

    def _forward(self, xs, ts, conds, contexts) -> torch.Tensor:
        """One batched call; rows are copied into the persistent input buffers (grown, never shrunk)."""
        n = len(xs)
        if self._rows_x.shape[0] < n or self._rows_x.shape[1] != self.frames or _unwritable(self._rows_x):
            self._rows_x = torch.empty(max(n, 2 * self.depth), self.frames, self.channels,
                                       device=self.device, dtype=self.dtype)
            self._rows_t = torch.empty(self._rows_x.shape[0], device=self.device, dtype=self.dtype)
        x, t = self._rows_x[:n], self._rows_t[:n]
        for row, (x_row, t_row) in enumerate(zip(xs, ts)):
            x[row].copy_(x_row[0])
            t[row] = t_row
        return self.denoiser.velocity(x, t, self.denoiser.collate(conds, contexts))

    def _guide(self, slot: Slot, v_cond: torch.Tensor, v_uncond: torch.Tensor | None, snap: Snapshot) -> torch.Tensor:
        mode = slot.request.cfg_mode
        if mode == "residual-self":
            v_uncond = slot.initial_noise
        elif mode == "residual-initialize":
            if slot.uncond_velocity is None:
                slot.uncond_velocity = v_uncond
            v_uncond = slot.uncond_velocity
        scale = snap["guidance_scale"]
        if snap["guidance_kind"] == "apg":
            guided = S.apg(v_cond, v_uncond, scale, slot.momentum, snap["apg_momentum"], snap["apg_norm_threshold"])
        else:
            guided = S.cfg(v_cond, v_uncond, scale)
        return S.cfg_rescale(guided, v_cond, snap["cfg_rescale"])

    def _step(self, slot: Slot, v: torch.Tensor, snap: Snapshot) -> torch.Tensor:
        """x0 estimate, optional morph and mask, then the ODE or SDE step to t_next."""
        request = slot.request
        t_c, t_n = slot.schedule[slot.step], slot.schedule[slot.step + 1]
        if slot.noise is None or _unwritable(slot.noise):  # contiguous: randn(out=) on strided memory draws other values
            slot.noise = torch.empty(slot.x.shape, device=self.device, dtype=self.dtype)
        noise = torch.randn(slot.x.shape, generator=slot.generator, out=slot.noise)
        x0_hat = S.x0_estimate(slot.x, t_c, v)
        modified = False
        strength = snap["x0_target_strength"]
        if request.x0_target is not None and slot.step / slot.steps >= snap["x0_target_gate"] \
                and not (isinstance(strength, float) and strength == 0.0):
            x0_hat, modified = S.morph_x0(x0_hat, request.x0_target, strength), True
        if request.mask is not None:
            x0_hat, modified = S.mask_x0(x0_hat, request.mask, request.source), True
        if snap["solver"] == "sde":
            source = request.source if request.source is not None else x0_hat
            return S.sde_blend_step(x0_hat, source, snap["source_blend"], t_n, noise)
        if t_c == 0.0:
            return x0_hat
        if modified:
            v = S.velocity_from_x0(slot.x, t_c, x0_hat)
        return S.euler_step(slot.x, v, t_c, t_n, snap["velocity_scale"], noise, snap["ode_noise"])

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
        tick when D > S), so completions come at an even cadence of D / S per tick."""
        limit = self.depth
        if self.stagger:
            if self.tick_count - self._last_birth_tick < max(1, self.steps // self.depth):
                return
            limit = max(1, math.ceil(self.depth / self.steps))
        for i in range(self.depth):
            if limit == 0:
                return
            if self.slots[i] is not None:
                continue
            request = self._next_request()
            if request is None:
                return
            schedule = self._schedule_for(request)
            if self.mode == "global" and schedule != self._global_schedule:
                self._flush()
                self._global_schedule = schedule
            self.slots[i] = self._new_slot(request, schedule)
            self._last_birth_tick = self.tick_count
            limit -= 1

    def _schedule_for(self, request: Request) -> tuple[float, ...]:
        if request.timesteps is not None:
            return request.timesteps
        denoise = request.denoise if request.source is not None else 1.0
        return timesteps(self.steps, self.shift if request.shift is None else request.shift, denoise)

    def _new_slot(self, request: Request, schedule: tuple[float, ...]) -> Slot:
        shape = (1, self.frames, self.channels)
        generator = torch.Generator(device=self.device).manual_seed(request.seed)
        if request.noise is not None:
            noise = request.noise.reshape(shape)
        else:
            noise = torch.randn(shape, generator=generator, device=self.device, dtype=self.dtype)
        mask_noise = None
        if request.mask is not None:
            mask_noise = torch.randn(shape, generator=generator, device=self.device, dtype=self.dtype)
        x = S.initial_state(noise, request.source, schedule[0], request.init_noise)
        return Slot(request, schedule, x, generator, noise, mask_noise, born_tick=self.tick_count)

    def _flush(self) -> None:
        for i, slot in enumerate(self.slots):
            if slot is not None:
                self.discarded += 1
                self.slots[i] = None
        self._last_birth_tick = -(10**9)  # an empty ring restarts its stagger at once
        self._refilling = False

    def _apply_structure_changes(self) -> None:
        with self._lock:
            pending, self._pending_structure = self._pending_structure, {}
            if "rebuild" in pending and self._hold_rebuild(pending["rebuild"]):
                self._pending_structure["rebuild"] = pending.pop("rebuild")  # wait for the refill to deliver
        if "rebuild" in pending:
            change = pending["rebuild"]
            self._flush()
            self._refilling, self._rebuild_tick = True, self.tick_count
            self.rebuilds += 1
            self.steps = change["steps"] or self.steps
            self.shift = self.shift if change["shift"] is None else float(change["shift"])
            if change["frames"] is not None and change["frames"] != self.frames:
                self.frames = change["frames"]
                self.state.resize(self.frames)
                with self._lock:
                    self.queue.clear()
            self._global_schedule = None
        if "depth" in pending:
            self.depth = pending["depth"]
            if len(self.slots) < self.depth:
                self.slots.extend([None] * (self.depth - len(self.slots)))
        self._trim_drained_slots()

    def _hold_rebuild(self, change: dict) -> bool:
        """Hold a steps/shift rebuild while the previous rebuild's refill is in flight and has not
        delivered, for at most one schedule; a loop-length change lands at once (inputs are sized by it)."""
        if change["frames"] is not None or not self._refilling or not self.in_flight:
            return False
        return self.tick_count - self._rebuild_tick <= self.steps

    def _trim_drained_slots(self) -> None:
        while len(self.slots) > self.depth and self.slots[-1] is None:
            self.slots.pop()

    # -- views --------------------------------------------------------------------
    @property
    def in_flight(self) -> int:
        return sum(slot is not None for slot in self.slots)

    def slots_view(self) -> list[dict | None]:
        """Per slot: step, steps, current noise level t, birth tick, tag (for the ring view)."""
        return [None if s is None else {"step": s.step, "steps": s.steps, "t": s.schedule[s.step],
                                         "born_tick": s.born_tick, "draining": i >= self.depth, "tag": s.request.tag}
                for i, s in enumerate(self.slots)]


def _unwritable(buffer: torch.Tensor) -> bool:
    """A buffer made under ``torch.inference_mode`` (the runner's ticks) cannot be written outside it."""
    return buffer.is_inference() and not torch.is_inference_mode_enabled()


def _check_depth(depth) -> None:
    if isinstance(depth, bool) or not isinstance(depth, int) or not 1 <= depth <= MAX_DEPTH:
        raise ValueError(f"depth: expected an integer in 1..{MAX_DEPTH}, got {depth!r}")

