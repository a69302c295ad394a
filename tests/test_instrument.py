"""The instrument, headless on the analytic model: widgets write the kernel state, the ready
handshake gates patches, views refresh off the tick thread, sources decode, close() ends threads."""

from __future__ import annotations

import dataclasses
import io
import time

import numpy as np
import pytest
import soundfile as sf
import torch

from demon_nb.engine.decode import decode_window
from demon_nb.live import curve_editor as ce
from demon_nb.live import instrument as instrument_module
from demon_nb.live import source_picker as sp
from demon_nb.live.instrument import Instrument, make_instrument
from demon_nb.models.tone import ToneCodec, playable
from demon_nb.live.views import CpuMeter, LatencyTracker, Refresher, quantize
from demon_nb import lab
from demon_nb.models import load
from helpers import FailingDenoiser, wait_until

FRAMES, CHANNELS = 32, 4


@pytest.fixture
def model():
    return load("analytic", frames=FRAMES, channels=CHANNELS)


@pytest.fixture
def inst(model):
    i = Instrument(model, depth=2, steps=4, max_ticks_per_s=100, microphone=True)
    yield i
    i.close()


def simulate_ready(inst) -> None:
    inst.audio._on_custom_msg(inst.audio, {"type": "ready", "sample_rate": inst.audio.sample_rate}, [])


def test_widget_changes_reach_the_kernel_state(inst):
    w = inst.panel.widgets
    w["velocity_scale"].value = 1.25
    w["solver"].value = "sde"
    w["prompt_a"].value = "2"
    w["cfg_mode"].value = "residual-self"
    w["depth"].value = 3
    assert inst.runner.ring.state.get("velocity_scale") == 1.25
    assert inst.runner.ring.state.get("solver") == "sde"
    assert inst.get("prompt_a") == "2" and inst.get("cfg_mode") == "residual-self"
    assert wait_until(lambda: inst.runner.ring.depth == 3)
    assert wait_until(lambda: inst.runner.last_completion is not None
                      and inst.runner.last_completion.request.cfg_mode == "residual-self")


def test_bad_typed_value_shows_a_message_and_music_keeps_playing(inst):
    assert wait_until(lambda: inst.runner.completions >= 1)
    inst.panel.widgets["seed"].value = "-3"
    assert "seed" in inst.panel.message.value and "demon-error" in inst.panel.message.value
    before = inst.runner.completions
    assert wait_until(lambda: inst.runner.completions > before + 2)


def test_a_handdraw_stroke_reaches_the_kernel(inst):
    editor = inst.curves["source_blend"]
    stroke = np.linspace(0.0, 1.0, FRAMES).reshape(1, FRAMES)   # what the browser sends on mouse-up
    editor.line.set_state({"y": {"value": memoryview(stroke.tobytes()), "dtype": "float64", "shape": [1, FRAMES]}})
    got = inst.runner.ring.state.get("source_blend")
    assert torch.is_tensor(got) and got.shape == (1, FRAMES, 1)
    assert torch.allclose(got.reshape(-1).double(), torch.from_numpy(stroke.reshape(-1)))
    assert editor.strokes == 1
    # a stroke leaving the figure is clipped to the control's range
    inst.curves["velocity_scale"].line.y = np.full(FRAMES, 9.0)
    assert float(inst.runner.ring.state.get("velocity_scale").max()) == 2.0


def test_presets_and_reset_write_through(inst):
    editor = inst.curves["guidance_scale"]
    editor.apply_preset("pulse")
    got = inst.runner.ring.state.get("guidance_scale").reshape(-1)
    assert set(np.unique(got.numpy()).tolist()) == {0.0, 10.0}
    editor.reset()
    assert torch.all(inst.runner.ring.state.get("guidance_scale") == 1.0)


