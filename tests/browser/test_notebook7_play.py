"""``notebooks/01_play.ipynb`` in Jupyter Notebook 7 (not JupyterLab) + headless Chromium:
run all cells, then sustained sound, a slider moved with the mouse, a curve drawn with the mouse.

Notebook 7 is built from JupyterLab's components: started with
``--JupyterNotebookApp.expose_app_in_browser=True`` its application is ``window.jupyterapp``,
``shell.currentWidget`` is the notebook panel and the ``notebook:*`` commands exist, so the
JupyterLab driver (:class:`demon_nb.bench._browser.Lab`) and the instrument page helpers
(``_instrument_page``) work unchanged on a :class:`NotebookServer` (notebooks open at
``/notebooks/PATH``). One server and one page for the module; the tests run in file order on
the same live instrument.
"""

from __future__ import annotations

import time

import pytest

from demon_nb.bench import _instrument_page as ui
from demon_nb.bench._browser import Lab, new_page, notebook_server

pytestmark = pytest.mark.browser

STEP_CONTROL = "velocity_scale"       # propagation class "step" (heard version key "state")


@pytest.fixture(scope="module")
def notebook7(tmp_path_factory):
    pytest.importorskip("notebook", reason="Jupyter Notebook 7 is not installed (pip install 'notebook>=7.2')")
    with notebook_server(tmp_path_factory.mktemp("notebook7")) as server:
        yield server


@pytest.fixture(scope="module")
def play(notebook7, browser, artifacts):
    page = new_page(browser, width=1280, height=1700)
    lab = Lab(notebook7, page, artifacts=artifacts)
    try:
        first = ui.open_instrument(lab)
        yield lab, first
    finally:
        page.context.close()
        notebook7.shutdown_sessions()


def test_notebook7_is_notebook7_not_lab(play):
    lab, _ = play
    info = lab.eval("""() => ({name: window.jupyterapp.name, path: location.pathname,
        lab: !!document.querySelector('#jp-main-dock-panel, .jp-LabShell')})""")
    assert info["path"].startswith("/notebooks/") and info["name"] == "Jupyter Notebook", info
    assert not info["lab"], info


def test_notebook7_sustained_audio(play):
    lab, first = play
    state = lab.eval("""() => { const s = window.__demon_audio.latest;
        return {ready: s.ready, error: s.error, ctx: s.ctx.state, received: s.patchesReceived, acks: s.acks}; }""")
    assert state["ready"] and state["error"] == "" and state["ctx"] == "running", state
    assert state["received"] >= 1 and state["acks"] >= 1, state
    assert first["filled"] == 1 and first["patches"] >= 1, first
    sr = lab.eval("() => window.__demon_audio.latest.sampleRate")
    # three seconds of playback, sampled every 100 ms: rendering advances, never quiet, no new silence
    seen = [ui.status(lab)]
    deadline = time.monotonic() + 30
    while seen[-1]["rendered"] - seen[0]["rendered"] < 3 * sr and time.monotonic() < deadline:
        lab.page.wait_for_timeout(100)
        seen.append(ui.status(lab))
    before, after = seen[0], seen[-1]
    assert after["rendered"] - before["rendered"] >= 3 * sr, (before, after)
    assert after["playhead"] != before["playhead"]
    assert min(s["rms"] for s in seen) > 0.005, [round(s["rms"], 4) for s in seen]
    assert max(s["peak"] for s in seen) > 0.02, [round(s["peak"], 4) for s in seen]
    assert after["silent"] == before["silent"] and after["skips"] == before["skips"], (before, after)
    assert after["patches"] > before["patches"], (before["patches"], after["patches"])   # still streaming
    kernel = lab.kernel_json("{'ready': inst.audio.ready, 'sent': inst.patches_sent, 'completions': inst.runner.completions,"
                             " 'alive': inst.runner.alive, 'model': inst.model.name, 'error': inst.audio.error}")
    assert kernel["ready"] and kernel["alive"] and kernel["error"] == "", kernel
    assert kernel["sent"] >= state["received"] >= 1 and kernel["completions"] >= 1, (kernel, state)


