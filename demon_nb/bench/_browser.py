"""A real JupyterLab on loopback and headless Debian Chromium, for browser tests and benchmarks.

``lab_server(root)`` starts ``jupyter lab`` on 127.0.0.1 (free port, random token,
its own settings so no news toasts) and stops its whole process group on exit
(kernels live in their own sessions: they are killed by pid). ``chromium()``
launches Playwright's Chromium from ``/usr/bin/chromium``. :class:`Lab` drives
notebooks in a page through JupyterLab's own commands (``window.jupyterapp``):
open, wait for the kernel, run all, append and run a cell, read outputs.

Used by ``tests/browser/conftest.py`` (fixtures) and ``demon_nb/bench/ear.py``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Iterator

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--autoplay-policy=no-user-gesture-required",
]


def missing_reason() -> str | None:
    """Why the browser stack cannot run here, or None when it can."""
    if not os.path.exists(CHROMIUM):
        return f"{CHROMIUM} is missing (apt-get install -y chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "python playwright is not installed (pip install playwright)"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def descendants(pid: int) -> list[int]:
    """All child processes of ``pid`` (kernels run in their own sessions)."""
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        for task in Path(f"/proc/{p}/task").glob("*"):
            try:
                kids = [int(k) for k in (task / "children").read_text().split()]
            except OSError:
                continue
            found += kids
            todo += kids
    return found


def stop_group(proc: subprocess.Popen) -> None:
    """Stop the server: SIGTERM its process group (it shuts its kernels down),
    then SIGKILL the group and any descendant left (kernels have own sessions)."""
    kids = descendants(proc.pid)
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=15)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        pass
    for target in [proc.pid, *kids]:
        try:
            os.killpg(target, signal.SIGKILL) if target == proc.pid else os.kill(target, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    proc.wait(timeout=10)


class LabServer:
    def __init__(self, root: Path, port: int, token: str, proc: subprocess.Popen, log: Path):
        self.root, self.port, self.token, self.proc, self.log = root, port, token, proc, log

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def api(self, path: str, method: str = "GET"):
        req = urllib.request.Request(f"{self.base}{path}", method=method,
                                     headers={"Authorization": f"token {self.token}"})
        with urllib.request.urlopen(req, timeout=10) as r:
            body = r.read()
        return json.loads(body) if body else None

    def url(self, path: str) -> str:
        # ?reset: start from an empty workspace (no tabs restored from earlier runs)
        return f"{self.base}/lab/tree/{path}?reset&token={self.token}"

    def shutdown_sessions(self) -> None:
        """Shut every kernel session down (the next notebook starts clean)."""
        for session in self.api("/api/sessions"):
            self.api(f"/api/sessions/{session['id']}", method="DELETE")


class RemoteServer(LabServer):
    """A JupyterLab already running elsewhere, e.g. on a GPU machine: ``url`` is the address it
    printed (``http(s)://HOST:PORT/lab?token=T``); notebooks are uploaded through its contents API."""

    def __init__(self, url: str):
        from urllib.parse import parse_qs, urlsplit

        parts = urlsplit(url)
        token = parse_qs(parts.query).get("token", [""])[0]
        if parts.scheme not in ("http", "https") or not parts.netloc or not token:
            raise ValueError(f"server: expected http(s)://HOST:PORT/...?token=TOKEN, got {url!r}")
        self.root, self.proc, self.log, self.token, self.port = None, None, None, token, parts.port
        self._base = f"{parts.scheme}://{parts.netloc}"

    @property
    def base(self) -> str:
        return self._base

    def upload(self, src: Path) -> Path:
        """PUT ``src`` into the server's root (same name); returns that name."""
        body = json.dumps({"type": "notebook", "format": "json", "content": json.loads(Path(src).read_text())})
        req = urllib.request.Request(f"{self.base}/api/contents/{Path(src).name}", data=body.encode(), method="PUT",
                                     headers={"Authorization": f"token {self.token}", "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30):
            pass
        return Path(Path(src).name)


@contextlib.contextmanager
def lab_server(base: Path, env: dict | None = None, start_timeout: float = 90.0) -> Iterator[LabServer]:
    """``jupyter lab`` serving ``base/root``; settings, workspaces and log under ``base``."""
    base = Path(base)
    root, settings = base / "root", base / "settings" / "@jupyterlab" / "apputils-extension"
    root.mkdir(parents=True, exist_ok=True)
    settings.mkdir(parents=True, exist_ok=True)
    # no news / update toasts over the notebook
    (settings / "notification.jupyterlab-settings").write_text(
        json.dumps({"fetchNews": "false", "checkForUpdates": False}))
    env = dict(os.environ if env is None else env, JUPYTERLAB_SETTINGS_DIR=str(base / "settings"),
               JUPYTERLAB_WORKSPACES_DIR=str(base / "workspaces"), PYTHONUNBUFFERED="1")
    port, token = free_port(), os.urandom(16).hex()
    log = base / "server.log"
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root", "--ip=127.0.0.1",
           f"--port={port}", "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}",
           f"--ServerApp.root_dir={root}", "--LabApp.expose_app_in_browser=True", "--LabApp.news_url=None"]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    server = LabServer(root, port, token, proc, log)
    try:
        deadline = time.monotonic() + start_timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"jupyter lab exited: {log.read_text()[-2000:]}")
            try:
                server.api("/api/status")
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"jupyter lab did not start: {log.read_text()[-2000:]}")
                time.sleep(0.5)
        yield server
    finally:
        stop_group(proc)


