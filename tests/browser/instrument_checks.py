"""Checks shared by the browser tests of the instrument in JupyterLab, Notebook 7 and the app page."""

from __future__ import annotations

import contextlib
import time

import pytest

from demon_nb.bench import _instrument_page as ui
from demon_nb.bench._browser import Lab, new_page


@contextlib.contextmanager
def playing(server, browser, artifacts):
    """``(lab, first status)``: 01_play opened on ``server`` (JupyterLab or Notebook 7), run, playing."""
    page = new_page(browser, width=1280, height=1700)
    lab = Lab(server, page, artifacts=artifacts)
    try:
        yield lab, ui.open_instrument(lab)
    finally:
        page.context.close()
        server.shutdown_sessions()


def check_worklet_started(lab) -> None:
    """The page's audio widget is ready, running, and has received and acknowledged patches."""
    state = lab.eval("""() => { const s = window.__demon_audio.latest;
        return {ready: s.ready, error: s.error, ctx: s.ctx.state, received: s.patchesReceived, applied: s.applied}; }""")
    assert state["ready"] and state["error"] == "" and state["ctx"] == "running", state
    assert state["received"] >= 1 and state["applied"] >= 1, state


def check_sustained_audio(lab, seconds: float = 3.0) -> tuple[dict, dict]:
    """``seconds`` of playback sampled every 100 ms: rendering advances, never quiet, no new silence
    or skips; returns the first and last status."""
    sr = lab.eval("() => window.__demon_audio.latest.sampleRate")
    seen = [ui.status(lab)]
    deadline = time.monotonic() + 30
    while seen[-1]["rendered"] - seen[0]["rendered"] < seconds * sr and time.monotonic() < deadline:
        lab.page.wait_for_timeout(100)
        seen.append(ui.status(lab))
    before, after = seen[0], seen[-1]
    assert after["rendered"] - before["rendered"] >= seconds * sr, (before, after)
    assert min(s["rms"] for s in seen) > 0.005, [round(s["rms"], 4) for s in seen]
    assert max(s["peak"] for s in seen) > 0.02, [round(s["peak"], 4) for s in seen]
    assert after["silent"] == before["silent"] and after["skips"] == before["skips"], (before, after)
    return before, after


def check_curve_stroke(lab) -> None:
    """Draw a stroke across the middle of the visible curve: the kernel's curve follows it there and
    keeps its old values outside it."""
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
    # frames outside the stroke keep the value from before
    old = before["curve"] if isinstance(before["curve"], list) else [before["curve"]] * frames
    assert curve[:int(0.2 * frames)] == pytest.approx(old[:int(0.2 * frames)], abs=1e-6)
    assert curve[int(0.8 * frames):] == pytest.approx(old[int(0.8 * frames):], abs=1e-6)


def check_kernel_streaming(lab, received: int) -> None:
    """The kernel's side: audio ready, runner alive, no audio error, and at least the ``received``
    patches the page counted were sent."""
    kernel = lab.kernel_json("{'ready': inst.audio.ready, 'sent': inst.patches_sent, 'completions': inst.runner.completions,"
                             " 'alive': inst.runner.alive, 'model': inst.model.name, 'error': inst.audio.error}")
    assert kernel["ready"] and kernel["alive"] and kernel["error"] == "", kernel
    assert kernel["sent"] >= received >= 1 and kernel["completions"] >= 1, (kernel, received)


def check_slider_heard(lab, control: str) -> dict:
    """Drag ``control``'s handle to 85 % with the mouse: the readout moves right, the kernel holds the
    value shown (polled for 15 s: the widget manager throttles a drag's updates, and the last can
    trail the next cell's request) under a new state version, and the page hears that version.
    Returns the page's status at the moment it did."""
    before = lab.kernel_json(f"{{'value': inst.get('{control}'), 'version': inst.runner.ring.state.version}}")
    heard_before = ui.status(lab)["heard"]["state"]
    shown_before = ui.slider_readout(lab, control)
    ui.drag_handle(lab, control, 0.85)
    shown = ui.slider_readout(lab, control)
    assert shown != shown_before and shown > 1.4, (shown_before, shown)     # the handle moved right
    deadline = time.monotonic() + 15
    while True:
        after = lab.kernel_json(f"{{'value': inst.get('{control}'), 'version': inst.runner.ring.state.version,"
                                f" 'errors': inst.panel.errors}}")
        if abs(after["value"] - shown) <= 0.006 or time.monotonic() > deadline:
            break
        lab.page.wait_for_timeout(300)
    assert after["errors"] == {}, after
    assert after["value"] == pytest.approx(shown, abs=0.006), (shown, after)   # the readout shows 2 decimals
    assert after["value"] != pytest.approx(before["value"]), (before, after)
    assert after["version"] > before["version"] and after["version"] > heard_before, (before, after, heard_before)
    heard = lab.wait_for("(v) => { const s = window.__demon_audio.latest.status; return s.heard.state >= v ? s : null; }",
                         arg=after["version"], timeout=30, describe=ui.DESCRIBE_JS)
    assert heard["heard"]["state"] > heard_before
    return heard
