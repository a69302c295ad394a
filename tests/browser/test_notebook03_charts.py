"""``notebooks/03_propagation_classes.ipynb`` in a real JupyterLab + Chromium: run all, then every
bqplot figure has drawn marks, a title and labelled axes, no legend covers data, and every
audio clip loads and lasts at most 2 s.

bqplot figures draw when they are on screen (JupyterLab lays out off-screen cells lazily), so
each figure is scrolled into view before it is read. Screenshots of the figures go to
tests/artifacts/notebook03_fig<i>.png.
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "03_propagation_classes.ipynb"
RUN_ALL_TIMEOUT_S = 400          # about 20 s alone; the CPUs are shared with the other tests

# Per figure: the marks (children of the figure's mark layer, the legend excluded), the shapes each
# mark drew (path/rect/circle with a non-empty box), the title, the axis labels, and how many
# sampled points of the drawn shapes fall inside the legend box (0: the legend covers no data).
FIGURE_JS = """(i) => {
  const fig = document.querySelectorAll('.bqplot.figure')[i];
  const svg = fig.querySelector('svg.svg-figure');
  const layer = svg.querySelector(':scope > g > g');
  const legend = layer.querySelector(':scope > g.g_legend rect');
  const box = legend ? legend.getBoundingClientRect() : null;
  const inside = (x, y) => box && x > box.left + 1 && x < box.right - 1 && y > box.top + 1 && y < box.bottom - 1;
  const covered = (el) => {
    if (!box) return 0;
    if (el.tagName === 'path' && el.getTotalLength && (el.classList.contains('curve') || el.classList.contains('line'))) {
      const length = el.getTotalLength(), m = el.getScreenCTM();
      let n = 0;
      for (let k = 0; k <= 200 && length > 0; k++) {
        const p = el.getPointAtLength(length * k / 200).matrixTransform(m);
        if (inside(p.x, p.y)) n++;
      }
      return n;
    }
    const r = el.getBoundingClientRect();
    return inside((r.left + r.right) / 2, (r.top + r.bottom) / 2) ? 1 : 0;
  };
  const marks = [...layer.children].filter(c => !c.classList.contains('g_legend'));
  const drawn = marks.map(m => [...m.querySelectorAll('path, rect, circle')].filter(e => {
    const b = e.getBBox(); return b.width > 0 || b.height > 0; }));
  return {
    marks: marks.length,
    drawn: drawn.map(d => d.length),
    covered: drawn.flat().reduce((n, e) => n + covered(e), 0),
    title: svg.querySelector('text.mainheading')?.textContent ?? '',
    labels: [...fig.querySelectorAll('text.axislabel')].map(t => t.textContent.trim()),
  };
}"""


@pytest.fixture(scope="module")
def notebook03(lab_server, browser, artifacts):
    from demon_nb.bench._browser import Lab, new_page

    page = new_page(browser, width=1280, height=1000)
    lab = Lab(lab_server, page, artifacts=artifacts)
    try:
        lab.copy_notebook(NOTEBOOK)
        lab.open(NOTEBOOK.name)
        lab.run_all(timeout=RUN_ALL_TIMEOUT_S)
        yield lab
    finally:
        page.context.close()
        lab_server.shutdown_sessions()


def test_notebook03_runs_without_errors(notebook03):
    errors = notebook03.eval("""() => window.jupyterapp.shell.currentWidget.content.widgets
        .filter(c => c.model.type === 'code')
        .flatMap(c => c.model.outputs.toJSON().filter(o => o.output_type === 'error')
        .map(o => o.ename + ': ' + o.evalue))""")
    assert errors == []


def test_notebook03_every_figure_draws_its_marks(notebook03, artifacts):
    lab = notebook03
    expected = lab.eval("""() => window.jupyterapp.shell.currentWidget.content.widgets
        .flatMap(c => c.model.type === 'code' ? c.model.outputs.toJSON() : [])
        .filter(o => o.data && o.data['application/vnd.jupyter.widget-view+json']).length""")
    assert expected >= 4, f"the notebook shows {expected} figures"
    figures = lab.page.locator(".bqplot.figure")
    lab.wait_for("(n) => document.querySelectorAll('.bqplot.figure').length >= n", arg=expected, timeout=60)
    assert figures.count() == expected
    for i in range(expected):
        figures.nth(i).scroll_into_view_if_needed()
        # drawn: every mark of the figure has at least one shape with a non-empty box
        lab.wait_for(f"(i) => {{ const f = ({FIGURE_JS})(i); return f.marks > 0 && f.drawn.every(n => n > 0); }}",
                     arg=i, timeout=60, describe=f"() => ({FIGURE_JS})({i})")
        figures.nth(i).screenshot(path=str(artifacts / f"notebook03_fig{i}.png"))
        info = lab.eval(FIGURE_JS, i)
        assert info["marks"] > 0 and all(n > 0 for n in info["drawn"]), (i, info)
        assert info["title"].strip(), (i, info)
        assert len(info["labels"]) >= 2 and all(info["labels"]), (i, info)   # x and y (and colour) labelled
        assert info["covered"] == 0, f"figure {i}: the legend covers data: {info}"


def test_notebook03_audio_clips_load_and_are_short(notebook03):
    lab = notebook03
    # the listening table (5 classes x 3 clips) and the depth click track
    clips = lab.wait_for("""() => { const a = [...document.querySelectorAll('.jp-OutputArea audio')];
        return a.length >= 16 && a.every(e => e.readyState >= 1)
            ? a.map(e => ({duration: e.duration, src: (e.currentSrc || '').slice(0, 15)})) : null; }""", timeout=60)
    assert all(c["src"].startswith("data:audio/wav") for c in clips), clips
    assert all(0.5 < c["duration"] <= 2.0 for c in clips), clips