def test_patches_stream_before_ready_rotating_through_the_loop_and_a_ready_resends_it(inst, monkeypatch):
    sent = []
    monkeypatch.setattr(inst.audio, "send_patch", lambda patch: sent.append(patch))
    loop = inst.runner.player.loop_samples
    window = inst.runner.player.window_samples
    # no browser yet (with Run All its ready waits behind queued cells): patches go out anyway,
    # each the next window of a rotation through the loop, so a page that starts listening
    # at any moment has sound within one patch
    assert wait_until(lambda: len({p.start_sample for p in list(sent)}) >= 3)
    starts = [p.start_sample for p in list(sent) if p.samples < loop]
    steps = {(b - a) % loop for a, b in zip(starts, starts[1:])}
    assert steps and all(step >= window - inst.runner.player.hop for step in steps), steps
    simulate_ready(inst)
    resent = [p for p in sent if p.completion_id == -1]
    assert sum(p.samples for p in resent) == loop       # the whole loop, from the mirror
    before = inst.runner.completions
    assert wait_until(lambda: any(p.completion_id > before for p in list(sent)))
    count = len(sent)
    simulate_ready(inst)                                 # a page reload
    assert sum(p.samples for p in sent[count:] if p.completion_id == -1) == loop


def test_views_refresh_off_the_tick_thread(inst):
    assert wait_until(lambda: inst.latent_view.completion >= 1 and inst.ring_view.slots)
    assert len(inst.latent_view.data) == FRAMES * CHANNELS
    assert (inst.latent_view.frames, inst.latent_view.channels) == (FRAMES, CHANNELS)
    assert len(inst.ring_view.slots) == 2
    assert all(s is None or 0 <= s["step"] < s["steps"] for s in inst.ring_view.slots)
    assert wait_until(lambda: "completions/s" in inst.metrics_view.widget.value and "ms" in inst.metrics_view.widget.value)
    assert inst._refresher.alive and inst._refresher.calls > 0


def test_tick_errors_show_in_the_ui(model):
    flaky = FailingDenoiser(model.denoiser)
    inst = Instrument(dataclasses.replace(model, denoiser=flaky), depth=2, steps=4, max_ticks_per_s=100, microphone=False)
    try:
        assert wait_until(lambda: inst.runner.completions >= 1)
        flaky.failing.set()
        assert wait_until(lambda: "injected failure" in inst.status.value)
        assert "demon-error" in inst.status.value
        flaky.failing.clear()
        before = inst.runner.completions
        assert wait_until(lambda: inst.runner.completions > before)
    finally:
        inst.close()


def test_close_ends_threads_and_closes_widgets(model):
    inst = Instrument(model, depth=2, steps=4, max_ticks_per_s=100, microphone=False)
    assert wait_until(lambda: inst.runner.completions >= 1)
    inst.stop()
    assert not inst.runner.alive and not inst._refresher.alive
    inst.start()                                         # plays again after stop()
    assert wait_until(lambda: inst.runner.alive and inst._refresher.calls > 0)
    tick_thread, view_thread = inst.runner._thread, inst._refresher._thread
    inst.close()
    assert not tick_thread.is_alive() and not view_thread.is_alive()
    assert inst.widget.comm is None and inst.panel.widgets["seed"].comm is None
    assert inst.curves["source_blend"].line.comm is None and inst.audio.comm is None
    inst.close()                                         # idempotent
    again = Instrument(model, depth=2, steps=4, max_ticks_per_s=100, microphone=False)
    try:
        assert wait_until(lambda: again.runner.completions >= 1)
    finally:
        again.close()


def test_make_instrument_falls_back_with_a_visible_note(monkeypatch):
    real_load = instrument_module.load

    def fake_load(name, **kw):
        if name == "mini":
            raise FileNotFoundError("no weights")
        return real_load(name, frames=FRAMES, channels=CHANNELS)

    monkeypatch.setattr(instrument_module, "load", fake_load)
    inst = make_instrument(display=False, depth=2, steps=4, microphone=False)
    try:
        assert inst.model.name == "analytic"
        assert "not available" in inst.status.value and "no weights" in inst.status.value
    finally:
        inst.close()


def test_latency_from_write_to_first_heard(inst):
    inst.latency.wrote("state", 3, at=100.0)
    inst.latency.wrote("state", 5, at=101.0)
    assert inst.latency.heard({"state": 4}, {"state": 100.4}) == pytest.approx({"state": 0.4})
    assert inst.latency.heard({"state": 7}, {"state": 101.25}) == pytest.approx({"state": 0.25})
    version = inst.set("velocity_scale", 1.1)
    tracker = LatencyTracker()
    assert tracker.heard({"state": version}, {"state": 1.0}) == {}


