"""Mini model: text-encoder pin, loading, denoiser contract, short end-to-end generation."""

import numpy as np
import pytest
import torch

from demon_nb.engine.protocols import Denoiser, TextEncoder
from demon_nb.models.mini import text as T

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def model():
    from demon_nb.models import load

    return load("mini")


@pytest.fixture(scope="module")
def baseline(model):
    from demon_nb.models.mini import load

    return load(random_init=True, text_encoder=model.text_encoder)


def test_weight_hash_mismatch_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="sha256"):
        T.check_weights(T.model_path(), expected="0" * 64)
    with pytest.raises(ValueError, match="not found"):
        T.check_weights(tmp_path)
    with pytest.raises(ValueError, match="sha256"):
        T.MiniLMTextEncoder(expected_sha256="f" * 64)


def test_text_encoder(model):
    enc = model.text_encoder
    assert isinstance(enc, TextEncoder)
    a = enc.encode("house in A minor, 124 bpm")
    assert a.shape == (T.COND_TOKENS, T.WIDTH)
    assert torch.equal(enc.encode(""), model.denoiser.unconditional())
    assert not torch.allclose(a, enc.encode("ambient in C major, 80 bpm"))
    long = enc.encode("very long prompt " * 500)  # truncated by the tokenizer
    assert long.shape == (T.COND_TOKENS, T.WIDTH)
    with pytest.raises(ValueError, match="prompt"):
        enc.encode(None)
    assert torch.equal(a[-1], T.tempo_token("124 bpm")) and enc.encode("")[-1].abs().max() == 0


def test_tempo_token():
    assert T.prompt_bpm("house in A minor, 124 bpm") == 124.0
    assert T.prompt_bpm("92.5BPM lofi") == 92.5
    assert T.prompt_bpm("no tempo here") is None and T.tempo_token("no tempo").abs().max() == 0
    assert T.prompt_bpm("9999 bpm, then 100 bpm") == 100.0  # out-of-range numbers are not tempi
    near, far = T.tempo_token("120 bpm"), T.tempo_token("160 bpm")
    same = T.tempo_token("120 bpm, jazz")
    assert torch.equal(near, same) and near[0] == 1.0
    # close tempi have closer features than distant ones (a smooth code of log bpm)
    assert (near - T.tempo_token("122 bpm")).norm() < (near - far).norm()
    cond = torch.zeros(T.COND_TOKENS, T.WIDTH)
    assert T.condition_bpm(cond) is None
    cond[-1] = T.tempo_token("92.5 bpm")
    assert T.condition_bpm(cond) == pytest.approx(92.5)


def test_tempo_reaches_the_dit_as_a_clock_hint(model):
    from demon_nb.models.mini import layout as L
    from demon_nb.models.mini.denoiser import make_context

    den = model.denoiser
    with_tempo = den.collate([model.text_encoder.encode("funk, 100 bpm")], [None]).context(250)[0]
    assert with_tempo[:, 64:].sum(0).nonzero().flatten().tolist() == list(range(L.CLOCK.start, L.CLOCK.stop))
    beat_cos = model.codec.denormalize(with_tempo[:, :64])[:, L.BEAT_COS]
    assert beat_cos[0] > 0.99 and beat_cos[15] > 0.99 and beat_cos[7] < -0.9  # 100 bpm = 15 frames a beat
    assert den.collate([model.text_encoder.encode("funk")], [None]).context(250).abs().max() == 0
    source = torch.randn(250, 64)
    assert torch.equal(make_context(source, 250, bpm=100.0)[:, :64], source)  # a source wins over the hint


def test_load_bundle(model):
    assert model.name == "mini" and model.frames == 250 and model.loop_seconds == pytest.approx(10.0)
    assert isinstance(model.denoiser, Denoiser) and model.denoiser.channels == 64
    assert model.defaults["steps"] == 8 and model.defaults["shift"] == 3.0
    n = sum(p.numel() for p in model.denoiser.net.parameters())
    assert n * 4 < 30e6


def test_bad_options():
    from demon_nb.models.mini import load

    with pytest.raises(ValueError, match="weights"):
        load(weights="/nonexistent/folder")
    with pytest.raises(ValueError, match="options"):
        load(colour="red")


