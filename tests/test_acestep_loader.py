"""ACE-Step 1.5 loader: tiny random checkpoints in the official and diffusers layouts."""

import re
import shutil
import struct
from itertools import chain

import pytest
import torch
from safetensors.torch import load_file, save_file

from demon_nb.models import load as load_model
from demon_nb.models.acestep import load, load_parts, tiny
from demon_nb.models.acestep.loader import diffusers_to_official, official_to_diffusers

T = 50
C = tiny.LATENT  # 2 s loop


def _read(path):
    """Tensors copied out of the file (safetensors may map it; we rewrite it next)."""
    return {k: v.clone() for k, v in load_file(str(path)).items()}


@pytest.fixture(scope="module")
def official(tmp_path_factory):
    return tiny.write_official(tmp_path_factory.mktemp("official"), seed=0)


@pytest.fixture(scope="module")
def diffusers_dir(tmp_path_factory):
    return tiny.write_diffusers(tmp_path_factory.mktemp("diffusers"), seed=0)


@pytest.fixture()
def broken(official, tmp_path):
    """A private copy of the official folder to damage."""
    return shutil.copytree(official, tmp_path / "ckpt")


def _velocity(model, prompt="warm lofi piano", seed=0):
    cond = model.text_encoder.encode(prompt, bpm=90, key="C major", duration=2.0)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, T, C, generator=g)
    t = torch.tensor([0.9, 0.4])
    return model.denoiser.velocity(x, t, model.denoiser.collate([cond, cond], [None, None]))


def test_key_renames_round_trip():
    key = "decoder.layers.3.cross_attn.q_proj.weight"
    assert official_to_diffusers(key) == ("transformer", "layers.3.cross_attn.to_q.weight")
    assert official_to_diffusers("decoder.proj_in.1.weight") == ("transformer", "proj_in_conv.weight")
    assert official_to_diffusers("encoder.lyric_encoder.layers.0.self_attn.o_proj.weight") == (
        "condition_encoder", "lyric_encoder.layers.0.self_attn.to_out.0.weight")
    assert official_to_diffusers("null_condition_emb") == ("condition_encoder", "null_condition_emb")
    assert official_to_diffusers("something.else") is None
    for key in ("decoder.proj_out.1.bias", "tokenizer.attention_pooler.layers.1.self_attn.k_norm.weight",
                "detokenizer.layers.0.self_attn.v_proj.weight"):
        component, name = official_to_diffusers(key)
        assert diffusers_to_official(component, name) == key


def test_official_layout_loads_every_network(official):
    parts = load_parts(official)
    assert parts.layout == "official" and parts.variant == "turbo"
    assert parts.audio_tokenizer is not None and parts.audio_token_detokenizer is not None
    # the silence latent is stored [1, C, T] and used time-first
    raw = torch.load(official / "acestep-v15-turbo" / "silence_latent.pt", weights_only=True)
    assert torch.equal(parts.silence_latent, raw[0].T)
    # every official tensor landed in a network, renamed
    state = load_file(str(official / "acestep-v15-turbo" / "model.safetensors"))
    key = "decoder.layers.1.self_attn.q_proj.weight"
    assert torch.equal(parts.transformer.layers[1].self_attn.to_q.weight, state[key])
    assert torch.equal(parts.condition_encoder.null_condition_emb, state["null_condition_emb"])


def test_variant_folder_itself_is_accepted(official):
    parts = load_parts(official / "acestep-v15-turbo")
    assert parts.variant == "turbo" and parts.layout == "official"
    with pytest.raises(ValueError, match="variant"):
        load_parts(official / "acestep-v15-turbo", variant="base")


def test_registry_load_gives_turbo_defaults(official):
    model = load_model("acestep", checkpoints=official, seconds=2.0)
    assert model.name == "acestep" and model.frames == T
    assert model.defaults["steps"] == 8 and model.defaults["shift"] == 3.0 and model.defaults["cfg_mode"] == "none"
    assert model.codec.hop == 1920 and model.codec.sample_rate == 48000
    assert model.loop_seconds == pytest.approx(2.0)
    assert str(model.defaults["dtype"]) == "float32"  # CPU -> fp32


def test_base_variant_defaults_to_apg_guidance(tmp_path):
    tiny.write_official(tmp_path, "base", seed=1)
    model = load(checkpoints=tmp_path, variant="base", seconds=2.0)
    assert model.defaults["cfg_mode"] == "full" and model.defaults["guidance_kind"] == "apg"
    assert model.defaults["guidance_scale"] > 1.0
    with pytest.raises(FileNotFoundError, match="acestep-v15-turbo"):
        load(checkpoints=tmp_path, variant="turbo")


