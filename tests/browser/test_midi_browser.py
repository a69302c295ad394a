"""MIDI in a real JupyterLab + Chromium, with a fake ``navigator.requestMIDIAccess`` injected
into the page that emits control changes: a mapping from Python, learn with the mouse, the
status line, and a browser without Web MIDI."""

from __future__ import annotations

import time

import pytest

from demon_nb.bench._browser import Lab, new_page
from demon_nb.bench._instrument_page import FAKE_MIDI_JS as FAKE_MIDI, MIDI_STATUS_JS

pytestmark = pytest.mark.browser

NO_MIDI = """Object.defineProperty(navigator, "requestMIDIAccess", { configurable: true, value: undefined });"""
CELLS = ["import demon_nb\ninst = demon_nb.instrument('analytic', threads=None)"]
STATUS = MIDI_STATUS_JS


def open_with(lab_server, browser, artifacts, script: str, name: str):
    page = new_page(browser, width=1280, height=1400)
    page.add_init_script(script)
    lab = Lab(lab_server, page, artifacts=artifacts)
    lab.write_notebook(name, CELLS)
    lab.open(name)
    lab.run_all(timeout=180)
    return lab


def wait_kernel(lab: Lab, expr: str, want, timeout: float = 30):
    deadline = time.monotonic() + timeout
    while True:
        got = lab.kernel_json(expr)
        if got == want or time.monotonic() > deadline:
            return got
        time.sleep(0.3)


def test_midi_mapping_learn_and_status(lab_server, browser, artifacts):
    lab = open_with(lab_server, browser, artifacts, FAKE_MIDI, "midi.ipynb")
    try:
        lab.wait_for(f"() => ({STATUS})().includes('Fake MIDI')", timeout=60)
        lab.run_new_cell("inst.midi.map(cc=21, control='velocity_scale', lo=0.5, hi=1.8)")
        lab.eval("() => { for (let v = 0; v <= 127; v += 1) window.__fakeMidi.send([0xB0, 21, v]); }")  # a fast sweep
        assert wait_kernel(lab, "round(inst.get('velocity_scale'), 4)", 1.8) == 1.8
        lab.wait_for(f"() => ({STATUS})().includes('CC 21 = 127')", timeout=20)
        writes = lab.kernel_json("inst.midi.writes")
        assert 1 <= writes <= 40  # 128 messages, coalesced to about one write per tick (and slew-limited)
        # learn with the mouse: the default target is velocity_scale; pick denoise, press learn, move CC 22
        lab.page.select_option(".demon-midi-target select", "denoise")
        lab.page.click(".demon-midi-learn button, button.demon-midi-learn")
        lab.wait_for(f"() => ({STATUS})().includes('move a knob')", timeout=20)
        lab.eval("() => window.__fakeMidi.send([0xB0, 22, 64])")
        lab.wait_for(f"() => ({STATUS})().includes('CC 22 = 64')", timeout=20)
        mapped = lab.kernel_json("{k: [m.control for m in v] for k, v in inst.midi.mappings['cc'].items()}")
        assert mapped == {"21": ["velocity_scale"], "22": ["denoise"]}
        assert lab.kernel_json("inst.runner.alive and not inst.runner.errors") is True
    finally:
        lab.run_new_cell("inst.close()")
        lab.page.context.close()
        lab_server.shutdown_sessions()


def test_midi_without_web_midi_says_so_and_the_rest_plays(lab_server, browser, artifacts):
    lab = open_with(lab_server, browser, artifacts, NO_MIDI, "nomidi.ipynb")
    try:
        text = lab.wait_for(f"() => {{ const t = ({STATUS})(); return t.includes('no Web MIDI') ? t : null; }}", timeout=60)
        assert "on-screen controls only" in text
        assert wait_kernel(lab, "inst.runner.completions > 0 and inst.runner.alive", True) is True
    finally:
        lab.run_new_cell("inst.close()")
        lab.page.context.close()
        lab_server.shutdown_sessions()
