"""LoRA adapters for a model's DiT, hot-swapped while it plays (diffusers' PEFT support).

``LoraAdapters(denoiser)`` works for every denoiser that names its DiT
(``denoiser.lora_target()``, a diffusers ``PeftAdapterMixin`` model): mini and ACE-Step.

- ``read_lora(path, dit)`` (any thread; the slow part): safetensors only (the parser
  decides; pickles are never loaded), keys in diffusers / PEFT naming, mapped from the
  other common layouts (``base_model.model.`` PEFT exports, ``.default`` adapter names,
  ``lora_down`` / ``lora_up``, ACE-Step's official module names ``q_proj`` ...); every
  key must hit a linear layer of this DiT with matching shapes, and every value must be
  finite, else a ValueError naming the key. Nothing is touched on failure.
- ``stage(name, state)``, ``unload()``, ``strength(x)``: queued; ``apply()`` runs them
  between ticks on the tick thread (``load_lora_adapter`` / ``set_adapters`` /
  ``delete_adapters``), so a tick never sees a half-swapped network, and the music keeps
  playing on the previous adapter while a new one is read.
"""

from __future__ import annotations

import itertools
import math
import threading
from pathlib import Path

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
    """One active adapter at a time on ``denoiser``'s DiT, with a live strength."""

    def __init__(self, denoiser):
        target = getattr(denoiser, "lora_target", None)
        self.dit = target() if target is not None else None
        self.denoiser = denoiser
        self.active: str | None = None
        self.applied_strength = 1.0
        self._pending: list[tuple[str, object]] = []
        self._lock = threading.Lock()
        if self.dit is not None and getattr(self.dit, "peft_config", None):
            self._pending.append(("unload", None))  # a new player starts from the base network

    @property
    def supported(self) -> bool:
        return self.dit is not None

    def read(self, path) -> dict[str, torch.Tensor]:
        if self.dit is None:
            raise ValueError("lora: this model has no DiT that takes LoRA adapters")
        return read_lora(path, self.dit)

    def stage(self, state: dict[str, torch.Tensor]) -> str:
        """Queue a checked adapter (from :meth:`read`) to replace the active one at the next apply."""
        name = f"lora{next(_NAMES)}"
        with self._lock:
            self._pending.append(("load", (name, state)))
        return name

    def unload(self) -> None:
        with self._lock:
            self._pending.append(("unload", None))

    def apply(self, strength: float) -> bool:
        """Between ticks (tick thread): swap / unload as queued, then scale the active adapter to
        ``strength`` if it changed. Returns True when the network changed."""
        with self._lock:
            pending, self._pending = self._pending, []
        changed = False
        for action, arg in pending:
            loaded = list(getattr(self.dit, "peft_config", {}) or {})
            if loaded:  # one adapter per DiT: also any left by another runner on the same model
                self.dit.delete_adapters(loaded)
                self.active, changed = None, True
            elif action == "unload":
                changed = True  # e.g. the denoiser still runs eagerly for an adapter already gone
            if action == "load":
                name, state = arg
                self.dit.load_lora_adapter(state, prefix=PREFIX, adapter_name=name)
                self.active, self.applied_strength, changed = name, math.nan, True
        if self.active is not None and strength != self.applied_strength:
            self.dit.set_adapters([self.active], weights=[float(strength)])
            self.applied_strength, changed = strength, True
        if changed:
            notify = getattr(self.denoiser, "lora_changed", None)
            if notify is not None:
                notify(self.active is not None)
        return changed
