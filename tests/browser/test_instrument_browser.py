"""The whole instrument in a real JupyterLab + Chromium: ``notebooks/01_play.ipynb``, run all,
then the mouse on a slider and on a curve, a blocking cell, and a screenshot.

One JupyterLab page for the whole file (module fixture ``play``); the tests run in file order
on the same live instrument.
"""

from __future__ import annotations

import time

import pytest

from demon_nb.bench import _instrument_page as ui
from instrument_checks import check_curve_stroke, check_kernel_streaming, check_slider_heard, check_worklet_started, playing

pytestmark = pytest.mark.browser

STEP_CONTROL = "velocity_scale"       # propagation class "step" (heard version key "state")


@pytest.fixture(scope="module")
def play(lab_server, browser, artifacts):
    with playing(lab_server, browser, artifacts) as result:
        yield result


def test_worklet_receives_patches_and_plays_sound(play):
    lab, first = play
    check_worklet_started(lab)
    received = lab.eval("() => window.__demon_audio.latest.patchesReceived")   # before the kernel is asked
    assert first["filled"] == 1 and first["patches"] >= 1, first
    later = lab.wait_for("""(r) => { const s = window.__demon_audio.latest.status;
        return s.rendered > r + 24000 ? s : null; }""", arg=first["rendered"], timeout=20)
    assert later["rms"] > 0.005 and later["peak"] > 0.02, later      # music, not silence
    assert later["playhead"] != first["playhead"]
    check_kernel_streaming(lab, received)
    # the page asked for the lowest output latency and the kernel knows what it got
    page_ms = lab.eval("() => { const c = window.__demon_audio.latest.ctx; return 1000 * (c.baseLatency + c.outputLatency); }")
    kernel = lab.kernel_json("{'hint': inst.audio.latency_hint, 'ms': inst.metrics()['output_latency_ms']}")
    assert kernel["hint"] == "lowest" and kernel["ms"] == pytest.approx(page_ms, abs=0.01), (kernel, page_ms)


def test_slider_dragged_with_mouse_reaches_kernel_and_is_heard(play):
    lab, _ = play
    check_slider_heard(lab, STEP_CONTROL)


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
