"""Browser test infrastructure: a real JupyterLab on loopback + Playwright on Debian Chromium.

Fixtures: ``lab_server`` (session; a ``jupyter lab`` on 127.0.0.1, random free
port, token, temp root; its whole process group is stopped at the end),
``browser`` (session; Chromium from /usr/bin/chromium), ``page`` (one tab), and
``lab`` (helpers: write/open a notebook, wait for the kernel, run all cells,
run one new cell, read JS state). Skips with a reason when Chromium or
Playwright is missing. The server/browser code lives in ``demon_nb.bench._browser``
(shared with ``python -m demon_nb bench ear``).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from demon_nb.bench._browser import CHROMIUM, CHROMIUM_ARGS, Lab as _Lab, LabServer, chromium, lab_server as _lab_server
from demon_nb.bench._browser import missing_reason, new_page

__all__ = ["CHROMIUM", "CHROMIUM_ARGS", "ARTIFACTS", "Lab", "LabServer"]

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"


def pytest_collection_modifyitems(config, items):
    reason = missing_reason()
    for item in items:
        if "browser" in item.keywords and reason:
            item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(scope="session")
def lab_server(tmp_path_factory):
    with _lab_server(tmp_path_factory.mktemp("jupyterlab")) as server:
        yield server


@pytest.fixture(scope="session")
def browser():
    with chromium() as b:
        yield b


@pytest.fixture
def page(browser):
    p = new_page(browser)
    yield p
    p.context.close()


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


class Lab(_Lab):
    """:class:`demon_nb.bench._browser.Lab` saving a screenshot to tests/artifacts on a timeout."""

    def __init__(self, server: LabServer, page):
        super().__init__(server, page, artifacts=ARTIFACTS)


@pytest.fixture
def lab(lab_server, page):
    yield Lab(lab_server, page)
    # shut the notebook's kernel down so the next test starts clean
    lab_server.shutdown_sessions()
