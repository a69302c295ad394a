"""The whole instrument in a real JupyterLab + Chromium: ``notebooks/01_play.ipynb``, run all,
then the mouse on a slider and on a curve, a blocking cell, and a screenshot.

One JupyterLab page for the whole file (module fixture ``play``); the tests run in file order
on the same live instrument.
"""

from __future__ import annotations

import time

import pytest

from demon_nb.bench import _instrument_page as ui
from instrument_checks import check_curve_stroke, check_worklet_started, playing

pytestmark = pytest.mark.browser

STEP_CONTROL = "velocity_scale"       # propagation class "step" (heard version key "state")


@pytest.fixture(scope="module")
def play(lab_server, browser, artifacts):
    with playing(lab_server, browser, artifacts) as result:
        yield result


def test_worklet_receives_patches_and_plays_sound(play):
    lab, first = play
    check_worklet_started(lab)
    state = lab.eval("() => ({received: window.__demon_audio.latest.patchesReceived})")
    assert first["filled"] == 1 and first["patches"] >= 1, first
    later = lab.wait_for("""(r) => { const s = window.__demon_audio.latest.status;
        return s.rendered > r + 24000 ? s : null; }""", arg=first["rendered"], timeout=20)
    assert later["rms"] > 0.005 and later["peak"] > 0.02, later      # music, not silence
    assert later["playhead"] != first["playhead"]
    kernel = lab.kernel_json("{'ready': inst.audio.ready, 'sent': inst.patches_sent, 'completions': inst.runner.completions,"
                             " 'alive': inst.runner.alive, 'model': inst.model.name, 'error': inst.audio.error}")
    assert kernel["ready"] and kernel["alive"] and kernel["error"] == "", kernel
    assert kernel["sent"] >= state["received"] >= 1 and kernel["completions"] >= 1, (kernel, state)


def test_slider_dragged_with_mouse_reaches_kernel_and_is_heard(play):
    lab, _ = play
    before = lab.kernel_json(f"{{'value': inst.get('{STEP_CONTROL}'), 'version': inst.runner.ring.state.version}}")
    heard_before = ui.status(lab)["heard"]["state"]
    shown_before = ui.slider_readout(lab, STEP_CONTROL)
    ui.drag_handle(lab, STEP_CONTROL, 0.85)
    shown = ui.slider_readout(lab, STEP_CONTROL)
    assert shown != shown_before and shown > 1.4, (shown_before, shown)     # the handle moved right
    after = lab.kernel_json(f"{{'value': inst.get('{STEP_CONTROL}'), 'version': inst.runner.ring.state.version,"
                            f" 'errors': inst.panel.errors}}")
    assert after["errors"] == {}, after
    assert after["value"] == pytest.approx(shown, abs=0.006), (shown, after)   # the readout shows 2 decimals
    assert after["value"] != pytest.approx(before["value"]), (before, after)
    assert after["version"] > before["version"] and after["version"] > heard_before, (before, after, heard_before)
    # the heard version reaches the kernel's version of that write
    heard = lab.wait_for("(v) => { const s = window.__demon_audio.latest.status; return s.heard.state >= v ? s : null; }",
                         arg=after["version"], timeout=30, describe=ui.DESCRIBE_JS)
    assert heard["heard"]["state"] > heard_before


def test_curve_stroke_drawn_with_mouse_reaches_kernel(play):
    lab, _ = play
    check_curve_stroke(lab)


def test_blocking_cell_during_playback_causes_no_silence(play):
    lab, _ = play
    before = ui.status(lab)
    lab.run_new_cell("import time; time.sleep(3)", wait=False)
    seen, busy_seen = [], False
    deadline = time.monotonic() + 30
    lab.page.wait_for_timeout(200)
    while time.monotonic() < deadline:
        seen.append(ui.status(lab))
        kernel = lab.eval("() => window.jupyterapp.shell.currentWidget.sessionContext.session.kernel.status")
        busy_seen |= kernel == "busy"
        if busy_seen and kernel == "idle" and len(seen) > 25:
            break
        lab.page.wait_for_timeout(100)
    after = ui.status(lab)
    sr = lab.eval("() => window.__demon_audio.latest.sampleRate")
    assert busy_seen, "the sleeping cell never ran"
    assert after["rendered"] - before["rendered"] >= 2.5 * sr, (before, after)
    assert after["silent"] == before["silent"], (before["silent"], after["silent"])
    assert after["skips"] == before["skips"] and after["gaps"] == before["gaps"], (before, after)
    assert min(s["rms"] for s in seen) > 0.001, [round(s["rms"], 4) for s in seen]
    # the tick thread kept streaming new patches while the kernel's main thread slept
    assert after["patches"] > before["patches"], (before["patches"], after["patches"])


def test_screenshot(play, artifacts):
    lab, _ = play
    path = artifacts / "instrument.png"
    lab.page.wait_for_timeout(500)                  # let the ~10 Hz views refresh
    lab.page.locator(".demon-instrument").first.screenshot(path=str(path))
    assert path.stat().st_size > 20_000


FLOAT_SLIDERS = ("prompt_blend", "denoise", "source_blend", "velocity_scale", "guidance_scale", "shift", "gain")


# Runs last: it moves every slider. (An `await` in a cell once held back widget messages;
# 01_play now waits with inst.wait_completion().)
def test_every_slider_clicked_with_the_mouse_reaches_the_kernel(play):
    lab, _ = play
    shown = {}
    for i, name in enumerate(FLOAT_SLIDERS):
        ui.click_slider(lab, name, 0.35 + 0.05 * i)
        shown[name] = ui.slider_readout(lab, name)
    lab.page.wait_for_timeout(500)
    kernel = lab.kernel_json("{n: inst.panel.widgets[n].value for n in %r}" % (FLOAT_SLIDERS,))
    stale = {n: (shown[n], kernel[n]) for n in FLOAT_SLIDERS if abs(shown[n] - kernel[n]) > 0.006}
    assert not stale, f"page value vs kernel value: {stale}"
