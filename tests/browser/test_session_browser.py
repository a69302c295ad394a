"""Presets and recording with the mouse, in a real JupyterLab + Chromium.

One instrument (the built-in ``mini`` model, default settings) in a small notebook; the tests
run in file order on the same live instrument:

- the session bar's path box, *save* and *load* buttons: a slider moved with the mouse and a
  value set from a cell are saved, changed, and restored by *load*; a preset with an unknown
  control and a bad value (written by the test) is loaded with the mouse, the panel's message
  line names what was skipped, and the music keeps playing;
- the *● record* toggle: a take of about 3 s whose WAV holds exactly what the page played. The
  chain checked is WAV == the kernel's mirror of the loop at the recorded positions (16-bit
  quantization) and mirror == the worklet's loop (read through the test hook ``readLoop()`` of
  widgets/audio_out.js; int16 transport). The runner is paused before the take stops so the loop
  no longer changes while the three are compared.
"""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path

import numpy as np
import pytest

from demon_nb.bench import _instrument_page as ui
from demon_nb.bench._browser import Lab, new_page

pytestmark = pytest.mark.browser

CELLS = ["import demon_nb\ninst = demon_nb.instrument()"]
INT16_TOL = 0.5 / 32767 + 1e-6   # half a step of 16-bit rounding
ERRORS_JS = "() => document.querySelector('.demon-controls .demon-error')?.textContent ?? ''"
# the worklet's loop as base64 of each channel's float32 bytes
READ_LOOP_JS = """async () => {
    const s = window.__demon_audio.latest;
    const loop = await s.readLoop();
    const data = loop.data.map((ch) => {
        const bytes = new Uint8Array(ch.buffer, ch.byteOffset, ch.byteLength);
        let bin = '';
        for (let i = 0; i < bytes.length; i += 0x8000) bin += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
        return btoa(bin);
    });
    return {filled: loop.filled, data, applied: s.applied, received: s.patchesReceived, error: s.error};
}"""


@pytest.fixture(scope="module")
def session(lab_server, browser, artifacts):
    page = new_page(browser, width=1280, height=1700)
    lab = Lab(lab_server, page, artifacts=artifacts)
    try:
        lab.write_notebook("session.ipynb", CELLS)
        lab.open("session.ipynb")
        lab.run_all(timeout=300)
        lab.wait_for(ui.PLAYING_JS, timeout=120, describe=ui.DESCRIBE_JS)
        yield lab
    finally:
        try:
            lab.run_new_cell("inst.close()", timeout=30)
        except Exception:  # noqa: BLE001 - the page may be gone; the sessions are shut down below
            pass
        page.context.close()
        lab_server.shutdown_sessions()


def wait_kernel(lab: Lab, expr: str, ok, timeout: float = 30):
    """Evaluate ``expr`` in the kernel until ``ok(value)``; returns the last value."""
    deadline = time.monotonic() + timeout
    while True:
        got = lab.kernel_json(expr)
        if ok(got) or time.monotonic() > deadline:
            return got
        lab.page.wait_for_timeout(300)


def type_path(lab: Lab, path: Path) -> None:
    """Click into the session bar's path box, replace its text by typing ``path``, press Enter."""
    field = lab.page.locator(".demon-session-path input").first
    field.scroll_into_view_if_needed()
    field.click()
    field.press("Control+a")
    field.type(str(path))
    field.press("Enter")
    got = wait_kernel(lab, "inst.session_widgets['path'].value", lambda v: v == str(path), timeout=20)
    assert got == str(path), got


def click(lab: Lab, selector: str) -> None:
    button = lab.page.locator(selector).first
    button.scroll_into_view_if_needed()
    button.click()


def status_after(lab: Lab, rendered: int, samples: int, timeout: float = 20) -> dict:
    """The audio widget's status once it has rendered ``samples`` more than ``rendered``."""
    return lab.wait_for("([r, n]) => { const s = window.__demon_audio.latest.status; return s.rendered >= r + n ? s : null; }",
                        arg=[rendered, samples], timeout=timeout, describe=ui.DESCRIBE_JS)


