"""Read ACE-Step 1.5 checkpoints from disk into the diffusers classes.

Two layouts are accepted:

* official: ``DIR/acestep-v15-<variant>/{config.json, model.safetensors, silence_latent.pt}``,
  ``DIR/vae/``, ``DIR/Qwen3-Embedding-0.6B/``. One safetensors file holds every
  network under the prefixes ``decoder.``, ``encoder.``, ``tokenizer.``,
  ``detokenizer.`` and the key ``null_condition_emb``; the names are mapped to the
  diffusers names in memory (``q_proj -> to_q`` ...).
* diffusers: ``DIR/model_index.json`` with one folder per component.

The layout is checked, every missing path reported at once, before any weights are read.
Weights come from safetensors only; ``silence_latent.pt`` (``[1, C, T]``, the one pickle)
goes through ``torch.load(weights_only=True)``. Networks come back on CPU in one dtype.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from .layout import (TEXT_DIR, VARIANT_DIRS, MissingCheckpointFiles, check_complete, missing_diffusers,  # noqa: F401 (re-exported)
                     absent, missing_official, missing_weights, shards)

PROGRESS_MIN_BYTES = 32 << 20  # show a bar for files at least this big

# official name fragment -> diffusers name fragment
ATTENTION_RENAMES = ((".q_proj.", ".to_q."), (".k_proj.", ".to_k."), (".v_proj.", ".to_v."),
                     (".o_proj.", ".to_out.0."), (".q_norm.", ".norm_q."), (".k_norm.", ".norm_k."))
DECODER_RENAMES = (("proj_in.1.", "proj_in_conv."), ("proj_out.1.", "proj_out_conv."))
PREFIXES = {"decoder.": "transformer", "encoder.": "condition_encoder",
            "tokenizer.": "audio_tokenizer", "detokenizer.": "audio_token_detokenizer"}


@dataclass
class Parts:
    """The loaded networks, on CPU in one dtype (tokenizer: a transformers tokenizer)."""

    variant: str
    transformer: Any
    condition_encoder: Any
    vae: Any
    text_model: Any
    tokenizer: Any
    audio_tokenizer: Any = None
    audio_token_detokenizer: Any = None
    layout: str = "official"

    @property
    def silence_latent(self) -> torch.Tensor:
        """``[T0, C]`` VAE latent of silence (time first)."""
        return self.condition_encoder.silence_latent[0]

    def networks(self) -> list[torch.nn.Module]:
        """Every loaded network (the semantic tokenizer pair only when present)."""
        nets = (self.transformer, self.condition_encoder, self.vae, self.text_model,
                self.audio_tokenizer, self.audio_token_detokenizer)
        return [net for net in nets if net is not None]


def official_to_diffusers(key: str) -> tuple[str, str] | None:
    """Map one official key to ``(component, diffusers key)``; None for unknown prefixes."""
    if key == "null_condition_emb":
        return "condition_encoder", key
    for prefix, component in PREFIXES.items():
        if key.startswith(prefix):
            name = key[len(prefix):]
            if component == "transformer":
                for old, new in DECODER_RENAMES:
                    name = name.replace(old, new)
            name = "." + name
            for old, new in ATTENTION_RENAMES:
                name = name.replace(old, new)
            return component, name[1:]
    return None


def diffusers_to_official(component: str, key: str) -> str:
    """Inverse of :func:`official_to_diffusers` (used to write official-layout files)."""
    if component == "condition_encoder" and key == "null_condition_emb":
        return key
    name = "." + key
    for old, new in ATTENTION_RENAMES:
        name = name.replace(new, old)
    name = name[1:]
    if component == "transformer":
        for old, new in DECODER_RENAMES:
            name = name.replace(new, old)
    prefix = {v: k for k, v in PREFIXES.items()}[component]
    return prefix + name


# --------------------------------------------------------------------------- files


def _require(path: Path, what: str) -> Path:
    if not path.exists():
        raise FileNotFoundError(f"checkpoints: missing {what}: {path}")
    return path


def read_safetensors(path) -> dict[str, torch.Tensor]:
    """All tensors of one safetensors file on CPU, with a byte progress bar for big files. Only the
    ``safetensors`` parser is tried: what it rejects (a pickle under any name) is a ValueError."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    _require(path, "weights file")
    size = path.stat().st_size
    out: dict[str, torch.Tensor] = {}
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f, \
                tqdm(total=size, unit="B", unit_scale=True, desc=f"loading {path.name}",
                     disable=size < PROGRESS_MIN_BYTES, leave=False) as bar:
            for key in f.keys():
                tensor = f.get_tensor(key)
                out[key] = tensor
                bar.update(tensor.numel() * tensor.element_size())
    except SafetensorError as exc:
        raise ValueError(f"checkpoints: {path} is not a safetensors file ({exc}); weights are read from "
                         "safetensors only and pickles are never loaded (convert the file to safetensors)") from None
    return out


