"""Tiny random-weight ACE-Step 1.5 checkpoints, written in the real layouts.

Tests and benchmarks load these through the real loader: same file names, same
``config.json`` fields, same key names (official: ``decoder.``/``encoder.``/
``tokenizer.``/``detokenizer.`` + ``null_condition_emb``, original attention names),
a ``silence_latent.pt`` of shape ``[1, C, 15000]``, a tiny Qwen3 with a small BPE
tokenizer built locally, and a tiny Oobleck VAE with the real hop of 1920 and
sample rate of 48 kHz.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from .loader import TEXT_DIR, VARIANT_DIRS, component_configs, diffusers_to_official

SILENCE_FRAMES = 15000
LATENT = 8
CORPUS = [
    "# Instruction\nFill the audio semantic mask based on the given conditions:\n\n",
    "Generate audio semantic tokens based on the given conditions:",
    "# Caption\nlofi hip hop piano with warm drums, ambient synth pads, techno, jazz\n\n",
    "# Metas\n- bpm: N/A\n- timesignature: 4\n- keyscale: C major\n- duration: 30 seconds\n",
    "# Languages\nen\n\n# Lyric\n[verse] hello world [chorus] la la la",
]


def tiny_config(variant: str = "turbo", *, hidden: int = 64, layers: int = 2, text_dim: int = 32,
                latent: int = LATENT) -> dict:
    """An official ``config.json`` (same fields as the 2B turbo) at toy sizes.

    The latent has ``latent`` channels (64 in the real model) so that the tiny VAE,
    whose encoder width is twice the latent width, stays cheap on a CPU.
    """
    turbo = variant.endswith("turbo")
    return {
        "architectures": ["AceStepConditionGenerationModel"], "model_type": "acestep",
        "model_version": variant if variant in ("turbo", "base", "sft") else None, "is_turbo": turbo,
        "hidden_size": hidden, "intermediate_size": 2 * hidden, "num_hidden_layers": layers,
        "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": hidden // 4, "hidden_act": "silu",
        "rms_norm_eps": 1e-6, "rope_theta": 1000000, "max_position_embeddings": 32768,
        "use_sliding_window": True, "sliding_window": 16,
        "layer_types": ["sliding_attention" if i % 2 == 0 else "full_attention" for i in range(layers)],
        "attention_bias": False, "attention_dropout": 0.0, "vocab_size": 64003,
        "in_channels": 3 * latent, "audio_acoustic_hidden_dim": latent, "patch_size": 2, "pool_window_size": 5,
        "fsq_dim": hidden, "fsq_input_levels": [8, 8, 8, 5, 5, 5], "fsq_input_num_quantizers": 1,
        "num_audio_decoder_hidden_layers": layers, "num_lyric_encoder_hidden_layers": 2,
        "num_timbre_encoder_hidden_layers": 2, "num_attention_pooler_hidden_layers": 2,
        "text_hidden_dim": text_dim, "timbre_hidden_dim": latent, "timbre_fix_frame": 750,
        "timestep_mu": -0.4, "timestep_sigma": 1.0, "data_proportion": 0.5, "dtype": "float32",
    }


def tiny_networks(config: dict, seed: int = 0, semantic: bool = True) -> dict:
    """Random diffusers networks for ``config`` (same seed -> same weights)."""
    from .loader import _classes

    configs = component_configs(config)
    classes = _classes()
    names = ["transformer", "condition_encoder"] + (["audio_tokenizer", "audio_token_detokenizer"] if semantic else [])
    nets = {}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for name in names:
            net = classes[name](**configs[name]).eval()
            with torch.no_grad():  # move norms and zero-init weights off their identity values
                for param in net.parameters():
                    param.add_(0.05 * torch.randn_like(param))
            nets[name] = net
        silence = 0.5 * torch.randn(1, SILENCE_FRAMES, config["timbre_hidden_dim"])
    nets["condition_encoder"].register_buffer("silence_latent", silence, persistent=True)
    return nets


def _tokenizer(vocab_size: int = 320):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>"], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|endoftext|>")


def _text_model(tokenizer, text_dim: int, seed: int):
    from transformers import Qwen3Config, Qwen3Model

    config = Qwen3Config(vocab_size=len(tokenizer), hidden_size=text_dim, intermediate_size=2 * text_dim,
                         num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1, head_dim=text_dim // 2,
                         max_position_embeddings=4096, tie_word_embeddings=False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed + 1)
        return Qwen3Model(config).eval()


def _vae(seed: int, latent: int):
    from demon_nb.models.oobleck import OobleckCodec

    return OobleckCodec.random(seed + 2, encoder_hidden_size=2 * latent, decoder_input_channels=latent,
                               decoder_channels=8, channel_multiples=[1, 2, 2, 4, 4]).vae


def write_official(root, variant: str = "turbo", *, seed: int = 0, semantic: bool = True, **sizes) -> Path:
    """Write ``root/{acestep-v15-<variant>, vae, Qwen3-Embedding-0.6B}``; returns ``root``."""
    from safetensors.torch import save_file

    root = Path(root)
    config = tiny_config(variant, **sizes)
    nets = tiny_networks(config, seed, semantic)
    state = {}
    for component, net in nets.items():
        for key, tensor in net.state_dict().items():
            if component == "condition_encoder" and key == "silence_latent":
                continue
            state[diffusers_to_official(component, key)] = tensor.contiguous()
    folder = root / VARIANT_DIRS[variant]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    save_file(state, str(folder / "model.safetensors"))
    silence = nets["condition_encoder"].silence_latent.transpose(1, 2).contiguous()  # stored [1, C, T]
    torch.save(silence, folder / "silence_latent.pt")
    _vae(seed, config["audio_acoustic_hidden_dim"]).save_pretrained(str(root / "vae"), safe_serialization=True)
    tokenizer = _tokenizer()
    text_model = _text_model(tokenizer, config["text_hidden_dim"], seed)
    text_model.save_pretrained(str(root / TEXT_DIR), safe_serialization=True)
    tokenizer.save_pretrained(str(root / TEXT_DIR))
    return root


def write_diffusers(root, variant: str = "turbo", *, seed: int = 0, **sizes) -> Path:
    """Write the same tiny model as an ``AceStepPipeline.save_pretrained`` folder."""
    from diffusers import AceStepPipeline, FlowMatchEulerDiscreteScheduler

    config = tiny_config(variant, **sizes)
    nets = tiny_networks(config, seed, semantic=True)
    tokenizer = _tokenizer()
    pipe = AceStepPipeline(vae=_vae(seed, config["audio_acoustic_hidden_dim"]), text_encoder=_text_model(tokenizer, config["text_hidden_dim"], seed),
                           tokenizer=tokenizer, transformer=nets["transformer"],
                           condition_encoder=nets["condition_encoder"],
                           scheduler=FlowMatchEulerDiscreteScheduler(num_train_timesteps=1, shift=1.0),
                           audio_tokenizer=nets["audio_tokenizer"],
                           audio_token_detokenizer=nets["audio_token_detokenizer"])
    if config["model_version"]:
        pipe.transformer.register_to_config(model_version=config["model_version"])
    pipe.save_pretrained(str(root), safe_serialization=True)
    return Path(root)