def test_preset_save_and_load_with_the_mouse(session, lab_server):
    lab = session
    preset = lab_server.root / "set.json"
    type_path(lab, preset)

    ui.click_slider(lab, "velocity_scale", 0.8)
    lab.run_new_cell("inst.set('seed', 1234)")
    saved = wait_kernel(lab, "{'vs': inst.get('velocity_scale'), 'seed': inst.get('seed')}",
                        lambda v: isinstance(v["vs"], float) and v["vs"] > 1.4 and v["seed"] == 1234)
    assert saved["vs"] > 1.4 and saved["seed"] == 1234, saved
    assert ui.slider_readout(lab, "velocity_scale") == pytest.approx(saved["vs"], abs=0.006)

    click(lab, ".demon-session-save")
    deadline = time.monotonic() + 20
    while not preset.is_file() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert preset.is_file(), f"save wrote no {preset}"
    document = json.loads(preset.read_text())
    assert document["schema"] == "demon_nb.preset" and document["model"] == "mini", document.keys()
    assert document["controls"]["velocity_scale"] == pytest.approx(saved["vs"])
    assert document["controls"]["seed"] == 1234

    # change both: the slider with the mouse, the seed from a cell
    ui.click_slider(lab, "velocity_scale", 0.2)
    lab.run_new_cell("inst.set('seed', 99)")
    changed = wait_kernel(lab, "{'vs': inst.get('velocity_scale'), 'seed': inst.get('seed')}",
                          lambda v: v["vs"] < 0.6 and v["seed"] == 99)
    assert changed["vs"] < 0.6 and changed["seed"] == 99, changed

    click(lab, ".demon-session-load")
    restored = wait_kernel(lab, "{'vs': inst.get('velocity_scale'), 'seed': inst.get('seed'),"
                                " 'errors': inst.panel.errors}",
                           lambda v: v["vs"] == pytest.approx(saved["vs"]) and v["seed"] == 1234)
    assert restored["vs"] == pytest.approx(saved["vs"]) and restored["seed"] == 1234, (saved, restored)
    assert restored["errors"] == {}, f"loading its own save skipped something: {restored['errors']}"
    # the widgets show the restored values
    lab.wait_for("(v) => Math.abs(parseFloat(document.querySelector('.demon-control-velocity_scale .widget-readout')"
                 ".textContent) - v) < 0.006", arg=saved["vs"], timeout=20)
    assert lab.page.locator(".demon-control-seed input").first.input_value() == "1234"
    assert lab.eval(ERRORS_JS) == ""


def test_preset_with_unknown_and_bad_values_names_what_it_skipped(session, lab_server):
    lab = session
    bad = lab_server.root / "bad.json"
    bad.write_text(json.dumps({"schema": "demon_nb.preset", "version": 1, "model": "mini", "controls": {
        "no_such_knob": 3, "denoise": 7.5, "velocity_scale": 0.6}}))
    before = lab.kernel_json("{'denoise': inst.get('denoise'), 'completions': inst.runner.completions}")
    type_path(lab, bad)
    playing = ui.status(lab)

    click(lab, ".demon-session-load")
    named = f"() => {{ const t = ({ERRORS_JS})(); return t.includes('no_such_knob') && t.includes('denoise') ? t : null; }}"
    text = lab.wait_for(named, timeout=20, describe=ERRORS_JS)
    assert "preset skipped no_such_knob: unknown control" in text, text
    assert "preset skipped denoise" in text, text
    assert "velocity_scale" not in text, text                   # the good value was applied, not skipped
    after = wait_kernel(lab, "{'vs': inst.get('velocity_scale'), 'denoise': inst.get('denoise'),"
                             " 'errors': inst.panel.errors, 'alive': inst.runner.alive,"
                             " 'completions': inst.runner.completions}",
                        lambda v: v["vs"] == pytest.approx(0.6))
    assert after["vs"] == pytest.approx(0.6), after
    assert after["denoise"] == before["denoise"], (before, after)   # the bad value changed nothing
    assert set(after["errors"]) == {"preset:no_such_knob", "preset:denoise"}, after["errors"]
    # the music keeps playing: the worklet renders on, the runner completes on
    sr = lab.eval("() => window.__demon_audio.latest.sampleRate")
    later = status_after(lab, playing["rendered"], sr)
    assert later["rms"] > 0.005 and later["playing"], later
    assert after["alive"] and after["completions"] > before["completions"], (before, after)


def _loop_from_page(lab: Lab) -> tuple[np.ndarray, dict]:
    raw = lab.eval(READ_LOOP_JS)
    loop = np.stack([np.frombuffer(base64.b64decode(ch), dtype="<f4") for ch in raw.pop("data")])
    return loop, raw