def test_notebook7_slider_moved_with_mouse_reaches_kernel_and_is_heard(play):
    lab, _ = play
    before = lab.kernel_json(f"{{'value': inst.get('{STEP_CONTROL}'), 'version': inst.runner.ring.state.version}}")
    heard_before = ui.status(lab)["heard"]["state"]
    shown_before = ui.slider_readout(lab, STEP_CONTROL)
    ui.drag_handle(lab, STEP_CONTROL, 0.85)
    shown = ui.slider_readout(lab, STEP_CONTROL)
    assert shown != shown_before and shown > 1.4, (shown_before, shown)     # the handle moved right
    # the widget manager throttles a drag's updates (the last one can trail the next cell's request):
    # poll the kernel until it holds the value shown, for at most 15 s
    deadline = time.monotonic() + 15
    while True:
        after = lab.kernel_json(f"{{'value': inst.get('{STEP_CONTROL}'), 'version': inst.runner.ring.state.version,"
                                f" 'errors': inst.panel.errors}}")
        if abs(after["value"] - shown) <= 0.006 or time.monotonic() > deadline:
            break
        lab.page.wait_for_timeout(300)
    assert after["errors"] == {}, after
    assert after["value"] == pytest.approx(shown, abs=0.006), (shown, after)   # the readout shows 2 decimals
    assert after["value"] != pytest.approx(before["value"]), (before, after)
    assert after["version"] > before["version"] and after["version"] > heard_before, (before, after, heard_before)
    # the browser reports hearing the kernel's version of that write, with sound
    heard = lab.wait_for("(v) => { const s = window.__demon_audio.latest.status; return s.heard.state >= v ? s : null; }",
                         arg=after["version"], timeout=30, describe=ui.DESCRIBE_JS)
    assert heard["heard"]["state"] > heard_before
    assert heard["rms"] > 0.005, heard


def test_notebook7_curve_stroke_drawn_with_mouse_reaches_kernel(play):
    lab, _ = play
    name = ui.visible_curve(lab)
    assert name, "no curve editor is shown"
    expr = (f"{{'curve': __import__('demon_nb.live.controls', fromlist=['x']).as_float_list(inst.get('{name}')),"
            f" 'lo': inst.curves['{name}'].spec.lo, 'hi': inst.curves['{name}'].spec.hi,"
            f" 'frames': inst.model.frames, 'errors': inst.curves['{name}'].message.value}}")
    before = lab.kernel_json(expr)
    lo, hi, frames = before["lo"], before["hi"], before["frames"]
    level = 0.2                                       # a fifth of the way up the plot
    ui.draw_stroke(lab, name, 0.3, 0.7, level)
    target = lo + level * (hi - lo)
    deadline = time.monotonic() + 15
    while True:
        after = lab.kernel_json(expr)
        curve = after["curve"]
        if isinstance(curve, list) or time.monotonic() > deadline:
            break
        lab.page.wait_for_timeout(300)
    assert after["errors"] == "", after["errors"]
    assert isinstance(curve, list) and len(curve) == frames, (before["curve"], curve)
    middle = curve[int(0.4 * frames):int(0.6 * frames)]
    assert all(abs(v - target) < 0.08 * (hi - lo) for v in middle), (target, middle)
    old = before["curve"] if isinstance(before["curve"], list) else [before["curve"]] * frames
    assert curve[:int(0.2 * frames)] == pytest.approx(old[:int(0.2 * frames)], abs=1e-6)
    assert curve[int(0.8 * frames):] == pytest.approx(old[int(0.8 * frames):], abs=1e-6)
    assert ui.status(lab)["rms"] > 0.005          # still playing after the stroke


def test_notebook7_screenshot(play, artifacts):
    lab, _ = play
    path = artifacts / "instrument_notebook7.png"
    lab.page.wait_for_timeout(500)
    lab.page.locator(".demon-instrument").first.screenshot(path=str(path))
    assert path.stat().st_size > 20_000