def read_sharded(folder: Path, stem: str) -> dict[str, torch.Tensor]:
    """``stem.safetensors`` or ``stem.safetensors.index.json`` + shards inside ``folder``."""
    check_complete(folder, missing_weights(folder, stem))
    single = f"{stem}.safetensors"
    files = [single] if (folder / single).exists() else shards(folder / f"{single}.index.json")
    out: dict[str, torch.Tensor] = {}
    for shard in files:
        out.update(read_safetensors(folder / shard))
    return out


def check_silence(latent: torch.Tensor, channels: int, source: str, *, time_first: bool) -> torch.Tensor:
    """``latent`` unchanged when it is a float ``[1, channels, T]`` tensor (``[1, T, channels]``
    when ``time_first``) with ``T >= 1``; otherwise a ValueError naming ``source``."""
    shape = tuple(latent.shape)
    c_axis, t_axis = (2, 1) if time_first else (1, 2)
    if (latent.is_floating_point() and latent.ndim == 3 and shape[0] == 1 and shape[c_axis] == channels
            and shape[t_axis] >= 1):
        return latent
    expected = f"[1, T, {channels}]" if time_first else f"[1, {channels}, T]"
    flipped = latent.ndim == 3 and shape[t_axis] == channels
    hint = f"; it looks {'channels' if time_first else 'time'}-first, transpose it" if flipped else ""
    raise ValueError(f"checkpoints: {source}: the silence latent must be one float {expected} tensor "
                     f"({channels} = the config's audio_acoustic_hidden_dim, the VAE latent width), "
                     f"got {str(latent.dtype).replace('torch.', '')} {list(shape)}{hint}")


def read_silence_latent(path: Path, channels: int) -> torch.Tensor:
    """``silence_latent.pt``, one ``[1, channels, T]`` tensor (``weights_only=True``) -> ``[1, T, channels]``."""
    _require(path, "silence latent")
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # UnpicklingError and friends: refuse anything but tensors
        raise ValueError(f"checkpoints: {path} holds more than plain tensors; refused ({exc})") from None
    if not isinstance(raw, torch.Tensor):
        raise ValueError(f"checkpoints: {path} must hold one [1, {channels}, T] tensor, got {type(raw).__name__}")
    return check_silence(raw, channels, str(path), time_first=False).transpose(1, 2).contiguous()


# --------------------------------------------------------------------------- networks


def check_keys(model: torch.nn.Module, state: dict[str, torch.Tensor], source: str,
               shown_as=None, skip: tuple[str, ...] = ()) -> None:
    """Raise ValueError naming the first missing, unexpected or mis-shaped key (``shown_as(key)``:
    the name to print, the file's own name for official files)."""
    show = shown_as or (lambda key: key)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items() if k not in skip}
    for key, shape in expected.items():
        shown = show(key)
        if key not in state:
            raise ValueError(f"{source}: missing key {shown!r} (the model expects shape {shape})")
        if tuple(state[key].shape) != shape:
            raise ValueError(f"{source}: key {shown!r} has shape {tuple(state[key].shape)} "
                             f"but the model expects {shape}")
    extra = [k for k in state if k not in expected and k not in skip]
    if extra:
        raise ValueError(f"{source}: unexpected key {show(extra[0])!r} "
                         f"(shape {tuple(state[extra[0]].shape)}); {len(extra)} unexpected in all")


def build(cls, config: dict, state: dict[str, torch.Tensor], source: str,
          shown_as=None, skip: tuple[str, ...] = ()):
    """Construct ``cls(**config)`` without initializing weights, then load ``state``."""
    with torch.device("meta"):
        probe = cls(**config)
    needs_real = any(m._non_persistent_buffers_set for m in probe.modules())
    model = cls(**config) if needs_real else probe
    check_keys(model, state, source, shown_as, skip)
    model.load_state_dict({k: v for k, v in state.items() if k not in skip}, strict=False, assign=True)
    return model.eval().requires_grad_(False)


def _config_kwargs(cls, config: dict) -> dict:
    """Keep only the constructor arguments of a diffusers class."""
    import inspect

    allowed = set(inspect.signature(cls.__init__).parameters) - {"self"}
    return {k: v for k, v in config.items() if k in allowed}