@contextlib.contextmanager
def chromium(headless: bool = True):
    """Playwright ``Browser`` on Debian's Chromium; closed (with Playwright) on exit."""
    from playwright.sync_api import sync_playwright

    pw = sync_playwright().start()
    try:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=headless, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()
    finally:
        pw.stop()


def new_page(browser, width: int = 1280, height: int = 900, timeout_s: float = 60.0):
    """A tab in a fresh context; ``page.console_log`` collects console lines and page errors."""
    context = browser.new_context(viewport={"width": width, "height": height})
    page = context.new_page()
    page.set_default_timeout(timeout_s * 1000)
    page.console_log = []
    page.on("console", lambda m: page.console_log.append(f"{m.type}: {m.text}"))
    page.on("pageerror", lambda e: page.console_log.append(f"pageerror: {e}"))
    return page


class Lab:
    """Drive notebooks in the page through JupyterLab's own commands (window.jupyterapp).

    ``artifacts``: where a screenshot goes when a wait times out (None: no screenshot).
    """

    def __init__(self, server: LabServer, page, artifacts: Path | None = None):
        self.server, self.page, self.artifacts = server, page, artifacts

    def write_notebook(self, name: str, cells: list[str]) -> Path:
        import nbformat

        nb = nbformat.v4.new_notebook()
        nb.cells = [nbformat.v4.new_code_cell(src) for src in cells]
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        path = self.server.root / name
        nbformat.write(nb, path)
        return path

    def copy_notebook(self, src: Path) -> Path:
        if isinstance(self.server, RemoteServer):
            return self.server.upload(src)
        return Path(shutil.copy(src, self.server.root / Path(src).name))

    def eval(self, expr: str, arg=None):
        return self.page.evaluate(expr, arg)

    def wait_for(self, expr: str, timeout: float = 60, arg=None, describe: str | None = None):
        """Poll a JS expression until truthy; returns its value. On timeout the
        error shows ``describe`` (a JS expression) and the browser console."""
        from playwright.sync_api import TimeoutError as PlaywrightTimeout

        try:
            self.page.wait_for_function(expr, arg=arg, timeout=timeout * 1000, polling=100)
        except PlaywrightTimeout:
            if self.artifacts is not None:
                self.artifacts.mkdir(parents=True, exist_ok=True)
                self.page.screenshot(path=str(self.artifacts / "browser_timeout.png"))
            state = self.eval(describe) if describe else None
            console = "\n".join(self.page.console_log[-30:])
            raise AssertionError(f"timed out after {timeout} s waiting for {expr}\n"
                                 f"state: {state}\nconsole:\n{console}") from None
        return self.eval(expr, arg)

    def open(self, name: str, timeout: float = 90) -> None:
        self.page.goto(self.server.url(name))
        self.page.wait_for_selector(".jp-Notebook", state="visible")
        self.wait_for("""() => { const w = window.jupyterapp?.shell.currentWidget;
            const k = w?.sessionContext?.session?.kernel;
            return !!(w && w.content && k && k.status === 'idle' && k.connectionStatus === 'connected'); }""",
                      timeout=timeout)

    def kernel_idle(self, timeout: float = 60) -> None:
        """Wait until no code cell is pending ([*]) and the kernel is idle."""
        self.wait_for("""() => { const w = window.jupyterapp.shell.currentWidget;
            const pending = w.content.widgets.some(c => c.model.type === 'code' && c.promptNode
                && c.promptNode.textContent.includes('*'));
            return !pending && w.sessionContext.session.kernel.status === 'idle'; }""", timeout=timeout)

    def command(self, name: str) -> None:
        """Fire a JupyterLab command without awaiting it (a dialog must not hang the caller)."""
        self.eval("(name) => { window.jupyterapp.commands.execute(name); return true; }", name)

    def save(self, timeout: float = 30) -> None:
        self.command("docmanager:save")
        self.wait_for("() => !window.jupyterapp.shell.currentWidget.context.model.dirty", timeout=timeout)

    def run_all(self, timeout: float = 120) -> None:
        """Run every cell; an error in a cell (Run All stops there) raises at once with its text."""
        self.command("notebook:run-all-cells")
        outcome = self.wait_for("""() => { const cells = window.jupyterapp.shell.currentWidget.content.widgets
                .filter(c => c.model.type === 'code');
            for (const c of cells) {
                const error = c.model.outputs.toJSON().find(o => o.output_type === 'error');
                if (error) return `${error.ename}: ${error.evalue}`;
            }
            return cells.every(c => c.model.executionCount !== null) ? 'done' : null; }""", timeout=timeout)
        if outcome != "done":
            raise RuntimeError(f"a notebook cell failed: {outcome}")
        self.kernel_idle(timeout)

    def run_new_cell(self, code: str, wait: bool = True, timeout: float = 60) -> int:
        """Append a cell with ``code`` at the end, run it; returns its index."""
        index = self.eval("""(code) => { const nb = window.jupyterapp.shell.currentWidget.content;
            const i = nb.widgets.length;
            nb.model.sharedModel.insertCell(i, {cell_type: 'code', source: code});
            nb.activeCellIndex = i;
            return i; }""", code)
        self.wait_for("(i) => window.jupyterapp.shell.currentWidget.content.activeCellIndex === i", arg=index)
        self.command("notebook:run-cell")
        if wait:
            self.wait_for("""(i) => window.jupyterapp.shell.currentWidget.content.widgets[i]
                .model.executionCount !== null""", timeout=timeout, arg=index)
            self.kernel_idle(timeout)
        return index

    def output_text(self, index: int) -> str:
        """Concatenated stream/text outputs of cell ``index``."""
        outputs = self.eval("""(i) => window.jupyterapp.shell.currentWidget.content.widgets[i]
            .model.outputs.toJSON()""", index)
        parts = []
        for o in outputs:
            if o.get("output_type") == "stream":
                parts.append("".join(o["text"]) if isinstance(o["text"], list) else o["text"])
            elif o.get("output_type") in ("execute_result", "display_data"):
                parts.append(str(o.get("data", {}).get("text/plain", "")))
            elif o.get("output_type") == "error":
                parts.append(f"{o['ename']}: {o['evalue']}")
        return "".join(parts)

    def kernel_json(self, expr: str, timeout: float = 60):
        """Run ``print(json.dumps(expr))`` in a new cell and parse the last line it printed."""
        idx = self.run_new_cell(f"import json as _json; print(_json.dumps({expr}))", timeout=timeout)
        text = self.output_text(idx).strip()
        try:
            return json.loads(text.splitlines()[-1])
        except (IndexError, json.JSONDecodeError):
            raise AssertionError(f"cell {idx} printed no JSON: {text[-2000:]!r}") from None