def test_velocity_contract(model):
    den = model.denoiser
    c = model.text_encoder.encode("funk in D major, 100 bpm")
    source = torch.randn(250, 64)
    cond = den.collate([c, c, den.unconditional()], [None, source, torch.cat([source, torch.ones(250, 64)], -1)])
    v = den.velocity(torch.randn(3, 250, 64), torch.tensor([1.0, 0.5, 0.1]), cond)
    assert v.shape == (3, 250, 64) and torch.isfinite(v).all()
    x, t = torch.randn(1, 250, 64), torch.full((1,), 0.7)
    plain = den.velocity(x, t, den.collate([c], [None]))
    covered = den.velocity(x, t, den.collate([c], [source]))
    assert not torch.allclose(plain, covered), "the source context must reach the DiT"
    with pytest.raises(ValueError, match="context"):
        den.velocity(torch.randn(1, 250, 64), torch.ones(1), den.collate([c], [torch.zeros(10, 64)]))
    with pytest.raises(ValueError, match="conds"):
        den.collate([torch.zeros(5, 384)], [None])


def test_collate_reuses_the_batch_of_the_same_rows(model):
    den = model.denoiser
    a, b = model.text_encoder.encode("funk, 100 bpm"), model.text_encoder.encode("jazz, 140 bpm")
    first = den.collate([a, b], [None, None])
    assert den.collate([a, b], [None, None]) is first  # a later tick: no restacking
    assert first.context(250) is first.context(250)  # contexts built once per loop length
    other = den.collate([b, a], [None, None])
    assert other is not first and torch.equal(other.text[0], b)
    assert torch.equal(den.collate([a.clone(), b], [None, None]).text, first.text)  # equal content, new rows


def _generate(model, prompts, steps=4):
    from demon_nb.bench.mini import settings
    from demon_nb.engine.request import Request
    from demon_nb.engine.ring import Ring

    ring = Ring(model.denoiser, frames=model.frames, channels=64, depth=2, steps=steps, shift=3.0)
    played = settings(model)  # what the instrument plays: CFG mode, scale, kind, interval
    ring.state.update(**{k: v for k, v in played.items() if k != "cfg_mode"})
    for i, p in enumerate(prompts):
        ring.submit(Request(cond=model.text_encoder.encode(p), seed=i, cfg_mode=played["cfg_mode"], tag=i))
    out = {}
    for _ in range(200):
        for c in ring.tick():
            out[c.tag] = c.latent
        if len(out) == len(prompts):
            break
    return [out[i] for i in range(len(prompts))]


def test_end_to_end_generation_follows_the_key(model, baseline):
    from demon_nb.models.mini.composer import compose
    from demon_nb.models.mini.metrics import key_share

    pieces = [compose(10**9 + 777 + i) for i in range(4)]
    prompts = [p[1] for p in pieces]
    shares = {}
    for name, m in (("trained", model), ("random", baseline)):
        lats = _generate(m, prompts)
        raws = [m.codec.denormalize(z).numpy() for z in lats]
        shares[name] = np.mean([key_share(r, p[2]["key"], p[2]["mode"]) for r, p in zip(raws, pieces)])
        if name == "trained":
            audio = m.codec.decode(lats[0][None])
            assert audio.shape == (1, 2, 250 * 1920)
            assert audio.pow(2).mean().sqrt() > 1e-3, "generation is silent"
    assert shares["trained"] > shares["random"] + 0.1


def test_end_to_end_generation_follows_the_tempo(model, baseline):
    from demon_nb.models.mini.metrics import tempo_ok

    tempi = (78, 104, 131, 157)
    prompts = [f"groovy funk in D minor, {bpm} bpm, slap bass and clavinet" for bpm in tempi]
    hits = {}
    for name, m in (("trained", model), ("random", baseline)):
        raws = [m.codec.denormalize(z).numpy() for z in _generate(m, prompts, steps=8)]
        hits[name] = sum(tempo_ok(r, bpm) for r, bpm in zip(raws, tempi))
    assert hits["trained"] >= 3 and hits["random"] <= 1