def test_diffusers_layout_matches_official(official, diffusers_dir):
    a = load(checkpoints=official, seconds=2.0)
    b = load(checkpoints=diffusers_dir, seconds=2.0)
    assert b.defaults["variant"] == "turbo"
    va, vb = _velocity(a), _velocity(b)
    assert va.abs().max() > 0.1
    torch.testing.assert_close(va, vb, rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="variant"):
        load(checkpoints=diffusers_dir, variant="base")


def test_unsupported_variant(official):
    with pytest.raises(ValueError, match=r"variant: unsupported variant 'v2'"):
        load(checkpoints=official, variant="v2")


@pytest.mark.parametrize("relative", ["acestep-v15-turbo/silence_latent.pt", "acestep-v15-turbo/model.safetensors",
                                      "acestep-v15-turbo/config.json", "vae", "Qwen3-Embedding-0.6B"])
def test_missing_file_is_named(broken, relative):
    target = broken / relative
    shutil.rmtree(target) if target.is_dir() else target.unlink()
    with pytest.raises(ValueError, match=re.escape(str(target))):
        load_parts(broken)


def test_everything_missing_is_reported_at_once_before_any_weights_are_read(broken, monkeypatch):
    from demon_nb.models.acestep import loader

    reads = []
    real_safetensors, real_silence = loader.read_safetensors, loader.read_silence_latent
    monkeypatch.setattr(loader, "read_safetensors", lambda path: reads.append(path) or real_safetensors(path))
    monkeypatch.setattr(loader, "read_silence_latent", lambda path, *a: reads.append(path) or real_silence(path, *a))
    missing = [broken / "vae", broken / "Qwen3-Embedding-0.6B", broken / "acestep-v15-turbo" / "silence_latent.pt"]
    for path in missing:
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    with pytest.raises(ValueError) as err:
        load_parts(broken)
    for path in missing:
        assert str(path) in str(err.value)
    assert isinstance(err.value, FileNotFoundError)  # what earlier versions raised, still caught
    assert reads == []


def test_diffusers_folder_reports_everything_missing_at_once(diffusers_dir, tmp_path, monkeypatch):
    from demon_nb.models.acestep import loader

    root = shutil.copytree(diffusers_dir, tmp_path / "pipe")
    missing = [root / "vae", root / "tokenizer", root / "transformer" / "diffusion_pytorch_model.safetensors"]
    for path in missing:
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    monkeypatch.setattr(loader, "read_safetensors", lambda path: pytest.fail(f"read {path}"))
    with pytest.raises(ValueError) as err:
        load_parts(root)
    for path in missing:
        assert str(path) in str(err.value)


def test_mismatched_shape_names_key_and_shapes(broken):
    path = broken / "acestep-v15-turbo" / "model.safetensors"
    state = _read(path)
    key = "decoder.layers.0.cross_attn.k_proj.weight"
    shape = tuple(state[key].shape)
    state[key] = torch.zeros(shape[0] + 1, shape[1])
    save_file(state, str(path))
    with pytest.raises(ValueError) as err:
        load_parts(broken)
    message = str(err.value)
    assert key in message and str((shape[0] + 1, shape[1])) in message and str(shape) in message


def test_missing_and_unexpected_keys_are_named(broken):
    path = broken / "acestep-v15-turbo" / "model.safetensors"
    state = _read(path)
    del state["encoder.text_projector.weight"]
    save_file(state, str(path))
    with pytest.raises(ValueError, match=r"missing key 'encoder.text_projector.weight'"):
        load_parts(broken)
    state = _read(path) | {"encoder.text_projector.weight": torch.zeros(64, 32),
                                    "decoder.extra_head.weight": torch.zeros(3)}
    save_file(state, str(path))
    with pytest.raises(ValueError, match=r"unexpected key 'decoder.extra_head.weight'"):
        load_parts(broken)


@pytest.mark.parametrize("zipped", [True, False], ids=["zip", "legacy"])
def test_pickle_instead_of_safetensors_is_refused(broken, zipped):
    path = broken / "acestep-v15-turbo" / "model.safetensors"
    torch.save(_read(path), path, _use_new_zipfile_serialization=zipped)
    refused = re.escape(str(path)) + r" is not a safetensors file.*pickles are never loaded"
    with pytest.raises(ValueError, match=refused):
        load_parts(broken)


def test_header_length_with_low_byte_0x80_is_safetensors(broken):
    """The first 8 bytes of a safetensors file are its header length: a low byte of 0x80 is no pickle."""
    path = broken / "acestep-v15-turbo" / "model.safetensors"
    state = _read(path)
    for n in range(512):  # the header grows in steps of 8 bytes
        save_file(state, str(path), metadata={"pad": "x" * n})
        with open(path, "rb") as f:
            length = struct.unpack("<Q", f.read(8))[0]
        if length & 0xFF == 0x80:
            break
    assert length & 0xFF == 0x80
    parts = load_parts(broken)
    assert torch.equal(parts.condition_encoder.null_condition_emb, state["null_condition_emb"])


