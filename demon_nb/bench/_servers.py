"""Notebook 7 and the performance page (Voila) as servers for the browser tests: the same
process handling as :func:`demon_nb.bench._browser.lab_server`."""

from __future__ import annotations

import contextlib
import os
import json
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

from ._browser import LabServer, free_port, stop_group

# -- Jupyter Notebook 7 and the Voila app page (issue 18) ---------------------------------------
#
# Same process handling as ``lab_server``: a new session (process group) per server, its log
# under ``base``, stopped with ``stop_group`` on exit (kernels, in their own sessions, by pid).


class NotebookServer(LabServer):
    """A Jupyter Notebook 7 server: LabServer's API; a notebook opens at ``/notebooks/PATH``.

    Notebook 7 is built from JupyterLab's components: with ``expose_app_in_browser`` its
    application is ``window.jupyterapp`` too, ``shell.currentWidget`` is the open notebook
    panel and the ``notebook:*`` / ``docmanager:*`` commands exist, so :class:`Lab` drives it."""

    def url(self, path: str) -> str:
        return f"{self.base}/notebooks/{path}?token={self.token}"


def _wait_listening(proc: subprocess.Popen, port: int, log: Path, what: str, timeout: float,
                    probe=None) -> None:
    """Wait until ``probe()`` succeeds (default: a TCP connect to 127.0.0.1:port); fail early
    when the process exits, with the end of its log."""
    def connect() -> None:
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            pass

    probe = probe or connect
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited ({proc.returncode}): {log.read_text(errors='replace')[-2000:]}")
        try:
            probe()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what} did not start: {log.read_text(errors='replace')[-2000:]}")
            time.sleep(0.5)


def _quiet_settings(base: Path, env: dict | None) -> dict:
    """JupyterLab-style settings under ``base`` (no news / update toasts) and the env pointing at them."""
    settings = base / "settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True, exist_ok=True)
    (settings / "notification.jupyterlab-settings").write_text(
        json.dumps({"fetchNews": "false", "checkForUpdates": False}))
    return dict(os.environ if env is None else env, JUPYTERLAB_SETTINGS_DIR=str(base / "settings"),
                JUPYTERLAB_WORKSPACES_DIR=str(base / "workspaces"), PYTHONUNBUFFERED="1")


@contextlib.contextmanager
def notebook_server(base: Path, env: dict | None = None, start_timeout: float = 90.0) -> Iterator[NotebookServer]:
    """``jupyter notebook`` (Notebook 7) serving ``base/root`` on 127.0.0.1 with a token, like
    :func:`lab_server` (free port, no browser, ``--allow-root``, its own settings)."""
    base = Path(base)
    root = base / "root"
    root.mkdir(parents=True, exist_ok=True)
    env = _quiet_settings(base, env)
    port, token = free_port(), os.urandom(16).hex()
    log = base / "server.log"
    cmd = [sys.executable, "-m", "notebook", "--no-browser", "--allow-root", "--ip=127.0.0.1",
           f"--port={port}", "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}",
           f"--ServerApp.root_dir={root}", "--JupyterNotebookApp.expose_app_in_browser=True"]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    server = NotebookServer(root, port, token, proc, log)
    try:
        _wait_listening(proc, port, log, "jupyter notebook", start_timeout,
                        probe=lambda: server.api("/api/status"))
        yield server
    finally:
        stop_group(proc)


class AppServer:
    """``python -m demon_nb app`` running in its own process group; ``url`` is the URL it printed."""

    def __init__(self, url: str, port: int, token: str, proc: subprocess.Popen, log: Path, cwd: Path):
        self.url, self.port, self.token, self.proc, self.log, self.cwd = url, port, token, proc, log, cwd

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@contextlib.contextmanager
def app_server(base: Path, args: list[str] = (), env: dict | None = None,
               start_timeout: float = 90.0) -> Iterator[AppServer]:
    """Run ``python -m demon_nb app --no-browser --port FREE *args`` with ``base`` as its working
    folder; read the URL (with its token) it prints; wait until the port accepts connections
    (without requesting the page: Voila runs the notebook per page request)."""
    import re

    base = Path(base)
    base.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ if env is None else env, PYTHONUNBUFFERED="1")
    port = free_port()
    log = base / "app.log"
    cmd = [sys.executable, "-m", "demon_nb", "app", "--no-browser", f"--port={port}", *args]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=base, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        pattern = re.compile(rf"(http://127\.0\.0\.1:{port}/\S*\?token=([0-9a-f]+))")
        deadline = time.monotonic() + start_timeout
        while not (found := pattern.search(log.read_text(errors="replace"))):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"demon_nb app printed no URL: {log.read_text(errors='replace')[-2000:]}")
            time.sleep(0.2)
        _wait_listening(proc, port, log, "demon_nb app", max(1.0, deadline - time.monotonic()))
        yield AppServer(found.group(1), port, found.group(2), proc, log, base)
    finally:
        stop_group(proc)
