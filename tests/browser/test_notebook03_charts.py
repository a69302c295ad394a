"""``notebooks/03_propagation_classes.ipynb`` in a real JupyterLab + Chromium: run all, then every
bqplot figure has drawn marks, a title and labelled axes, no legend covers data, no axis text
overlaps another, every audio clip loads and lasts at most 2 s, and the exercise check cells open
collapsed.

The helpers here (``run_notebook``, ``FIGURE_JS``, ``check_figure``, ``error_outputs``,
``check_cells``) are shared with ``test_notebook02_charts.py``.

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
# mark drew (path/rect/circle with a non-empty box, or a heatmap's <image> with a data URL), the
# title, the axis labels, and how many sampled points of the drawn shapes fall inside the legend box
# (0: the legend covers no data).
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
  const drawn = marks.map(m => [...m.querySelectorAll('path, rect, circle, image')].filter(e => {
    const b = e.getBBox();
    return (b.width > 0 || b.height > 0) && (e.tagName !== 'image' || (e.getAttribute('href') || '').startsWith('data:image'));
  }));
  return {
    marks: marks.length,
    drawn: drawn.map(d => d.length),
    covered: drawn.flat().reduce((n, e) => n + covered(e), 0),
    title: svg.querySelector('text.mainheading')?.textContent ?? '',
    labels: [...fig.querySelectorAll('text.axislabel')].map(t => t.textContent.trim()),
  };
}"""


# Axis texts that overlap in figure i, as "a / b" pairs: a tick or axis label of one axis (the x, y and
# colour axes are the groups under the background svg) against a text or the colour bar of another,
# or two texts of the same axis (crowded tick labels). Empty: every axis is readable.
AXES_OVERLAP_JS = """(i) => {
  const fig = document.querySelectorAll('.bqplot.figure')[i];
  const axes = [...fig.querySelectorAll('svg.svg-background > g > g > g')];
  const items = axes.map(a => [...a.querySelectorAll('text, rect')].filter(e => {
    const b = e.getBoundingClientRect();
    return b.width > 0 && b.height > 0 && (e.tagName === 'rect' || e.textContent.trim());
  }));
  const name = e => e.tagName === 'rect' ? 'colour bar' : JSON.stringify(e.textContent.trim());
  const overlap = (p, q) => {
    const a = p.getBoundingClientRect(), b = q.getBoundingClientRect();
    return Math.min(a.right, b.right) - Math.max(a.left, b.left) > 1 && Math.min(a.bottom, b.bottom) - Math.max(a.top, b.top) > 1;
  };
  const pairs = [];
  items.forEach((mine, k) => mine.forEach((e, m) => {
    if (e.tagName === 'text') {
      mine.slice(m + 1).filter(f => f.tagName === 'text' && overlap(e, f)).forEach(f => pairs.push(name(e) + ' / ' + name(f)));
      items.slice(k + 1).flat().filter(f => overlap(e, f)).forEach(f => pairs.push(name(e) + ' / ' + name(f)));
    } else {
      items.slice(k + 1).flat().filter(f => f.tagName === 'text' && overlap(e, f)).forEach(f => pairs.push(name(e) + ' / ' + name(f)));
    }
  }));
  return pairs;
}"""


# Per code cell whose source starts with "# check": its index, whether the cell model has its input
# hidden, whether the input area is out of the layout (display: none) and the collapsed-input
# placeholder (the dots) is shown instead. Each cell is scrolled into view first.
CHECK_CELLS_JS = """() => window.jupyterapp.shell.currentWidget.content.widgets
  .map((c, i) => [c, i]).filter(([c]) => c.model.type === 'code' && c.model.sharedModel.getSource().startsWith('# check'))
  .map(([c, i]) => {
    c.node.scrollIntoView({block: 'center'});   // lay the cell out (JupyterLab renders off-screen cells lazily)
    const input = c.node.querySelector('.jp-InputArea');
    const placeholder = c.node.querySelector('.jp-InputPlaceholder');
    return {
      index: i,
      inputHidden: c.inputHidden,
      inputDisplayed: !!input && input.getClientRects().length > 0,
      placeholderShown: !!placeholder && placeholder.getClientRects().length > 0,
      ran: c.model.executionCount !== null,
    };
  })"""


