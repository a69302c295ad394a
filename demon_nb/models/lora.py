"""LoRA adapters for a model's DiT, hot-swapped while it plays (diffusers' PEFT support).

``LoraAdapters(denoiser)`` works for every denoiser that names its DiT
(``denoiser.lora_target()``, a diffusers ``PeftAdapterMixin`` model): mini and ACE-Step.

- ``read_lora(path, dit)`` (any thread; the slow part): safetensors only (the parser
  decides; pickles are never loaded), keys in diffusers / PEFT naming, mapped from the
  other common layouts (``base_model.model.`` PEFT exports, ``.default`` adapter names,
  ``lora_down`` / ``lora_up``, ACE-Step's official module names ``q_proj`` ...); every
  key must hit a linear layer of this DiT with matching shapes, and every value must be
  finite, else a ValueError naming the key. Nothing is touched on failure.
- ``stage(state)``, ``unload()``: queued; ``apply(in_use)`` runs them between
  ticks on the tick thread (``load_lora_adapter``), so a tick never sees a half-swapped
  network, and the music keeps playing on the previous adapter while a new one is read.
- A swap is **submission class**: ``active`` is the adapter that slots born from now on
  take (``Request.adapter``); slots in flight finish on the adapter they were born with.
  The ring calls ``select(name)`` before the forward of each group of rows that share an
  adapter (``disable_lora`` / ``set_adapters``), so for the S ticks a swap drains a tick
  runs one forward per adapter; an adapter no slot uses any more is deleted by ``apply``.
- ``lora_strength`` is step class: ``select`` scales the adapter with the strength of the
  tick's shared-state snapshot (every adapter in flight takes the same strength).
"""

from __future__ import annotations

import itertools
import threading
import time
from pathlib import Path
from typing import Any

import torch

PREFIX = "transformer"
_NAMES = itertools.count(1)  # adapter names are unique per process: a DiT may outlive a runner
OFFICIAL_RENAMES = ((".q_proj.", ".to_q."), (".k_proj.", ".to_k."), (".v_proj.", ".to_v."), (".o_proj.", ".to_out.0."))


def normalize_key(key: str) -> str:
    """One LoRA key in any supported layout -> ``<module>.lora_A.weight`` / ``<module>.lora_B.weight``."""
    k = key
    for prefix in ("base_model.model.", f"{PREFIX}.", "decoder.", "model."):
        if k.startswith(prefix):
            k = k[len(prefix):]
    k = k.replace(".lora_down.", ".lora_A.").replace(".lora_up.", ".lora_B.")
    k = k.replace(".lora_A.default.", ".lora_A.").replace(".lora_B.default.", ".lora_B.")
    for old, new in OFFICIAL_RENAMES:
        k = k.replace(old, new)
    if not (k.endswith(".lora_A.weight") or k.endswith(".lora_B.weight")):
        raise ValueError(f"lora: key {key!r} is not in a known LoRA layout (expected '<module>.lora_A.weight' "
                         "/ 'lora_B.weight', as diffusers and PEFT save them, or 'lora_down' / 'lora_up')")
    return k


