"""Control binding: each control routes to its propagation class; bad values are rejected
with the control's name; the ring keeps ticking through rejected writes."""

from __future__ import annotations

import time

import pytest
import torch

from demon_nb.engine.state import PARAMS
from demon_nb.live.controls import CONTROLS
from demon_nb.live.panel import ControlsPanel, parse_int
from demon_nb.live.runner import Runner
from demon_nb.models import load

FRAMES, CHANNELS = 16, 4


@pytest.fixture
def runner():
    r = Runner(load("analytic", frames=FRAMES, channels=CHANNELS), depth=2, steps=4, max_ticks_per_s=200)
    yield r
    r.stop()


def good_value(name: str):
    """A valid value different from the default."""
    if name in PARAMS:
        p = PARAMS[name]
        if p.kind == "choice":
            return p.choices[-1] if p.default != p.choices[-1] else p.choices[0]
        return (p.lo + p.hi) / 2 if (p.lo + p.hi) / 2 != p.default else p.lo
    return {"prompt_a": "2", "prompt_b": "3", "prompt_blend": 0.25, "denoise": 0.5, "seed": 7, "vary_seed": True,
            "cfg_mode": "full", "shift": 2.0, "init_noise": [0.5] * FRAMES, "source": torch.ones(FRAMES, CHANNELS),
            "x0_target": torch.zeros(FRAMES, CHANNELS), "steps": 6, "depth": 3, "gain": 0.5,
            "negative_prompt": "1", "mask": [0.0] * (FRAMES // 2) + [1.0] * (FRAMES - FRAMES // 2), "feedback": 0.3,
            "first_look": 2, "prompt_c": "3", "prompt_d": "2", "prompt_c_weight": 0.25, "prompt_d_weight": 0.25}[name]


BAD = {"prompt_a": 5, "prompt_b": None, "prompt_blend": 1.5, "denoise": -0.1, "seed": -1, "vary_seed": "yes",
       "cfg_mode": "loud", "shift": 100.0, "init_noise": [0.5] * (FRAMES - 1), "source": torch.zeros(3, 3),
       "x0_target": "latent", "steps": 0, "depth": 99, "gain": float("nan"), "negative_prompt": 3,
       "mask": [0.5] * 3, "feedback": 1.5, "first_look": -1,
       "prompt_c": 5, "prompt_d": None, "prompt_c_weight": 1.5, "prompt_d_weight": -0.5}


def bad_value(name: str):
    if name in PARAMS:
        p = PARAMS[name]
        return "not-a-choice" if p.kind == "choice" else p.hi + 1.0
    return BAD[name]


@pytest.mark.parametrize("name", sorted(CONTROLS))
def test_each_control_routes_to_its_class(runner, name):
    klass = CONTROLS[name].klass
    ring, controls = runner.ring, runner.controls
    state_before, submission_before = ring.state.version, controls.version
    value = good_value(name)
    runner.set(name, value)
    if klass == "step":
        assert ring.state.version == state_before + 1 and controls.version == submission_before
        assert ring.state.get(name) == value
    elif klass == "submission":
        assert controls.version == submission_before + 1 and ring.state.version == state_before
        request = controls.request()
        assert request.version == controls.version
        if name == "denoise":
            assert request.denoise == value
        elif name == "seed":
            assert request.seed == value
        elif name == "cfg_mode":
            assert request.cfg_mode == value
        elif name == "source":
            assert torch.equal(request.source, value)
        else:
            got = controls.get(name)
            assert got is not None and (torch.is_tensor(got) or got == value)
    elif klass == "rebuild":
        ring.tick()
        assert ring.steps == value and controls.version == submission_before
    elif klass == "structure":
        ring.tick()
        assert ring.depth == value
    else:  # decode
        assert klass == "decode" and controls.gain == value and controls.version == submission_before


@pytest.mark.parametrize("name", sorted(CONTROLS))
def test_bad_values_are_rejected_with_the_controls_name(runner, name):
    versions = (runner.ring.state.version, runner.controls.version, runner.ring.steps, runner.ring.depth)
    with pytest.raises(ValueError) as info:
        runner.set(name, bad_value(name))
    assert name in str(info.value)
    ring = runner.ring
    ring.tick()
    assert (ring.state.version, runner.controls.version, ring.steps, ring.depth) == versions


def test_unknown_control_is_rejected(runner):
    with pytest.raises(ValueError, match="unknown control 'volume'"):
        runner.set("volume", 1.0)


def test_the_ring_keeps_ticking_through_rejected_writes(runner):
    runner.start()
    deadline = time.monotonic() + 10
    while runner.completions < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    before = runner.completions
    for name in sorted(CONTROLS):
        with pytest.raises(ValueError):
            runner.set(name, bad_value(name))
    while runner.completions < before + 3 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert runner.completions >= before + 3 and not runner.errors


def test_panel_tags_every_control_with_its_class_and_needs(runner):
    from demon_nb.engine.control_table import NEEDS

    panel = ControlsPanel(runner)
    # every control a widget can show is in the panel (latents and channel gains come from code/curves)
    assert set(panel.widgets) == {n for n, row in CONTROLS.items() if row.kind not in ("latent", "gain")}
    for name, row in panel.rows.items():
        assert row.children[0] is panel.widgets[name]
        assert f">{CONTROLS[name].klass}<" in row.children[1].value
        need = CONTROLS[name].needs
        assert (NEEDS[need] in panel.notes[name].value) if need else panel.notes[name].value == ""
    assert "needs a source" in panel.notes["source_blend"].value


def test_panel_shows_bad_typed_values_and_clears_them(runner):
    panel = ControlsPanel(runner)
    panel.widgets["seed"].value = "twelve"
    assert "seed" in panel.message.value and "twelve" in panel.message.value
    assert runner.controls.get("seed") == 0
    panel.widgets["seed"].value = "12"
    assert runner.controls.get("seed") == 12 and panel.message.value == ""
    panel.widgets["prompt_a"].value = "not a label"     # the analytic encoder rejects it
    assert "prompt" in panel.message.value and runner.controls.get("prompt_a") == ""


def test_panel_sliders_write_through(runner):
    panel = ControlsPanel(runner)
    panel.widgets["velocity_scale"].value = 1.5
    panel.widgets["solver"].value = "sde"
    panel.widgets["denoise"].value = 0.4
    panel.widgets["gain"].value = 0.3
    assert runner.ring.state.get("velocity_scale") == 1.5 and runner.ring.state.get("solver") == "sde"
    assert runner.controls.get("denoise") == 0.4 and runner.controls.gain == 0.3


def test_parse_int():
    assert parse_int("seed", " 42 ") == 42
    with pytest.raises(ValueError, match="seed"):
        parse_int("seed", "4.5")
    with pytest.raises(ValueError, match="seed"):
        parse_int("seed", True)


def test_negative_prompt_mask_and_feedback_reach_the_request(runner):
    controls = runner.controls
    source = torch.randn(FRAMES, CHANNELS)
    runner.set("negative_prompt", "2")
    runner.set("mask", [1.0] * 8 + [0.0] * (FRAMES - 8))
    request = controls.request()
    assert request.mask is None and request.negative == controls.condition("2")  # a mask needs a source
    runner.set("source", source)
    runner.set("feedback", 0.25)
    newest = torch.randn(FRAMES, CHANNELS)
    controls.newest = newest
    request = controls.request()
    assert torch.allclose(request.source, 0.75 * source + 0.25 * newest)
    assert request.mask.reshape(-1).tolist() == [1.0] * 8 + [0.0] * (FRAMES - 8)
    runner.set("feedback", 0.0)
    assert torch.equal(controls.request().source, source)


def test_tone_section_writes_channel_gains_by_group(runner):
    panel = ControlsPanel(runner)
    groups = runner.model.tone_groups()
    assert len(panel.tone) == len(groups) == 4  # the analytic model: four ranges of its channels
    first, (a, b) = next(iter(groups.items()))
    panel.tone[first].value = 0.5
    gain = runner.ring.state.get("channel_gain").reshape(-1)
    assert torch.all(gain[a:b] == 0.5) and torch.all(gain[b:] == 1.0)


def test_mini_names_its_channel_groups():
    from demon_nb.models.mini import layout as L

    groups = load("mini").tone_groups()
    assert groups["bass"] == (0, 12) and groups["drums"] == (L.DRUMS.start, L.DRUMS.stop) and "brightness" in groups


def test_prompt_weights_are_convex_per_frame():
    from demon_nb.engine.curves import prompt_weights

    w_a, (w_b,) = prompt_weights([0.3])
    assert (w_a, w_b) == pytest.approx((0.7, 0.3))                  # the A <-> B blend as before
    w_a, (w_b, w_c) = prompt_weights([0.75, 0.75])                 # over 1 in all: normalized, A silent
    assert (w_a, w_b, w_c) == pytest.approx((0.0, 0.5, 0.5))
    curve = torch.linspace(0, 1, FRAMES).reshape(1, FRAMES, 1)
    w_a, (w_b, w_c) = prompt_weights([curve, 0.5])
    total = w_a + w_b + w_c
    assert torch.allclose(total, torch.ones_like(total)) and bool((w_a >= 0).all())
    assert float(w_a[0, 0, 0]) == pytest.approx(0.5) and float(w_a[0, -1, 0]) == 0.0
    assert prompt_weights([]) == (1.0, [])


def test_four_prompts_mix_into_one_request(runner):
    runner.set("prompt_b", "2")
    runner.set("prompt_blend", 0.2)
    runner.set("prompt_c", "3")
    runner.set("prompt_c_weight", [0.0] * (FRAMES // 2) + [0.6] * (FRAMES - FRAMES // 2))
    runner.set("prompt_d", "1")                       # weight 0: left out
    request = runner.controls.request()
    assert len(request.conditions) == 2
    weights = [request.weight] + [c.weight for c in request.conditions]
    total = sum(w if isinstance(w, torch.Tensor) else torch.full((1, FRAMES, 1), float(w)) for w in weights)
    assert torch.allclose(total, torch.ones_like(total))
    assert float(request.conditions[1].weight.reshape(-1)[-1]) == pytest.approx(0.6)     # B + C <= 1: as given
    assert float(request.weight.reshape(-1)[-1]) == pytest.approx(0.2) and float(request.weight.reshape(-1)[0]) == pytest.approx(0.8)