def test_latency_does_not_count_the_time_before_the_loop_first_sounded():
    # a write in a cell queued behind the instrument's (Run All): the audio reaches the page
    # later; the wait for the page is start-up, not control-to-ear latency
    tracker = LatencyTracker()
    tracker.wrote("state", 2, at=10.0)
    assert tracker.heard({"state": 2}, {"state": 14.1}, since=14.0) == pytest.approx({"state": 0.1})
    tracker.wrote("state", 3, at=20.0)
    assert tracker.heard({"state": 3}, {"state": 20.15}, since=14.0) == pytest.approx({"state": 0.15})


def test_the_metrics_line_says_what_a_player_needs_without_raw_counters(inst):
    from demon_nb.live.views import metrics_html

    assert inst.metrics()["audio"] == "waiting for the browser"
    simulate_ready(inst)
    inst.audio._apply_status({"playhead": 0, "playing": True, "filled": 0.5, "silent": 269_824, "epoch": 5.0})
    assert inst.metrics()["audio"] == "loading 50%" and inst.audio.sounding_since == 5.0
    inst.audio._apply_status({"playhead": 10, "playing": True, "filled": 1.0, "silent": 269_824, "epoch": 6.0,
                              "output_latency": 0.0107})
    m = inst.metrics()
    assert m["output_latency_ms"] == pytest.approx(10.7)
    assert m["audio"] == "playing" and inst.audio.sounding_since == 5.0
    inst.pause()
    assert inst.metrics()["audio"] == "paused"
    inst.resume()
    inst.cpu.read()
    text = metrics_html(inst.metrics() | {"control_to_ear_s": {"state": 0.142}})
    for shown in ("playing", "control→ear</b> state 142 ms (of which the browser's output 11 ms)", "CPU headroom",
                  "tick", "completions/s"):
        assert shown in text, shown
    assert "269824" not in text and "silent" not in text and "patches" not in text


# -- sources --------------------------------------------------------------------------------
def wav_bytes(seconds=0.5, rate=22_050, channels=2) -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    pcm = np.stack([0.3 * np.sin(2 * np.pi * 440 * t)] * channels, axis=1)
    buf = io.BytesIO()
    sf.write(buf, pcm, rate, format="WAV")
    return buf.getvalue()


def test_uploaded_audio_becomes_the_source(inst):
    assert inst.sources.choose_audio(wav_bytes(), "tone.wav")
    source = inst.get("source")
    assert torch.is_tensor(source) and source.shape == (FRAMES, CHANNELS)
    assert "tone.wav" in inst.sources.message.value
    inst.sources.upload.set_state({"value": [{"name": "x.ogg", "type": "audio/ogg", "size": 5,
                                              "last_modified": 0, "content": memoryview(b"junk!")}]})
    assert "demon-error" in inst.sources.message.value and "x.ogg" in inst.sources.message.value
    assert inst.get("source") is source                 # unchanged, and the music goes on
    before = inst.runner.completions
    assert wait_until(lambda: inst.runner.completions > before)


def test_builtin_piece_and_target_toggle(inst):
    label = next(iter(inst.sources.pieces))
    inst.sources.target.value = "x0_target"
    inst.sources.builtin.value = label
    assert torch.is_tensor(inst.get("x0_target")) and inst.get("source") is None
    inst.sources.clear.click()
    assert inst.get("x0_target") is None


def test_a_denied_microphone_shows_a_message(inst, monkeypatch):
    monkeypatch.setattr(sp, "MIC_TIMEOUT_S", 0.05)
    button, recorder = inst.sources.record_button, inst.sources.recorder
    button.value = True                                  # our toggle drives the page's recorder
    assert recorder.recording is True and "recording" in inst.sources.message.value
    assert button.description == "■ stop"
    button.value = False                                 # stopped, no audio ever arrived
    assert recorder.recording is False and button.description == "● record"
    assert wait_until(lambda: "microphone" in inst.sources.message.value and "denied" in inst.sources.message.value, 3)
    assert recorder.layout.display == "none"             # its own (page-only) button is hidden


def test_decode_audio_rejects_broken_files_and_keeps_names_inside_the_temp_folder():
    assert sp.safe_suffix("../../etc/passwd.wav") == "wav"
    assert sp.safe_suffix("..\\..\\evil.W@V") == "wv"
    assert sp.safe_suffix("noext") == "bin"
    pcm, rate = sp.decode_audio(wav_bytes(rate=8000, channels=1), "../../../tmp/x.wav")
    assert rate == 8000 and pcm.shape == (1, 4000)
    with pytest.raises(ValueError, match="not a readable audio file"):
        sp.decode_audio(b"\x00" * 1000, "noise.mp3")
    with pytest.raises(ValueError, match="empty"):
        sp.decode_audio(b"", "empty.wav")


