"""Presets (save / load every control), recording what is heard, and exporting the loop."""

import json

import numpy as np
import pytest
import soundfile as sf
import torch
from safetensors.torch import load_file

from demon_nb.bench.controls import probe_value
from demon_nb.engine.control_table import CONTROLS
from demon_nb.live import presets
from demon_nb.live.instrument import Instrument
from demon_nb.live.runner import Runner
from demon_nb.models import load
from helpers import wait_until

FRAMES, CHANNELS = 32, 4


@pytest.fixture
def model():
    return load("analytic", frames=FRAMES, channels=CHANNELS)


def changed_runner(model) -> Runner:
    """A runner whose every control holds a valid non-default value."""
    runner = Runner(model, depth=2, steps=4)
    for name in CONTROLS:
        runner.set(name, probe_value(name, runner.controls.get(name), FRAMES, CHANNELS, ("1", "2")))
    runner.ring.tick()  # structure changes land at the tick
    return runner


def same(a, b) -> bool:
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and torch.equal(a, b)
    return a == b


def test_every_control_round_trips(model, tmp_path):
    saved = changed_runner(model)
    presets.save(tmp_path / "p.json", saved.controls.get, model.name)
    fresh = Runner(model, depth=2, steps=4)
    report = presets.load(tmp_path / "p.json", fresh.set)
    fresh.ring.tick()
    assert report.skipped == {} and sorted(report.applied) == sorted(CONTROLS)
    for name in CONTROLS:
        assert same(fresh.controls.get(name), saved.controls.get(name)), name
    document = json.loads((tmp_path / "p.json").read_text())
    assert document["schema"] == "demon_nb.preset" and document["version"] == 1 and document["model"] == "analytic"
    assert document["controls"]["source"]["file"] == "p.latents.safetensors"


def test_bad_presets_skip_what_they_cannot_apply_and_keep_the_rest(model, tmp_path):
    runner = Runner(model, depth=2, steps=4)
    runner.set("velocity_scale", 1.5)
    document = {"schema": "demon_nb.preset", "version": 1, "model": "analytic", "controls": {
        "seed": 9, "volume": 3, "denoise": "high", "ode_noise": 99.0, "gain": 0.5,
        "source": {"latent": "source", "file": "missing.latents.safetensors", "sha256": "0"}}}
    (tmp_path / "bad.json").write_text(json.dumps(document))
    report = presets.load(tmp_path / "bad.json", runner.set)
    assert sorted(report.applied) == ["gain", "seed"]
    assert report.skipped["volume"] == "unknown control"
    assert "denoise" in report.skipped["denoise"] and "ode_noise" in report.skipped["ode_noise"]
    assert "missing" in report.skipped["source"]
    assert runner.controls.get("velocity_scale") == 1.5 and runner.controls.get("seed") == 9


@pytest.mark.parametrize("text, word", [
    ("not json", "not JSON"), (json.dumps({"schema": "other"}), "schema"),
    (json.dumps({"schema": "demon_nb.preset", "version": 7, "controls": {}}), "newer"),
    (json.dumps({"schema": "demon_nb.preset", "version": 1, "controls": []}), "controls"),
])
def test_unreadable_presets_raise_a_clear_error(model, tmp_path, text, word):
    (tmp_path / "x.json").write_text(text)
    with pytest.raises(ValueError, match=word):
        presets.load(tmp_path / "x.json", Runner(model).set)


def test_altered_latent_is_skipped(model, tmp_path):
    runner = changed_runner(model)
    presets.save(tmp_path / "p.json", runner.controls.get, model.name)
    from safetensors.torch import save_file

    latents = load_file(str(tmp_path / "p.latents.safetensors"))
    latents["source"] = latents["source"] + 1
    save_file(latents, str(tmp_path / "p.latents.safetensors"))
    report = presets.load(tmp_path / "p.json", Runner(model).set)
    assert "hash" in report.skipped["source"] and "x0_target" not in report.skipped


def status(inst, playhead, rendered):
    inst.audio._on_custom_msg(inst.audio, {"type": "status", "playhead": playhead, "playing": True,
                                           "rendered": rendered}, [])