@pytest.mark.parametrize("damage, shown", [
    (lambda raw: raw.transpose(1, 2), rf"got float32 \[1, 15000, {C}\]; it looks time-first"),
    (lambda raw: raw[:, : C // 2], rf"got float32 \[1, {C // 2}, 15000\]"),
    (lambda raw: raw[0], rf"got float32 \[{C}, 15000\]"),
], ids=["time-first", "channels", "rank"])
def test_misshapen_silence_latent_is_refused(broken, damage, shown):
    path = broken / "acestep-v15-turbo" / "silence_latent.pt"
    torch.save(damage(torch.load(path, weights_only=True)).contiguous(), path)
    with pytest.raises(ValueError, match=re.escape(f"{path}: the silence latent must be one float [1, {C}, T]")) as err:
        load_parts(broken)
    assert re.search(shown, str(err.value))



def test_channels_first_silence_latent_in_a_diffusers_folder_is_refused(diffusers_dir, tmp_path):
    root = shutil.copytree(diffusers_dir, tmp_path / "pipe")
    path = root / "condition_encoder" / "diffusion_pytorch_model.safetensors"
    state = _read(path)
    state["silence_latent"] = state["silence_latent"].transpose(1, 2).contiguous()
    save_file(state, str(path), metadata={"format": "pt"})
    with pytest.raises(ValueError, match=re.escape(f"must be one float [1, T, {C}] tensor") + ".*channels-first"):
        load_parts(root)


WEIGHT_FILES = ("acestep-v15-turbo/model.safetensors", "vae/diffusion_pytorch_model.safetensors",
                "Qwen3-Embedding-0.6B/model.safetensors")


@pytest.mark.parametrize("stored, requested", [("bf16", None), ("mixed", None), ("mixed", torch.bfloat16)])
def test_every_network_ends_in_the_requested_dtype(broken, stored, requested):
    for relative in WEIGHT_FILES:
        state = sorted(_read(broken / relative).items())
        state = {k: v.to(torch.bfloat16) if stored == "bf16" or i % 2 else v for i, (k, v) in enumerate(state)}
        assert {v.dtype for v in state.values()} == ({torch.bfloat16} if stored == "bf16" else
                                                     {torch.bfloat16, torch.float32})
        save_file(state, str(broken / relative), metadata={"format": "pt"})
    parts = load_parts(broken) if requested is None else load_parts(broken, dtype=requested)
    nets = [parts.transformer, parts.condition_encoder, parts.vae, parts.text_model,
            parts.audio_tokenizer, parts.audio_token_detokenizer]
    want = requested or torch.float32
    wrong = [(type(net).__name__, name, t.dtype) for net in nets
             for name, t in chain(net.named_parameters(), net.named_buffers())
             if t.is_floating_point() and t.dtype != want]
    assert wrong == []
    assert parts.silence_latent.dtype == want


class Payload:  # any class: weights_only loading must refuse it
    pass


def test_silence_latent_with_objects_is_refused(broken):
    torch.save({"latent": Payload()}, broken / "acestep-v15-turbo" / "silence_latent.pt")
    with pytest.raises(ValueError, match="silence_latent.pt"):
        load_parts(broken)


def test_bad_arguments_raise_value_error(official):
    with pytest.raises(ValueError, match="checkpoints"):
        load(checkpoints=None)
    with pytest.raises(ValueError, match="dtype"):
        load(checkpoints=official, dtype=torch.int8)
    with pytest.raises(ValueError, match="dtype: expected torch.float32"):
        load_parts(official, dtype=torch.int8)
    with pytest.raises(ValueError, match="seconds"):
        load(checkpoints=official, seconds=-1)


def test_pickled_text_encoder_weights_are_not_loaded(broken):
    folder = broken / "Qwen3-Embedding-0.6B"
    torch.save(_read(folder / "model.safetensors"), folder / "pytorch_model.bin")
    (folder / "model.safetensors").unlink()
    with pytest.raises(ValueError, match=r"model.safetensors.*pytorch_model.bin.*never loaded"):
        load_parts(broken)


def test_big_files_show_a_progress_bar(official, monkeypatch, capsys):
    from demon_nb.models.acestep import loader

    monkeypatch.setattr(loader, "PROGRESS_MIN_BYTES", 0)
    state = loader.read_safetensors(official / "acestep-v15-turbo" / "model.safetensors")
    assert "null_condition_emb" in state
    assert "loading model.safetensors" in capsys.readouterr().err