def component_configs(cfg: dict) -> dict[str, dict]:
    """Constructor arguments of the four networks from an official ``config.json``."""
    classes = _classes()
    enc = {k: cfg.get(f"encoder_{k}", cfg[k])  # the encoders may be narrower than the DiT
           for k in ("hidden_size", "intermediate_size", "num_attention_heads", "num_key_value_heads")}
    pooler_layers = cfg.get("num_attention_pooler_hidden_layers", 2)
    shared = {k: cfg[k] for k in ("head_dim", "rope_theta", "attention_bias", "attention_dropout",
                                  "rms_norm_eps", "sliding_window") if k in cfg}
    transformer = _config_kwargs(classes["transformer"], cfg)
    transformer["encoder_hidden_size"] = enc["hidden_size"]
    transformer["is_turbo"] = bool(cfg.get("is_turbo", False))
    condition = _config_kwargs(classes["condition_encoder"], {**cfg, **enc})
    condition.pop("layer_types", None)
    semantic = {**shared, **enc, "audio_acoustic_hidden_dim": cfg["audio_acoustic_hidden_dim"],
                "pool_window_size": cfg.get("pool_window_size", 5),
                "num_attention_pooler_hidden_layers": pooler_layers,
                "layer_types": list(cfg["layer_types"][:pooler_layers]) if "layer_types" in cfg else None}
    tokenizer = _config_kwargs(classes["audio_tokenizer"], {
        **semantic, "fsq_dim": cfg.get("fsq_dim", enc["hidden_size"]),
        "fsq_input_levels": cfg.get("fsq_input_levels", [8, 8, 8, 5, 5, 5]),
        "fsq_input_num_quantizers": cfg.get("fsq_input_num_quantizers", 1)})
    detokenizer = _config_kwargs(classes["audio_token_detokenizer"], semantic)
    return {"transformer": transformer, "condition_encoder": condition,
            "audio_tokenizer": tokenizer, "audio_token_detokenizer": detokenizer}


def _classes() -> dict[str, type]:
    from diffusers import AceStepTransformer1DModel
    from diffusers.pipelines.ace_step import (AceStepAudioTokenDetokenizer, AceStepAudioTokenizer,
                                              AceStepConditionEncoder)

    return {"transformer": AceStepTransformer1DModel, "condition_encoder": AceStepConditionEncoder,
            "audio_tokenizer": AceStepAudioTokenizer, "audio_token_detokenizer": AceStepAudioTokenDetokenizer}


def cast(net: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
    """Every floating parameter and buffer of ``net`` in ``dtype`` (any mix before), in place. Plain
    ``torch.nn.Module.to``: diffusers' override only adds a notice about fp32-kept modules (none here)."""
    return torch.nn.Module.to(net, dtype=dtype)


# --------------------------------------------------------------------------- layouts


def detect_layout(root: Path) -> str:
    if (root / "model_index.json").exists():
        return "diffusers"
    if any((root / d).is_dir() for d in VARIANT_DIRS.values()):
        return "official"
    raise FileNotFoundError(
        f"checkpoints: {root} is neither an official ACE-Step folder (expected one of "
        f"{sorted(VARIANT_DIRS.values())} inside it) nor a diffusers folder (missing model_index.json)")


def check_variant(variant: str | None) -> None:
    if variant is not None and variant not in VARIANT_DIRS:
        raise ValueError(f"variant: unsupported variant {variant!r}; expected one of {sorted(VARIANT_DIRS)}")


def load_parts(checkpoints, variant: str | None = None, *, dtype: torch.dtype = torch.float32) -> Parts:
    """Every network on CPU, every floating parameter and buffer in ``dtype`` (the caller moves them)."""
    check_variant(variant)
    if dtype not in (torch.float32, torch.bfloat16, torch.float16):
        raise ValueError(f"dtype: expected torch.float32, torch.bfloat16 or torch.float16, got {dtype!r}")
    if checkpoints is None:
        raise ValueError("checkpoints: a folder with ACE-Step 1.5 checkpoints is required")
    root = Path(os.path.expanduser(str(checkpoints)))
    _require(root, "checkpoint folder")
    by_folder = {d: k for k, d in VARIANT_DIRS.items()}
    if root.name in by_folder and (root / "silence_latent.pt").exists():  # pointed at the variant folder
        if variant is not None and variant != by_folder[root.name]:
            raise ValueError(f"variant: {root} is the {by_folder[root.name]!r} folder, not {variant!r}")
        root, variant = root.parent, by_folder[root.name]
    if detect_layout(root) == "diffusers":
        parts = _load_diffusers(root, variant, dtype)
    else:
        if variant is None:  # turbo when present, else the only variant there
            present = [k for k, d in VARIANT_DIRS.items() if (root / d).is_dir()]
            variant = "turbo" if "turbo" in present or len(present) != 1 else present[0]
        parts = _load_official(root, variant, dtype)
    for net in parts.networks():
        cast(net, dtype)
    return parts


def _load_text(folder: Path, tokenizer_folder: Path, dtype: torch.dtype):
    """Qwen3 text model and its tokenizer (no remote code)."""
    from transformers import AutoTokenizer, Qwen3Config, Qwen3Model

    config = json.loads((folder / "config.json").read_text())
    if config.get("model_type") != "qwen3":
        raise ValueError(f"checkpoints: {folder} holds model_type {config.get('model_type')!r}; expected 'qwen3'")
    model = Qwen3Model.from_pretrained(str(folder), config=Qwen3Config.from_pretrained(str(folder)),
                                       use_safetensors=True, torch_dtype=dtype, local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_folder), local_files_only=True)
    return model.eval().requires_grad_(False), tokenizer