def run_notebook(lab_server, browser, artifacts, notebook: Path, timeout: float):
    """Open a copy of ``notebook`` in JupyterLab, run all cells, yield the :class:`Lab` (for a
    module fixture), then close the tab and shut the kernel down."""
    from demon_nb.bench._browser import Lab, new_page

    page = new_page(browser, width=1280, height=1000)
    lab = Lab(lab_server, page, artifacts=artifacts)
    try:
        lab.copy_notebook(notebook)
        lab.open(notebook.name)
        lab.run_all(timeout=timeout)
        yield lab
    finally:
        page.context.close()
        lab_server.shutdown_sessions()


def error_outputs(lab) -> list[str]:
    return lab.eval("""() => window.jupyterapp.shell.currentWidget.content.widgets
        .filter(c => c.model.type === 'code')
        .flatMap(c => c.model.outputs.toJSON().filter(o => o.output_type === 'error')
        .map(o => o.ename + ': ' + o.evalue))""")


def check_figure(lab, figure, i: int, screenshot: Path) -> dict:
    """Scroll figure ``i`` into view, wait until every mark drew, screenshot it, and check its
    title, axis labels, legend and that no axis text overlaps another (or the colour bar); returns
    its FIGURE_JS record."""
    figure.scroll_into_view_if_needed()
    # drawn: every mark of the figure has at least one shape with a non-empty box
    lab.wait_for(f"(i) => {{ const f = ({FIGURE_JS})(i); return f.marks > 0 && f.drawn.every(n => n > 0); }}",
                 arg=i, timeout=60, describe=f"() => ({FIGURE_JS})({i})")
    figure.screenshot(path=str(screenshot))
    info = lab.eval(FIGURE_JS, i)
    assert info["marks"] > 0 and all(n > 0 for n in info["drawn"]), (i, info)
    assert info["title"].strip(), (i, info)
    assert len(info["labels"]) >= 2 and all(info["labels"]), (i, info)   # x and y (and colour) labelled
    assert info["covered"] == 0, f"figure {i}: the legend covers data: {info}"
    assert lab.eval(AXES_OVERLAP_JS, i) == [], f"figure {i}: axis texts overlap"
    return info


def check_cells(lab, expected: int) -> list[dict]:
    """The ``# check`` cells ran and open collapsed: input hidden, the placeholder shown."""
    cells = lab.eval(CHECK_CELLS_JS)
    assert len(cells) == expected, cells
    for cell in cells:
        assert cell["ran"], cell
        assert cell["inputHidden"] and not cell["inputDisplayed"] and cell["placeholderShown"], cell
    return cells


@pytest.fixture(scope="module")
def notebook03(lab_server, browser, artifacts):
    yield from run_notebook(lab_server, browser, artifacts, NOTEBOOK, RUN_ALL_TIMEOUT_S)


def test_notebook03_runs_without_errors(notebook03):
    assert error_outputs(notebook03) == []


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
        check_figure(lab, figures.nth(i), i, artifacts / f"notebook03_fig{i}.png")


def test_notebook03_audio_clips_load_and_are_short(notebook03):
    lab = notebook03
    # the listening table (5 classes x 3 clips) and the depth click track
    clips = lab.wait_for("""() => { const a = [...document.querySelectorAll('.jp-OutputArea audio')];
        return a.length >= 16 && a.every(e => e.readyState >= 1)
            ? a.map(e => ({duration: e.duration, src: (e.currentSrc || '').slice(0, 15)})) : null; }""", timeout=60)
    assert all(c["src"].startswith("data:audio/wav") for c in clips), clips
    assert all(0.5 < c["duration"] <= 2.0 for c in clips), clips


def test_notebook03_check_cells_open_collapsed(notebook03):
    check_cells(notebook03, expected=3)
