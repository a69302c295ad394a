"""The engine driving ACE-Step 1.5 reproduces diffusers' AceStepPipeline (tiny random checkpoint)."""

import math

import pytest
import torch
from diffusers import AceStepPipeline, FlowMatchEulerDiscreteScheduler

from demon_nb.engine.request import Request
from demon_nb.engine.ring import Ring
from demon_nb.models.acestep import load_parts, model_from_parts, tiny

SECONDS = 2.0
T = 50
C = tiny.LATENT


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    parts = load_parts(tiny.write_official(tmp_path_factory.mktemp("ckpt"), seed=0))
    model = model_from_parts(parts, seconds=SECONDS)
    pipe = AceStepPipeline(vae=parts.vae, text_encoder=parts.text_model, tokenizer=parts.tokenizer,
                           transformer=parts.transformer, condition_encoder=parts.condition_encoder,
                           scheduler=FlowMatchEulerDiscreteScheduler(num_train_timesteps=1, shift=1.0),
                           audio_tokenizer=parts.audio_tokenizer, audio_token_detokenizer=parts.audio_token_detokenizer)
    pipe.set_progress_bar_config(disable=True)
    return parts, model, pipe


def _run(model, requests, depth=1):
    """Finish every request on a ring of ``depth`` with the model's turbo defaults."""
    d = model.defaults
    ring = Ring(model.denoiser, frames=model.frames, channels=model.denoiser.channels, depth=depth,
                steps=d["steps"], shift=d["shift"])
    for r in requests:
        ring.submit(r)
    done = {}
    for _ in range(100):
        for c in ring.tick():
            done[c.request.tag] = c.latent
        if len(done) == len(requests):
            return [done[r.tag] for r in requests]
    raise AssertionError("ring did not finish")


def test_depth_one_turbo_matches_ace_step_pipeline(bundle):
    _, model, pipe = bundle
    noise = torch.randn(T, C, generator=torch.Generator().manual_seed(3))
    meta = dict(bpm=96, keyscale="A minor", timesignature="4")
    ref = pipe(prompt="dusty lofi piano", audio_duration=SECONDS, latents=noise[None], output_type="latent",
               num_inference_steps=8, shift=3.0, guidance_scale=1.0, **meta).audios[0]
    cond = model.text_encoder.encode("dusty lofi piano", bpm=96, key="A minor", time_signature="4",
                                     duration=SECONDS)
    (ours,) = _run(model, [Request(cond, noise=noise, tag=0)])
    diff = (ours - ref).abs().max().item()
    print(f"max |engine - AceStepPipeline| = {diff:.3g} (latent max {ref.abs().max():.3g})")
    assert ref.abs().max() > 0.5
    assert diff < 1e-5
    # the metadata is part of the condition: a different bpm moves the output
    other = model.text_encoder.encode("dusty lofi piano", bpm=140, key="A minor", time_signature="4",
                                      duration=SECONDS)
    (moved,) = _run(model, [Request(other, noise=noise, tag=0)])
    assert (moved - ref).abs().max() > 1e-3


def test_prompt_format_matches_pipeline(bundle):
    from demon_nb.models.acestep.text import caption_text, lyrics_text

    _, _, pipe = bundle
    text, lyrics = pipe._format_prompt("calm harp", lyrics="[verse] hi", audio_duration=12.5, bpm=70,
                                       keyscale="D major", timesignature="3")
    assert caption_text("calm harp", bpm=70, key="D major", time_signature="3", duration=12.5) == text
    assert lyrics_text("[verse] hi") == lyrics


def test_interleaved_rows_equal_single_runs(bundle):
    """Rows with different prompt lengths are padded + masked: each equals its own depth-1 run."""
    _, model, _ = bundle
    enc = model.text_encoder.encode
    conds = [enc("piano"), enc("a much longer caption about warm analog synth pads and drums", lyrics="la la"),
             enc("techno")]
    assert len({c.length for c in conds}) == 3
    requests = [Request(c, seed=10 + i, tag=i) for i, c in enumerate(conds)]
    together = _run(model, requests, depth=3)
    for r, latent in zip(requests, together):
        (alone,) = _run(model, [r])
        torch.testing.assert_close(latent, alone, rtol=0, atol=1e-5)


def test_unconditional_equals_broadcast_null_embedding(bundle):
    parts, model, _ = bundle
    den = model.denoiser
    cond = model.text_encoder.encode("piano")
    x = torch.randn(1, T, C, generator=torch.Generator().manual_seed(1))
    t = torch.tensor([0.7])
    ours = den.velocity(x, t, den.collate([den.unconditional()], [None]))
    null = parts.condition_encoder.null_condition_emb.expand(1, cond.length, -1)
    ctx = den.text2music_context(T)[None]
    ref = parts.transformer(hidden_states=x, timestep=t, timestep_r=t, encoder_hidden_states=null,
                            context_latents=ctx, return_dict=False)[0]
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-5)


def _tone(freq, seconds=SECONDS, sr=48000):
    n = torch.arange(int(seconds * sr)) / sr
    wave = 0.5 * torch.sin(2 * math.pi * freq * n)
    return torch.stack([wave, wave])[None]


def test_cover_mode_follows_the_source(bundle):
    _, model, _ = bundle
    den, codec = model.denoiser, model.codec
    cond = model.text_encoder.encode("jazz trio", task="cover")
    latents = [codec.encode(_tone(f))[0] for f in (220.0, 1760.0)]
    assert latents[0].shape == (T, C)
    contexts = [den.cover_context(z) for z in latents]
    # semantic hints come from the tokenizer/detokenizer, not the raw latent
    assert contexts[0].shape == (T, 2 * C) and not torch.allclose(contexts[0][:, :C], latents[0])
    requests = [Request(cond, context=ctx, source=z, denoise=0.6, seed=5, tag=i)
                for i, (ctx, z) in enumerate(zip(contexts, latents))]
    a, b = _run(model, requests, depth=2)
    (plain,) = _run(model, [Request(model.text_encoder.encode("jazz trio"), seed=5, tag=0)])
    assert (a - b).abs().max() > 1e-2
    assert (a - plain).abs().max() > 1e-2
    # with the context alone (no init from the source) the source still changes the output
    c, d = _run(model, [Request(cond, context=contexts[0], seed=5, tag=0), Request(cond, context=contexts[1], seed=5, tag=1)], depth=2)
    assert (c - d).abs().max() > 1e-3


def test_base_variant_guidance_runs_through_the_ring(tmp_path):
    model = model_from_parts(load_parts(tiny.write_official(tmp_path, "base", seed=4)), seconds=SECONDS)
    assert model.defaults["cfg_mode"] == "full"
    cond = model.text_encoder.encode("ambient strings")
    noise = torch.randn(T, C, generator=torch.Generator().manual_seed(2))

    def run(scale, mode="full"):
        ring = Ring(model.denoiser, frames=T, channels=C, depth=1, steps=4, shift=3.0)
        ring.state.update(guidance_scale=scale, guidance_kind="apg")
        ring.submit(Request(cond, noise=noise, cfg_mode=mode))
        for _ in range(10):
            done = ring.tick()
            if done:
                return done[0].latent
        raise AssertionError("ring did not finish")

    plain = run(1.0, "none")
    torch.testing.assert_close(run(1.0), plain, rtol=0, atol=1e-5)  # scale 1: no guidance
    assert (run(model.defaults["guidance_scale"]) - plain).abs().max() > 1e-2