def _load_vae(folder: Path, dtype: torch.dtype):
    from diffusers import AutoencoderOobleck

    vae = AutoencoderOobleck.from_pretrained(str(folder), use_safetensors=True, torch_dtype=dtype,
                                             low_cpu_mem_usage=False, local_files_only=True)
    return vae.eval().requires_grad_(False)


def _load_official(root: Path, variant: str, dtype: torch.dtype) -> Parts:
    check_complete(root, missing_official(root, variant))
    folder = root / VARIANT_DIRS[variant]
    cfg = json.loads((folder / "config.json").read_text())
    silence = read_silence_latent(folder / "silence_latent.pt", cfg["audio_acoustic_hidden_dim"])
    state = read_sharded(folder, "model")
    split: dict[str, dict[str, torch.Tensor]] = {name: {} for name in PREFIXES.values()}
    for key, tensor in state.items():
        mapped = official_to_diffusers(key)
        if mapped is None:
            raise ValueError(f"checkpoints: {folder / 'model.safetensors'}: unexpected key {key!r} "
                             f"(expected prefixes {sorted(PREFIXES)} or 'null_condition_emb')")
        component, name = mapped
        split[component][name] = tensor
    configs = component_configs(cfg)
    classes = _classes()
    source = str(folder / "model.safetensors")
    nets = {}
    for component in ("transformer", "condition_encoder", "audio_tokenizer", "audio_token_detokenizer"):
        if component.startswith("audio_") and not split[component]:
            nets[component] = None  # semantic hints are optional
            continue
        skip = ("silence_latent",) if component == "condition_encoder" else ()
        nets[component] = build(classes[component], configs[component], split[component], source,
                                lambda key, c=component: diffusers_to_official(c, key), skip)
    nets["condition_encoder"].register_buffer("silence_latent", silence, persistent=True)  # [1, T, C], any T
    vae = _load_vae(root / "vae", dtype)
    text_model, tokenizer = _load_text(root / TEXT_DIR, root / TEXT_DIR, dtype)
    return Parts(variant, nets["transformer"], nets["condition_encoder"], vae, text_model, tokenizer,
                 nets["audio_tokenizer"], nets["audio_token_detokenizer"], layout="official")


def _variant_of(transformer_config: dict) -> str:
    version = transformer_config.get("model_version")
    if version in VARIANT_DIRS:
        return version
    return "turbo" if transformer_config.get("is_turbo") else "base"


def _load_diffusers(root: Path, variant: str | None, dtype: torch.dtype) -> Parts:
    index = json.loads((root / "model_index.json").read_text())
    check_complete(root, missing_diffusers(root, index, tuple(_classes())))
    nets = {}
    for component, cls in _classes().items():
        folder = root / component
        if component.startswith("audio_") and absent(root, index, component):
            nets[component] = None
            continue
        cfg = json.loads((folder / "config.json").read_text())
        state = read_sharded(folder, "diffusion_pytorch_model")
        skip = ("silence_latent",) if component == "condition_encoder" else ()
        nets[component] = build(cls, _config_kwargs(cls, cfg), state, str(folder), None, skip)
        if component == "condition_encoder":
            if "silence_latent" not in state:
                raise ValueError(f"{folder}: missing key 'silence_latent' (the VAE latent of silence)")
            silence = check_silence(state["silence_latent"], nets["transformer"].config.audio_acoustic_hidden_dim,
                                    f"{folder} key 'silence_latent'", time_first=True)
            nets[component].register_buffer("silence_latent", silence, persistent=True)
    found = _variant_of(dict(nets["transformer"].config))
    if variant is not None and variant != found:
        raise ValueError(f"variant: {root} holds a {found!r} checkpoint, not {variant!r}")
    vae = _load_vae(root / "vae", dtype)
    text_model, tokenizer = _load_text(root / "text_encoder", root / "tokenizer", dtype)
    return Parts(found, nets["transformer"], nets["condition_encoder"], vae, text_model, tokenizer,
                 nets["audio_tokenizer"], nets["audio_token_detokenizer"], layout="diffusers")


def frames_for(seconds: float, sample_rate: int = 48000, hop: int = 1920) -> int:
    """Latent frames for a duration, as the pipeline counts them: ``ceil(seconds * sr / hop)``."""
    return int(math.ceil(seconds * sample_rate / hop - 1e-9))
