"""The instrument (``notebooks/01_play.ipynb``) in a real page: mouse gestures and probes.

Everything here acts like a user: Playwright's mouse on the rendered slider
track or handle (noUiSlider, ipywidgets 8) and on a bqplot figure (HandDraw).
Read-outs come from ``window.__demon_audio`` (the audio widget's state) and from
a small recorder installed in the page (:data:`RECORDER_JS`) that timestamps
input events and every advance of a heard control version.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ._browser import Lab

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "01_play.ipynb"

STATUS_JS = """() => { const a = window.__demon_audio?.latest;
    return a?.status ? {...a.status, reports_sent: a.reportsSent || 0} : null; }"""
DESCRIBE_JS = """() => { const a = window.__demon_audio; const s = a?.latest;
    const cells = window.jupyterapp.shell.currentWidget.content.widgets
        .filter(c => c.model.type === 'code').map(c => c.model.outputs.toJSON());
    return {models: a && Object.keys(a.models).length, ready: s?.ready, error: s?.error,
            ctx: s?.ctx.state, received: s?.patchesReceived, status: s?.status, cells}; }"""
# playing, filled, audible and heard versions reported
PLAYING_JS = """() => { const s = window.__demon_audio?.latest?.status;
    return s && s.playing && s.filled > 0.99 && s.rms > 0.005 && s.heard && 'state' in s.heard ? s : null; }"""

# Installs window.__ear = {inputs, heard}: inputs = pointer/key events on the named
# controls with their epoch time (performance.timeOrigin + event.timeStamp, the
# clock heard_at uses); heard = every advance of a heard version with the epoch
# time its first sample reached the output (from the audio widget's reports: ``heard_log``
# has each advance, also a version overtaken before the next report).
RECORDER_JS = """(names) => {
  const state = window.__demon_audio.latest;
  const rec = {inputs: [], heard: [], reports: 0};
  window.__ear = rec;
  const last = {};
  state.listeners.add((s) => {
    const st = s.status;
    if (!st) return;
    rec.reports++;
    // every advance (a version overtaken within one report included), then the newest per key
    const advances = [...(st.heard_log || []), ...Object.entries(st.heard || {}).map(([k, v]) => [k, v, st.heard_at[k]])];
    for (const [key, v, at] of advances) {
      if (!(key in last) || v > last[key]) {
        rec.heard.push({key, version: v, at, seen: Date.now() / 1000});
        last[key] = v;
      }
    }
  });
  for (const name of names) {
    const el = document.querySelector(`.demon-control-${name}`);
    if (!el) throw new Error(`no control .demon-control-${name} on the page`);
    const log = (e) => rec.inputs.push({name, type: e.type, t: (performance.timeOrigin + e.timeStamp) / 1000});
    el.addEventListener('pointerdown', log, {capture: true});
    el.addEventListener('keydown', log, {capture: true});
  }
  return true;
}"""
# A fake Web MIDI device (injected before the page loads): window.__fakeMidi.send(bytes) emits a
# message from input "Fake MIDI", as a controller would.
FAKE_MIDI_JS = """(() => {
  const input = { name: "Fake MIDI", onmidimessage: null };
  window.__fakeMidi = { send: (bytes) => { if (input.onmidimessage) input.onmidimessage({ data: new Uint8Array(bytes) }); } };
  Object.defineProperty(navigator, "requestMIDIAccess", { configurable: true,
    value: async () => ({ inputs: new Map([["in-1", input]]), outputs: new Map(), onstatechange: null }) });
})();"""
MIDI_STATUS_JS = "() => document.querySelector('.demon-midi-status')?.textContent || ''"
# One control change from the fake device, logged as an input of `name` at the time it is emitted.
SEND_CC_JS = """([name, cc, value]) => {
  window.__ear.inputs.push({name, type: 'midi', t: (performance.timeOrigin + performance.now()) / 1000});
  window.__fakeMidi.send([0xB0, cc, value]);
  return true;
}"""
HEARD_MAX_JS = """(key) => { const h = (window.__ear?.heard ?? []).filter(r => r.key === key);
    return h.length ? h[h.length - 1].version : -1; }"""


@dataclass(frozen=True)
class Box:
    x: float
    y: float
    width: float
    height: float

    def at(self, fx: float, fy: float = 0.5) -> tuple[float, float]:
        """Viewport point at fractions ``(fx, fy)`` of the box."""
        return self.x + fx * self.width, self.y + fy * self.height


def box(lab: Lab, selector: str) -> Box:
    loc = lab.page.locator(selector).first
    loc.scroll_into_view_if_needed()
    b = loc.bounding_box()
    if b is None:
        raise AssertionError(f"{selector} is not visible")
    return Box(b["x"], b["y"], b["width"], b["height"])


def open_instrument(lab: Lab, notebook: Path = NOTEBOOK, run_timeout: float = 300, play_timeout: float = 120) -> dict:
    """Copy ``notebook`` into the server, open it, run all cells, wait until it plays; returns the status."""
    lab.copy_notebook(notebook)
    lab.open(Path(notebook).name)
    lab.run_all(timeout=run_timeout)
    return lab.wait_for(PLAYING_JS, timeout=play_timeout, describe=DESCRIBE_JS)


def status(lab: Lab) -> dict:
    return lab.eval(STATUS_JS)


def slider_track(lab: Lab, name: str) -> Box:
    return box(lab, f".demon-control-{name} .noUi-base")


def click_slider(lab: Lab, name: str, fraction: float) -> None:
    """Click the slider track of control ``name`` at ``fraction`` of its width (noUiSlider 'tap')."""
    x, y = slider_track(lab, name).at(fraction)
    lab.page.mouse.click(x, y)


def drag_handle(lab: Lab, name: str, to_fraction: float, steps: int = 8) -> None:
    """Press the slider handle of ``name``, drag it to ``to_fraction`` of the track, release."""
    handle = box(lab, f".demon-control-{name} .noUi-handle")
    track = slider_track(lab, name)
    lab.page.mouse.move(*handle.at(0.5))
    lab.page.mouse.down()
    lab.page.mouse.move(*track.at(to_fraction), steps=steps)
    lab.page.mouse.up()


def slider_readout(lab: Lab, name: str) -> float:
    return float(lab.page.locator(f".demon-control-{name} .widget-readout").first.text_content().strip())


def visible_curve(lab: Lab) -> str:
    """The control name of the curve editor shown on the page (class ``demon-curve-NAME``)."""
    return lab.eval("""() => { for (const f of document.querySelectorAll('.demon-curves .bqplot.figure')) {
        if (f.offsetWidth > 0 && f.offsetHeight > 0) {
            const c = [...f.classList].find(c => c.startsWith('demon-curve-'));
            if (c) return c.slice('demon-curve-'.length); } } return null; }""")


def draw_stroke(lab: Lab, name: str, x0: float, x1: float, level: float, steps: int = 25) -> Box:
    """Draw on curve ``name`` with the mouse: down at fraction ``x0`` of the plot area, move to
    ``x1`` at height ``level`` (0 = bottom, 1 = top), up. Returns the plot area's box."""
    area = box(lab, f".demon-curve-{name} .plotarea_background")
    y = 1.0 - level
    lab.page.mouse.move(*area.at(x0, y))
    lab.page.mouse.down()
    lab.page.mouse.move(*area.at(x1, y), steps=steps)
    lab.page.mouse.up()
    return area


def install_recorder(lab: Lab, names: list[str]) -> None:
    lab.eval(RECORDER_JS, names)


def heard_max(lab: Lab, key: str) -> int:
    return int(lab.eval(HEARD_MAX_JS, key))


def type_text(lab: Lab, name: str, text: str) -> None:
    """Click into the text box of control ``name``, replace its text by typing ``text``, press Enter."""
    field = lab.page.locator(f".demon-control-{name} input").first
    field.scroll_into_view_if_needed()
    field.click()
    field.press("Control+a")
    field.type(text)
    field.press("Enter")