def read_lora(path: str | Path, dit: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The adapter in ``path`` checked against ``dit``; keys prefixed ``transformer.`` for
    ``load_lora_adapter``. ValueError naming the file and the key on any mismatch."""
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"lora: no file at {str(path)!r}")
    try:
        raw = load_file(str(path))
    except Exception as error:
        raise ValueError(f"lora: {str(path)!r} is not a safetensors file ({error}); adapters are read from "
                         "safetensors only, pickles are never loaded") from None
    ranks: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in raw.items():
        if key.endswith(".alpha"):
            continue  # kohya alphas: the scale lives in the strength control here
        if not bool(torch.isfinite(tensor).all()):
            raise ValueError(f"lora: {str(path)!r} key {key!r} holds NaN or inf values")
        name = normalize_key(key)
        module, part = name.rsplit(".lora_", 1)
        ranks.setdefault(module, {})[part[0]] = tensor
    if not ranks:
        raise ValueError(f"lora: {str(path)!r} holds no LoRA weights")
    state = {}
    for module, parts in ranks.items():
        try:
            layer = dit.get_submodule(module)
        except AttributeError:
            raise ValueError(f"lora: {str(path)!r} is for another model: this DiT has no layer {module!r}") from None
        base = getattr(layer, "base_layer", layer)
        if not isinstance(base, torch.nn.Linear) or set(parts) != {"A", "B"}:
            raise ValueError(f"lora: {str(path)!r} layer {module!r}: expected lora_A and lora_B of a linear layer")
        a, b = parts["A"], parts["B"]
        if a.ndim != 2 or b.ndim != 2 or a.shape[1] != base.in_features or b.shape[0] != base.out_features \
                or a.shape[0] != b.shape[1]:
            raise ValueError(f"lora: {str(path)!r} layer {module!r} has lora_A {tuple(a.shape)} / lora_B "
                             f"{tuple(b.shape)}; this DiT needs [r, {base.in_features}] / [{base.out_features}, r] "
                             "(an adapter for another model)")
        state[f"{PREFIX}.{module}.lora_A.weight"] = a
        state[f"{PREFIX}.{module}.lora_B.weight"] = b
    return state


def random_adapter(dit: torch.nn.Module, rank: int = 4, seed: int = 0, scale: float = 0.05,
                   targets: tuple[str, ...] = ("to_q", "to_k", "to_v", "to_out.0")) -> dict[str, torch.Tensor]:
    """A random LoRA for every ``targets`` linear layer of ``dit`` (PEFT naming): a test and
    benchmark fixture whose effect is clearly audible, unlike a freshly initialised one (B = 0)."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for name, module in dit.named_modules():
        base = getattr(module, "base_layer", module)
        if isinstance(base, torch.nn.Linear) and any(name.endswith(t) for t in targets):
            state[f"{name}.lora_A.weight"] = torch.randn(rank, base.in_features, generator=g) * scale
            state[f"{name}.lora_B.weight"] = torch.randn(base.out_features, rank, generator=g) * scale
    return state


class LoraAdapters:
    """Adapters on ``denoiser``'s DiT: the one new slots take (``active``), those still in flight,
    and the live strength."""

    def __init__(self, denoiser, on_switch=None):
        target = getattr(denoiser, "lora_target", None)
        self.dit = target() if target is not None else None
        self.denoiser = denoiser
        self.on_switch = on_switch  # called with the new ``active`` name on the tick thread (a submission write)
        self.active: str | None = None
        self._selected: tuple | None = None  # (name, strength) the DiT runs with now; None = unknown
        self.swap_ms: float | None = None  # what the last load took on the tick thread (one tick that much longer)
        self._pending: list[tuple[str, object]] = []
        self._lock = threading.Lock()

    @property
    def supported(self) -> bool:
        return self.dit is not None

    @property
    def loaded(self) -> list[str]:
        return list(getattr(self.dit, "peft_config", {}) or {})

    def read(self, path) -> dict[str, torch.Tensor]:
        if self.dit is None:
            raise ValueError("lora: this model has no DiT that takes LoRA adapters")
        return read_lora(path, self.dit)

    def stage(self, state: dict[str, torch.Tensor]) -> str:
        """Queue a checked adapter (from :meth:`read`) for the slots born after the next apply."""
        name = f"lora{next(_NAMES)}"
        with self._lock:
            self._pending.append(("load", (name, state)))
        return name

    def unload(self) -> None:
        """Slots born after the next apply run the base network."""
        with self._lock:
            self._pending.append(("unload", None))

    def apply(self, in_use: set[str] = frozenset()) -> None:
        """Between ticks (tick thread): load / unload as queued (``on_switch`` tells the controls when
        the adapter new slots take changes), and delete every loaded adapter that is neither
        ``active`` nor in ``in_use`` (the adapters of the slots in flight; also any left by an
        earlier runner)."""
        with self._lock:
            pending, self._pending = self._pending, []
        for action, arg in pending:
            before = self.active
            if action == "load":
                name, state = arg
                began = time.perf_counter()
                self.dit.load_lora_adapter(state, prefix=PREFIX, adapter_name=name)
                self.swap_ms = (time.perf_counter() - began) * 1e3
                self.active, self._selected = name, None
            else:
                self.active = None
            if self.on_switch is not None and self.active != before:
                self.on_switch(self.active)
        stale = [name for name in self.loaded if name != self.active and name not in in_use]
        if stale:
            self.dit.delete_adapters(stale)
            self._selected = None

    def select(self, name: str | None, state: Any = None) -> None:
        """Before a forward (tick thread): run the DiT with adapter ``name`` at the ``lora_strength`` of
        the tick's snapshot ``state`` (None: without adapters; an adapter that is not loaded any more
        plays as the base network rather than stopping the ring). Nothing to do when it already does."""
        if self.dit is None:
            return
        if name is not None and name not in self.loaded:
            name = None
        strength = float(state["lora_strength"]) if state is not None else 1.0
        wanted = (name, strength if name is not None else None)
        if wanted == self._selected:
            return
        if name is None:
            if self.loaded:
                self.dit.disable_lora()
        else:
            self.dit.enable_lora()
            self.dit.set_adapters([name], weights=[strength])
        self._selected = wanted
        notify = getattr(self.denoiser, "lora_changed", None)
        if notify is not None:
            notify(name is not None)
