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


import pytest

from demon_nb.bench import _instrument_page as ui
from demon_nb.bench._servers import notebook_server
from instrument_checks import (check_curve_stroke, check_kernel_streaming, check_slider_heard, check_sustained_audio,
                               check_worklet_started, playing)

pytestmark = pytest.mark.browser

STEP_CONTROL = "velocity_scale"       # propagation class "step" (heard version key "state")


@pytest.fixture(scope="module")
def notebook7(tmp_path_factory):
    pytest.importorskip("notebook", reason="Jupyter Notebook 7 is not installed (pip install 'notebook>=7.2')")
    with notebook_server(tmp_path_factory.mktemp("notebook7")) as server:
        yield server


@pytest.fixture(scope="module")
def play(notebook7, browser, artifacts):
    with playing(notebook7, browser, artifacts) as result:
        yield result


def test_notebook7_is_notebook7_not_lab(play):
    lab, _ = play
    info = lab.eval("""() => ({name: window.jupyterapp.name, path: location.pathname,
        lab: !!document.querySelector('#jp-main-dock-panel, .jp-LabShell')})""")
    assert info["path"].startswith("/notebooks/") and info["name"] == "Jupyter Notebook", info
    assert not info["lab"], info


def test_notebook7_sustained_audio(play):
    lab, first = play
    check_worklet_started(lab)
    assert first["filled"] == 1 and first["patches"] >= 1, first
    before, after = check_sustained_audio(lab)
    assert after["playhead"] != before["playhead"]
    assert after["patches"] > before["patches"], (before["patches"], after["patches"])   # still streaming
    received = lab.eval("() => window.__demon_audio.latest.patchesReceived")   # before the kernel is asked
    check_kernel_streaming(lab, received)


def test_notebook7_slider_moved_with_mouse_reaches_kernel_and_is_heard(play):
    lab, _ = play
    heard = check_slider_heard(lab, STEP_CONTROL)
    assert heard["rms"] > 0.005, heard                                          # with sound


def test_notebook7_curve_stroke_drawn_with_mouse_reaches_kernel(play):
    lab, _ = play
    check_curve_stroke(lab)
    assert ui.status(lab)["rms"] > 0.005          # still playing after the stroke


def test_notebook7_screenshot(play, artifacts):
    lab, _ = play
    path = artifacts / "instrument_notebook7.png"
    lab.page.wait_for_timeout(500)
    lab.page.locator(".demon-instrument").first.screenshot(path=str(path))
    assert path.stat().st_size > 20_000
