"""The performance page: ``python -m demon_nb app --model analytic --preset FILE`` (Voila) in a
subprocess, opened in headless Chromium (``--autoplay-policy=no-user-gesture-required``, as in
CHROMIUM_ARGS): the instrument renders with no code, is heard, plays the preset, answers the
mouse; stopping the process group leaves no process and no generated notebook behind. Without
the autoplay flag (Chromium's default policy) a click anywhere on the page starts the sound.

One app and one page for the module; the tests run in file order.
"""

from __future__ import annotations

import json
import os
import re
import time

import pytest

from demon_nb.bench import _instrument_page as ui
from demon_nb.bench._browser import CHROMIUM, CHROMIUM_ARGS, Lab, descendants, new_page, stop_group
from demon_nb.bench._servers import app_server
from demon_nb.live import presets
from instrument_checks import check_sustained_audio, check_worklet_started

pytestmark = pytest.mark.browser

PRESET_VELOCITY = 1.5
# playing, the loop filled, audible
PLAYING_JS = """() => { const s = window.__demon_audio?.latest?.status;
    return s && s.playing && s.filled > 0.99 && s.rms > 0.005 ? s : null; }"""
DESCRIBE_JS = """() => { const a = window.__demon_audio; const s = a?.latest;
    return {models: a && Object.keys(a.models).length, ready: s?.ready, error: s?.error, ctx: s?.ctx.state,
            received: s?.patchesReceived, status: s?.status, text: document.body.innerText.slice(0, 2000)}; }"""
# code, prompts, editors: what a notebook page shows and the performance page must not
CODE_SELECTORS = (".jp-InputArea, .jp-InputPrompt, .jp-Cell-inputWrapper, .jp-InputArea-editor, .cm-editor,"
                  " .CodeMirror, .input_area, .prompt")


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    pytest.importorskip("voila", reason="Voila is not installed (pip install 'voila>=0.5')")
    base = tmp_path_factory.mktemp("app")
    (base / "tmp").mkdir()
    preset = base / "slow.json"
    preset.write_text(json.dumps({"schema": presets.SCHEMA, "version": presets.VERSION, "model": "analytic",
                                  "controls": {"velocity_scale": PRESET_VELOCITY}}))
    env = dict(os.environ, TMPDIR=str(base / "tmp"))        # where the app writes its notebook
    with app_server(base, ["--model", "analytic", "--preset", str(preset)], env=env, start_timeout=120) as server:
        yield server


@pytest.fixture(scope="module")
def page_lab(app, browser, artifacts):
    assert "--autoplay-policy=no-user-gesture-required" in CHROMIUM_ARGS
    page = new_page(browser, width=1280, height=1400)
    lab = Lab(app, page, artifacts=artifacts)        # only its page helpers (eval, wait_for) are used
    try:
        page.goto(app.url)
        first = lab.wait_for(PLAYING_JS, timeout=180, describe=DESCRIBE_JS)
        yield lab, first
    finally:
        page.context.close()


def test_app_page_prints_a_loopback_url_with_a_token(app):
    assert re.fullmatch(rf"http://127\.0\.0\.1:{app.port}/\?token=[0-9a-f]{{32}}", app.url), app.url
    assert app.url in app.log.read_text()


def test_app_page_renders_the_instrument_and_no_code(page_lab):
    lab, _ = page_lab
    for selector in (".demon-instrument", ".demon-controls", ".demon-midi-status", ".demon-audio-out",
                     ".demon-curves", ".demon-control-velocity_scale"):
        assert lab.page.locator(selector).first.is_visible(), f"{selector} is not visible"
    midi = lab.page.locator(".demon-midi-status").first.text_content()
    assert midi.startswith("MIDI"), midi
    visible_code = lab.eval("""(sel) => [...document.querySelectorAll(sel)]
        .filter(e => e.offsetWidth > 0 && e.offsetHeight > 0).map(e => e.className)""", CODE_SELECTORS)
    assert visible_code == [], visible_code
    text = lab.eval("() => document.body.innerText")
    assert "demon_nb.instrument(" not in text and "import demon_nb" not in text and "In [" not in text
    assert lab.eval("() => document.title") == "DEMON", lab.eval("() => document.title")


