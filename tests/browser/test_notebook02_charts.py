"""``notebooks/02_how_sampling_works.ipynb`` in a real JupyterLab + Chromium: run all, then no cell
shows an error; every bqplot figure (the timesteps line chart, the x_t and x0_hat heatmaps) has
drawn marks, a title and labelled axes, no legend covers data and no axis text overlaps another;
moving the ``step`` slider with the mouse and with the keyboard redraws both heatmaps (and the x_t
title shows the new t); every audio player loads; the exercise check cells open collapsed.

The helpers come from ``test_notebook03_charts.py``. Screenshots of the figures go to
tests/artifacts/notebook02_fig<i>.png, the slider after each move to notebook02_slider_<how>.png.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from test_notebook03_charts import check_cells, check_figure, error_outputs, run_notebook

pytestmark = pytest.mark.browser

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "02_how_sampling_works.ipynb"
RUN_ALL_TIMEOUT_S = 600          # about 1 min alone; the CPUs are shared with the other tests
FIGURES = 3                      # the timesteps chart, the x_t and the x0_hat heatmaps
AUDIO_PLAYERS = 30               # shift 3, per step 5 x 2, guidance 6 + 1 (the interval), SDE/ODE 2, velocity 3, source 5

# The heatmap figures (those with an <image class="heatmap">), in page order: the title and a hash
# of the drawn image (its data URL), so a redraw with other data shows as another hash.
HEATMAPS_JS = """() => [...document.querySelectorAll('.bqplot.figure')]
  .filter(f => f.querySelector('image.heatmap'))
  .map(f => {
    const href = f.querySelector('image.heatmap').getAttribute('href') || '';
    let h = 5381;
    for (let k = 0; k < href.length; k++) h = ((h * 33) ^ href.charCodeAt(k)) >>> 0;
    return {title: f.querySelector('text.mainheading')?.textContent ?? '', image: href.length + ':' + h};
  })"""


@pytest.fixture(scope="module")
def notebook02(lab_server, browser, artifacts):
    yield from run_notebook(lab_server, browser, artifacts, NOTEBOOK, RUN_ALL_TIMEOUT_S)


def step_times(lab) -> dict[int, float]:
    """t of every step, as the callback cell printed it ("step i: t = 1.000 -> 0.955 ...")."""
    text = "\n".join(lab.output_text(i) for i in lab.eval("""() => window.jupyterapp.shell.currentWidget
        .content.widgets.flatMap((c, i) => c.model.type === 'code' ? [i] : [])"""))
    times = {int(i): float(t) for i, t in re.findall(r"step (\d+): t = ([\d.]+) ->", text)}
    assert len(times) >= 2, text[-2000:]
    return times


def test_notebook02_runs_without_errors(notebook02):
    assert error_outputs(notebook02) == []


def test_notebook02_every_figure_draws_its_marks(notebook02, artifacts):
    lab = notebook02
    figures = lab.page.locator(".bqplot.figure")
    lab.wait_for("(n) => document.querySelectorAll('.bqplot.figure').length >= n", arg=FIGURES, timeout=60)
    assert figures.count() == FIGURES
    for i in range(FIGURES):
        check_figure(lab, figures.nth(i), i, artifacts / f"notebook02_fig{i}.png")
    assert len(lab.eval(HEATMAPS_JS)) == 2


def test_notebook02_step_slider_redraws_the_heatmaps(notebook02, artifacts):
    lab, page = notebook02, notebook02.page
    times = step_times(lab)
    slider = page.locator(".widget-hslider").filter(
        has=page.locator(".widget-label", has_text=re.compile(r"^step$")))
    assert slider.count() == 1
    slider.scroll_into_view_if_needed()
    handle, readout = slider.locator(".noUi-handle"), slider.locator(".widget-readout")
    lab.wait_for(f"() => ({HEATMAPS_JS})().length === 2 && ({HEATMAPS_JS})().every(h => h.image.length > 4)",
                 describe=f"() => ({HEATMAPS_JS})()")

    def moved_to(before: list[dict], how: str) -> int:
        """Wait until the kernel redrew both heatmaps for the step the readout shows; return it."""
        lab.wait_for(f"""(before) => {{ const now = ({HEATMAPS_JS})();
            return now.length === 2 && now.every((h, k) => h.image !== before[k].image); }}""",
                     arg=before, timeout=60, describe=f"() => ({HEATMAPS_JS})()")
        step = int(readout.inner_text().strip())
        expected = f"x_t, t = {times[step]:.2f}"
        lab.wait_for(f"(t) => ({HEATMAPS_JS})()[0].title === t", arg=expected, timeout=60,
                     describe=f"() => ({HEATMAPS_JS})()")
        slider.locator("xpath=ancestor::div[contains(@class, 'jp-OutputArea-output')][1]").screenshot(
            path=str(artifacts / f"notebook02_slider_{how}.png"))
        return step

    start = lab.eval(HEATMAPS_JS)
    assert readout.inner_text().strip() == "0"
    assert start[0]["title"] == f"x_t, t = {times[0]:.2f}", start

    # mouse: drag the handle to about 60 % of the track
    track = slider.locator(".noUi-target").bounding_box()
    box = handle.bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.mouse.down()
    page.mouse.move(track["x"] + 0.6 * track["width"], box["y"] + box["height"] / 2, steps=8)
    page.mouse.up()
    by_mouse = moved_to(start, "mouse")
    assert by_mouse > 0, by_mouse
    after_mouse = lab.eval(HEATMAPS_JS)

    # keyboard: the focused handle, one step left
    handle.focus()
    page.keyboard.press("ArrowLeft")
    by_key = moved_to(after_mouse, "keyboard")
    assert by_key == by_mouse - 1, (by_mouse, by_key)


def test_notebook02_audio_players_load(notebook02):
    lab = notebook02
    clips = lab.wait_for("""(n) => { const a = [...document.querySelectorAll('.jp-OutputArea audio')];
        return a.length >= n && a.every(e => e.readyState >= 1)
            ? a.map(e => ({duration: e.duration, src: (e.currentSrc || '').slice(0, 15)})) : null; }""",
                         arg=AUDIO_PLAYERS, timeout=60,
                         describe="""() => [...document.querySelectorAll('.jp-OutputArea audio')]
                             .map(e => [e.readyState, e.duration])""")
    assert len(clips) == AUDIO_PLAYERS, clips
    assert all(c["src"].startswith("data:audio/wav") for c in clips), clips
    assert all(1.0 < c["duration"] <= 10.5 for c in clips), clips   # 2 s, 3 s, one 10 s clip


def test_notebook02_check_cells_open_collapsed(notebook02):
    check_cells(notebook02, expected=3)