def webm_opus_bytes(seconds=1.0, rate=48_000) -> bytes:
    """What the browser's MediaRecorder gives for the microphone: webm with opus."""
    import av

    buf = io.BytesIO()
    with av.open(buf, "w", format="webm") as container:
        stream = container.add_stream("libopus", rate=rate)
        stream.layout = "mono"
        t = np.arange(int(seconds * rate)) / rate
        frame = av.AudioFrame.from_ndarray((0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None],
                                           format="flt", layout="mono")
        frame.sample_rate = rate
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            container.mux(packet)
    return buf.getvalue()


def test_a_microphone_recording_in_webm_opus_becomes_the_source(inst):
    data = webm_opus_bytes()
    pcm, rate = sp.decode_audio(data, "microphone.webm")
    assert rate == 48_000 and pcm.shape[0] == 1 and abs(pcm.shape[1] - 48_000) < 2_000
    assert 0.2 < float(np.abs(pcm).max()) < 0.4
    inst.sources.recorder.audio.value = data             # the recorder widget's value after "stop"
    assert "microphone.webm" in inst.sources.message.value
    assert torch.is_tensor(inst.get("source"))


def test_fit_audio_resamples_matches_channels_and_tiles():
    pcm = np.ones((2, 100), dtype=np.float32)
    out = sp.fit_audio(pcm, 100, 200, 1, 450)
    assert out.shape == (1, 1, 450) and torch.allclose(out[0, 0, 50:150], torch.ones(100), atol=0.05)


# -- pure pieces ------------------------------------------------------------------------------
def test_presets():
    assert ce.ramp(5, 0.0, 2.0).tolist() == [0.0, 0.5, 1.0, 1.5, 2.0]
    s = ce.sine(8, 0.0, 1.0, cycles=1)
    assert s[0] == 0.0 and s[4] == pytest.approx(1.0)
    assert set(ce.pulse(16, 0.2, 0.8).tolist()) == {0.2, 0.8}
    assert ce.flat(3, 0.0, 1.0).tolist() == [0.5] * 3
    with pytest.raises(ValueError, match="preset"):
        ce.preset("saw", 4, 0, 1)


def test_stroke_curve_normalizes_shapes():
    assert ce.stroke_curve("s", [[0.1, 2.0, -1.0]], 3, 0.0, 1.0).tolist() == [0.1, 1.0, 0.0]
    with pytest.raises(ValueError, match="s: a stroke must give 3 values"):
        ce.stroke_curve("s", [0.1, 0.2], 3, 0.0, 1.0)


def test_quantize():
    data, lo, hi = quantize(np.array([[-2.0, 0.0], [1.0, 2.0]]))
    assert (lo, hi) == (-2.0, 2.0) and list(data) == [0, 128, 191, 255]


def test_tone_codec_windowed_decode_is_exact_and_encode_inverts(model):
    codec = playable(model).codec
    assert isinstance(codec, ToneCodec) and codec.sample_rate >= 8000
    assert codec.sample_rate / codec.hop == model.codec.sample_rate / model.codec.hop   # same frame rate
    latent = torch.randn(FRAMES, CHANNELS) * 0.5
    full = decode_window(codec, latent, 0, FRAMES, loop=True)
    part = decode_window(codec, latent, 10, 20, loop=True)
    assert torch.allclose(part, full[:, 10 * codec.hop:20 * codec.hop], atol=1e-5)
    steady = torch.full((FRAMES, CHANNELS), 0.3)
    back = codec.encode(codec.decode(steady[None]))[0]
    assert torch.allclose(back[1:-1], steady[1:-1], atol=0.05)


def test_lab_command():
    cmd = lab.command(lab.default_notebooks(), 8899, "abc", open_browser=False, is_root=True)
    assert "--ip=127.0.0.1" in cmd and "--IdentityProvider.token=abc" in cmd and "--allow-root" in cmd
    assert "--no-browser" in cmd and any("01_play.ipynb" in c for c in cmd)
    assert "--allow-root" not in lab.command(lab.default_notebooks(), 8899, "abc", True, False)
    assert lab.main(["--dry-run", "--no-browser", "--port", "8899"]) == 0