def test_app_page_is_heard(page_lab):
    lab, first = page_lab
    check_worklet_started(lab)
    before, after = check_sustained_audio(lab)
    assert after["patches"] > before["patches"], (before["patches"], after["patches"])


def test_app_page_plays_the_preset(page_lab):
    lab, _ = page_lab
    assert ui.slider_readout(lab, "velocity_scale") == pytest.approx(PRESET_VELOCITY, abs=0.006)
    text = lab.eval("() => document.body.innerText")
    assert "preset slow.json: applied 1 controls" in text, text[-2000:]


def test_app_page_slider_moved_with_mouse_is_heard(page_lab):
    lab, _ = page_lab
    heard_before = lab.wait_for("() => window.__demon_audio.latest.status.heard?.state ?? null", timeout=30,
                                describe=DESCRIBE_JS)
    shown_before = ui.slider_readout(lab, "velocity_scale")
    ui.drag_handle(lab, "velocity_scale", 0.25)
    shown = ui.slider_readout(lab, "velocity_scale")
    assert shown < shown_before - 0.2, (shown_before, shown)       # the handle moved left
    # a new state version (the kernel's write of the dragged value) reaches the ear, with sound
    heard = lab.wait_for("(v) => { const s = window.__demon_audio.latest.status; return s.heard.state > v ? s : null; }",
                         arg=heard_before, timeout=30, describe=DESCRIBE_JS)
    assert heard["rms"] > 0.005, heard
    assert not lab.eval("() => document.querySelector('.demon-controls').innerText.includes('⚠')")


def test_app_page_screenshot(page_lab, artifacts):
    lab, _ = page_lab
    path = artifacts / "app_page.png"
    lab.page.wait_for_timeout(500)
    lab.page.screenshot(path=str(path))
    assert path.stat().st_size > 20_000


# Reports the audio context's state from the page itself (console lines), so that the test reads it
# without evaluating anything in the page: Playwright's evaluations count as a user gesture.
CTX_PROBE_JS = """(() => {
  const Base = window.AudioContext;
  window.AudioContext = class extends Base {
    constructor(...args) {
      super(...args);
      setTimeout(() => console.log(`demon-test ctx after 3 s: ${this.state}`), 3000);
      this.addEventListener("statechange", () => console.log(`demon-test ctx: ${this.state}`));
    }
  };
})();"""


def test_app_page_without_autoplay_flag_starts_sound_on_a_click(app, browser):
    # Chromium's default autoplay policy: an AudioContext made before any user gesture is suspended
    plain = browser.browser_type.launch(executable_path=CHROMIUM, headless=True,
                                        args=[a for a in CHROMIUM_ARGS if not a.startswith("--autoplay-policy")])
    try:
        page = new_page(plain, width=1280, height=900)
        page.add_init_script(CTX_PROBE_JS)
        with page.expect_console_message(lambda m: m.text.startswith("demon-test ctx after"), timeout=180_000) as msg:
            page.goto(app.url)
        assert msg.value.text.endswith("suspended"), msg.value.text       # no gesture yet: no sound (precondition)
        page.mouse.click(640, 12)                                         # a click on the page (the title line)
        lab = Lab(app, page)
        status = lab.wait_for(PLAYING_JS, timeout=20, describe=DESCRIBE_JS)
        assert status["rms"] > 0.005
    finally:
        plain.close()


# Runs last: stops the app itself (the fixture's stop is then a no-op).
def test_app_page_stop_leaves_no_process_and_no_notebook(app):
    generated = list((app.cwd / "tmp").glob("demon-app-*/DEMON.ipynb"))
    assert len(generated) == 1, generated
    pids = [app.proc.pid, *descendants(app.proc.pid)]
    assert len(pids) >= 3, pids                   # the app, Voila, the page's kernel
    stop_group(app.proc)
    deadline = time.monotonic() + 10
    while (alive := [p for p in pids if os.path.exists(f"/proc/{p}") and _not_zombie(p)]) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert alive == [], alive
    assert not list((app.cwd / "tmp").glob("demon-app-*")), list((app.cwd / "tmp").iterdir())


def _not_zombie(pid: int) -> bool:
    try:
        return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