def test_record_writes_what_is_heard_with_latents_and_history(model, tmp_path):
    inst = Instrument(model, depth=2, steps=4, max_ticks_per_s=100)
    try:
        loop = inst.runner.player.loop_samples
        assert wait_until(lambda: inst.runner.player.mirror.filled.all())
        inst.pause()
        expected_loop = inst.runner.player.mirror.read(0, loop).copy()
        path = inst.record(tmp_path / "take.flac")
        with pytest.raises(ValueError, match="already recording"):
            inst.record(tmp_path / "other.wav")
        inst.set("velocity_scale", 1.2)
        status(inst, 10, 0)                 # the first report sets the start
        status(inst, (10 + loop + 100) % loop, loop + 100)   # a whole loop and 100 samples later
        files = inst.stop_recording()
        assert files["audio"] == path and path.exists()
        audio, rate = sf.read(path, always_2d=True)
        assert rate == inst.audio.sample_rate and audio.shape[0] == loop + 100
        heard = np.concatenate([expected_loop[:, 10:], expected_loop[:, :10 + 100]], axis=1)
        assert np.abs(audio.T - heard).max() < 1e-4  # 16-bit
        document = json.loads(files["controls"].read_text())
        assert document["history"][0][1:] == ["velocity_scale", 1.2]
        assert document["preset"]["controls"]["velocity_scale"] == 1.0
        if "latents" in files:
            assert load_file(str(files["latents"]))["latents"].shape[1:] == (FRAMES, CHANNELS)
    finally:
        inst.close()


def test_record_stops_by_itself_after_seconds_and_export_writes_the_loop(model, tmp_path):
    inst = Instrument(model, depth=2, steps=4, max_ticks_per_s=100)
    try:
        loop, rate = inst.runner.player.loop_samples, inst.audio.sample_rate
        assert wait_until(lambda: inst.runner.player.mirror.filled.all())
        inst.record(tmp_path / "short.wav", seconds=0.5)
        status(inst, 0, 0)
        status(inst, loop // 2, loop // 2)
        status(inst, 0, loop - loop // 2)
        assert not inst._take.recording  # stopped at 0.5 s of audio
        assert sf.info(tmp_path / "short.wav").frames == int(0.5 * rate)
        inst.pause()                          # returns once no tick is in flight: the mirror holds still
        out = inst.export_loop(tmp_path / "loop.wav")
        exported, _ = sf.read(out, always_2d=True)
        assert exported.shape[0] == loop
        assert np.abs(exported.T - inst.runner.player.mirror.read(0, loop)).max() < 1e-4
    finally:
        inst.close()


def test_bad_record_targets_fail_at_the_call(model, tmp_path):
    inst = Instrument(model, depth=2, steps=4, max_ticks_per_s=100, autostart=False)
    try:
        with pytest.raises(ValueError, match="wav or .flac|.wav or .flac"):
            inst.record(tmp_path / "take.mp3")
        with pytest.raises(ValueError, match="does not exist"):
            inst.record(tmp_path / "nowhere" / "take.wav")
        with pytest.raises(ValueError, match="seconds"):
            inst.record(tmp_path / "take.wav", seconds=-1)
        with pytest.raises(ValueError, match="nothing is being recorded"):
            inst.stop_recording()
    finally:
        inst.close()


def test_session_buttons_save_load_and_record(model, tmp_path):
    inst = Instrument(model, depth=2, steps=4, max_ticks_per_s=100)
    try:
        w = inst.session_widgets
        w["path"].value = str(tmp_path / "mine.json")
        inst.set("velocity_scale", 1.7)
        inst.midi.map(cc=21, control="denoise", lo=0.2, hi=0.9)
        inst.midi.map_note(60, "pause")
        w["save"].click()
        inst.set("velocity_scale", 1.0)
        inst.midi.clear()
        w["load"].click()
        assert inst.get("velocity_scale") == 1.7 and (tmp_path / "mine.json").exists()
        assert inst.midi.to_json() == {"cc": [[21, "denoise", 0.2, 0.9, "linear"]], "notes": [[60, "pause"]]}
        w["record"].value = True
        assert inst._take is not None and inst._take.recording
        w["record"].value = False
        assert (tmp_path / "mine-take.wav").exists() and (tmp_path / "mine-take.controls.json").exists()
        w["path"].value = str(tmp_path / "absent.json")
        w["load"].click()  # a clear message in the panel, nothing changes
        assert "no preset file" in inst.panel.message.value and inst.get("velocity_scale") == 1.7
    finally:
        inst.close()