def test_record_toggle_writes_exactly_what_the_page_played(session, lab_server):
    import soundfile as sf

    lab = session
    take = lab_server.root / "rec-take.wav"
    type_path(lab, lab_server.root / "rec.json")              # takes are named after the preset
    sr = lab.eval("() => window.__demon_audio.latest.sampleRate")
    start = ui.status(lab)

    click(lab, ".demon-session-record")
    recording = wait_kernel(lab, "inst._take is not None and inst._take.recording", lambda v: v is True, timeout=10)
    assert recording is True
    status_after(lab, start["rendered"], 3 * sr, timeout=30)  # about 3 s of music
    lab.run_new_cell("inst.pause(); import time as _t; _t.sleep(0.5)")
    # every patch received is in the worklet before the take stops: the loop no longer changes
    # (patches sent before the page's audio had started are not received: it got the whole loop instead)
    sent = lab.kernel_json("inst.patches_sent")
    lab.wait_for("() => { const s = window.__demon_audio.latest; return s.applied === s.patchesReceived; }",
                 timeout=20, describe=ui.DESCRIBE_JS)
    click(lab, ".demon-session-record")
    info = wait_kernel(lab, "{'files': {k: str(v) for k, v in (inst._take.files or {}).items()},"
                            " 'frames': inst._take.recorder.frames, 'position': inst._take.recorder._position,"
                            " 'loop': inst.runner.player.loop_samples, 'sr': inst.model.codec.sample_rate,"
                            " 'sent': inst.patches_sent, 'errors': inst.panel.errors}",
                       lambda v: bool(v["files"]), timeout=20)
    assert info["files"], info
    assert not any(k.startswith("session:") for k in info["errors"]), info["errors"]
    assert info["sent"] == sent, "a patch arrived after the pause"
    lab.run_new_cell(f"import numpy as _np; _np.save({str(lab_server.root / 'mirror.npy')!r}, inst.runner.player.mirror.pcm)")
    loop, page = _loop_from_page(lab)
    lab.run_new_cell("inst.resume()")

    assert Path(info["files"]["audio"]) == take and take.is_file(), info
    assert Path(info["files"]["controls"]).is_file(), info
    assert "latents" in info["files"] and Path(info["files"]["latents"]).is_file(), info
    wav, wav_sr = sf.read(str(take), dtype="float32", always_2d=True)
    wav = wav.T
    L = info["loop"]
    assert wav_sr == info["sr"] == sr, (wav_sr, info, sr)
    assert wav.shape == (2, info["frames"]), (wav.shape, info)
    assert 2.5 * sr <= info["frames"] < L - sr, f"{info['frames']} samples for a take of about 3 s (loop {L})"
    assert float(np.sqrt((wav ** 2).mean())) > 0.005, "the take is silent"

    mirror = np.load(lab_server.root / "mirror.npy")
    assert mirror.shape == loop.shape == (2, L), (mirror.shape, loop.shape)
    assert page["filled"] == L and page["error"] == "", page
    # the worklet's loop is the kernel's mirror, up to the int16 transport: round(x * 32767) / 32767,
    # i.e. half a step of rounding (crossfades identical)
    diff = np.abs(loop - mirror)
    worst = float(diff.max())
    assert worst < INT16_TOL, f"worklet loop vs kernel mirror: max |diff| {worst:.2e} at {np.unravel_index(diff.argmax(), diff.shape)}"

    # the take follows the playhead: it starts where the first report was, and ends at the last
    first = (info["position"] - info["frames"]) % L
    idx = (first + np.arange(info["frames"])) % L
    block = sr // 10                                          # about one status report
    bad = []
    for a in range(0, info["frames"], block):
        part = slice(a, min(a + block, info["frames"]))
        d_mirror = float(np.abs(wav[:, part] - mirror[:, idx[part]]).max())
        d_loop = float(np.abs(wav[:, part] - loop[:, idx[part]]).max())
        if d_mirror > 1e-4 or d_loop > 1.5e-4:
            bad.append((a, round(d_mirror, 6), round(d_loop, 6)))
    assert not bad, (f"{len(bad)} of {-(-info['frames'] // block)} blocks of the take differ from the loop at the "
                     f"positions played (start {first}, loop {L}): (offset, vs mirror, vs worklet) {bad[:12]}")
