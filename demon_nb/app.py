"""``python -m demon_nb app``: the instrument alone, as a page (Voila), on loopback with a token.

Writes a small notebook (in a temporary folder, removed on exit) that builds
``demon_nb.instrument(model=...)`` and, given ``--preset FILE``, loads it, then serves
it with Voila bound to 127.0.0.1 with a fresh random token (printed in the URL). Voila
shows outputs only (no code cells) and runs the notebook in a new kernel for each
page load. The kernel works in the folder the command was started from, so the save /
load / record buttons read and write files there. ``--dry-run`` prints the command and
the notebook's code instead of running it.
"""

from __future__ import annotations

import argparse
import secrets
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import webbrowser
from pathlib import Path

MODELS = ("mini", "analytic", "acestep")
NOTEBOOK = "DEMON.ipynb"  # Voila's page title is the notebook's name
DENIED_EXTENSIONS = ["@jupyter-notebook/lab-extension"]


def notebook_code(model: str, checkpoints: Path | None, preset: Path | None, workdir: Path) -> str:
    """The one code cell of the generated notebook (absolute paths, as Python literals)."""
    kwargs = f"model={model!r}" + (f", checkpoints={str(checkpoints)!r}" if checkpoints is not None else "")
    lines = [
        "import os",
        f"os.chdir({str(workdir)!r})  # the save / load / record buttons work in the folder the app started in",
        "import demon_nb",
        "",
        f"inst = demon_nb.instrument({kwargs})",
    ]
    if preset is not None:
        lines.append(f"print({f'preset {preset.name}:'!r}, inst.load({str(preset)!r}))")
    return "\n".join(lines) + "\n"


def write_notebook(folder: Path, code: str) -> Path:
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(code)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path = Path(folder) / NOTEBOOK
    nbformat.write(nb, path)
    return path


def command(notebook: Path, port: int, token: str) -> list[str]:
    """The ``voila`` command line (pure: no side effects). Voila opens no browser itself (its own
    opener drops the token); ``port_retries=0``: the printed URL is the one served. Notebook 7's
    JupyterLab extension (its "open in Notebook" buttons) has no use in a Voila page and fails
    to load against Voila's own JupyterLab core: it is not loaded."""
    return [sys.executable, "-m", "voila", str(notebook), "--no-browser", "--Voila.ip=127.0.0.1",
            f"--port={port}", "--Voila.port_retries=0", f"--Voila.token={token}",
            "--show_tracebacks=True", f"--VoilaConfiguration.extension_denylist={DENIED_EXTENSIONS!r}"]


def url(port: int, token: str) -> str:
    return f"http://127.0.0.1:{port}/?token={token}"


def _open_when_listening(proc: subprocess.Popen, port: int, target: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2):
                pass
        except OSError:
            time.sleep(0.3)
            continue
        webbrowser.open(target)
        return


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m demon_nb app", description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=MODELS, default=None,
                        help="mini (default), analytic, or acestep (needs --checkpoints)")
    parser.add_argument("--checkpoints", type=Path, default=None,
                        help="ACE-Step 1.5 checkpoint folder (implies --model acestep)")
    parser.add_argument("--preset", type=Path, default=None, help="a preset saved with inst.save(...) to load")
    parser.add_argument("--port", type=int, default=8866, help="port on 127.0.0.1 (default 8866)")
    parser.add_argument("--no-browser", action="store_true", help="do not open a web browser")
    parser.add_argument("--dry-run", action="store_true", help="print the command and the notebook's code and exit")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if not 1 <= args.port <= 65535:
        parser.error(f"--port: expected 1..65535, got {args.port}")
    model = args.model or ("acestep" if args.checkpoints is not None else "mini")
    checkpoints = preset = None
    if args.checkpoints is not None:
        if model != "acestep":
            parser.error(f"--checkpoints: only with --model acestep (got --model {model})")
        checkpoints = args.checkpoints.expanduser().resolve()
        if not checkpoints.is_dir():
            parser.error(f"--checkpoints: {checkpoints} is not a folder")
    elif model == "acestep":
        parser.error("--model acestep needs --checkpoints DIR (an ACE-Step 1.5 checkpoint folder)")
    if args.preset is not None:
        preset = args.preset.expanduser().resolve()
        if not preset.is_file():
            parser.error(f"--preset: {preset} is not a file")
    token = secrets.token_hex(16)
    code = notebook_code(model, checkpoints, preset, Path.cwd().resolve())
    with tempfile.TemporaryDirectory(prefix="demon-app-") as folder:
        notebook = write_notebook(Path(folder), code)
        cmd = command(notebook, args.port, token)
        if args.dry_run:
            print(shlex.join(cmd))
            print("# the notebook's code:")
            print(code, end="")
            return 0
        target = url(args.port, token)
        print(f"DEMON app ({model}): {target}", flush=True)
        proc = subprocess.Popen(cmd, cwd=folder)
        # SIGTERM (e.g. from a process manager) stops Voila and removes the notebook, as Ctrl-C does
        previous = signal.signal(signal.SIGTERM, _interrupt)
        try:
            if not args.no_browser:
                threading.Thread(target=_open_when_listening, args=(proc, args.port, target), daemon=True).start()
            return proc.wait()
        except KeyboardInterrupt:
            _stop(proc)
            return 0
        finally:
            signal.signal(signal.SIGTERM, previous)
            _stop(proc)