def test_values_set_from_code_show_on_the_widgets(inst):
    inst.set("velocity_scale", 1.2)
    inst.set("seed", 42)
    assert inst.panel.widgets["velocity_scale"].value == 1.2
    assert inst.panel.widgets["seed"].value == "42"
    inst.set("velocity_scale", [1.0] * inst.model.frames)  # a curve leaves the slider alone
    assert inst.panel.widgets["velocity_scale"].value == 1.2


def test_wait_completion_blocks_until_the_next_one(inst):
    first = inst.wait_completion(timeout=30)
    second = inst.wait_completion(timeout=30)
    assert second is not first and second.finished_tick > first.finished_tick


def test_one_argument_starts_the_instrument_on_an_acestep_checkpoint(tmp_path):
    from demon_nb.live.instrument import make_instrument
    from demon_nb.models.acestep import tiny

    folder = tiny.write_official(tmp_path, seed=0)
    inst = make_instrument(checkpoints=folder, display=False, depth=1, steps=2)
    try:
        assert inst.model.name == "acestep"
        completion = inst.wait_completion(timeout=120)
        assert completion.latent.shape[1] == inst.model.denoiser.channels
    finally:
        inst.close()


def test_transport_is_16_bit_by_default_and_validated(model):
    inst = Instrument(model, depth=2, steps=4, autostart=False, microphone=False)
    try:
        assert inst.audio.dtype == "int16" and inst.runner.player.window_samples == inst.runner.player.sample_rate // 2
    finally:
        inst.close()
    with pytest.raises(ValueError, match="transport"):
        Instrument(model, transport="mp3", autostart=False)


def test_heavy_views_refresh_at_a_lower_rate(inst):
    assert wait_until(lambda: inst.runner.completions >= 1)
    inst._refresher.stop()
    shown, moved, ring = [], [], []
    inst.latent_view.show = lambda latent, completion: shown.append(completion)
    inst.curves.set_playhead = lambda frame: moved.append(frame)
    inst.ring_view.update = lambda *args: ring.append(args)
    for _ in range(3 * instrument_module.HEAVY_VIEWS_EVERY):
        inst.refresh()
    assert len(ring) == 3 * instrument_module.HEAVY_VIEWS_EVERY and len(moved) == 3 and len(shown) == 3
    # the heatmap's playhead moves in the page, from the audio widget: the kernel sends none
    assert (inst.latent_view.audio, inst.latent_view.hop) == (inst.audio._uid, inst.model.codec.hop)
    assert inst.latent_view.playhead == 0.0


def test_a_hidden_latent_view_is_sent_nothing(inst):
    view = inst.latent_view
    view._on_page_msg(view, {"type": "visible", "visible": False}, [])
    before = view.completion
    view.show(torch.zeros(FRAMES, CHANNELS), before + 5)
    assert view.completion == before
    view._on_page_msg(view, {"type": "visible", "visible": True}, [])
    view.show(torch.zeros(FRAMES, CHANNELS), before + 5)
    assert view.completion == before + 5


def test_views_slow_down_when_the_cpu_has_no_headroom():
    refresher = Refresher(lambda: None, hz=10.0, min_hz=2.0)
    rates = [refresher.adapt(0.05) for _ in range(6)]
    assert rates == sorted(rates, reverse=True) and rates[-1] == 2.0       # floor
    assert refresher.adapt(0.25) == 2.0                                      # between LOW and HIGH: held
    rates = [refresher.adapt(0.8) for _ in range(12)]
    assert rates[-1] == 10.0 and rates == sorted(rates)                     # back up to the set rate
    assert refresher.adapt(None) == 10.0
    with pytest.raises(ValueError, match="min_hz"):
        Refresher(lambda: None, hz=5.0, min_hz=6.0)


def test_cpu_meter_reads_a_share_of_idle_time():
    meter = CpuMeter()
    assert meter.headroom is None
    sum(i * i for i in range(200_000))
    value = meter.read()
    assert value is None or 0.0 <= value <= 1.0
    time.sleep(0.05)
    assert 0.0 <= meter.read() <= 1.0


def test_instrument_sets_the_kernel_threads(model):
    inst = make_instrument(model, display=False, threads=1, autostart=False, microphone=False)
    try:
        assert torch.get_num_threads() == 1
    finally:
        inst.close()
    for bad in (0, -2, 1.5, True, "2"):
        with pytest.raises(ValueError, match="threads"):
            make_instrument(model, display=False, threads=bad, autostart=False)
