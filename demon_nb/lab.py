"""``python -m demon_nb lab``: JupyterLab on loopback, with a token, opening ``notebooks/01_play.ipynb``.

Runs ``jupyter lab`` in the repository's ``notebooks/`` folder (or ``--notebooks``), bound
to 127.0.0.1 with a fresh random token (printed in the URL), ``--allow-root`` when
running as root. ``--dry-run`` prints the command instead of running it.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shlex
import subprocess
import sys
from pathlib import Path

DEFAULT_NOTEBOOK = "01_play.ipynb"


def default_notebooks() -> Path:
    """The repository's ``notebooks/`` (an editable install or a clone), else the current folder."""
    repo = Path(__file__).resolve().parents[1] / "notebooks"
    return repo if repo.is_dir() else Path.cwd()


def command(notebooks: Path, port: int, token: str, open_browser: bool, is_root: bool) -> list[str]:
    """The ``jupyter lab`` command line (pure: no side effects)."""
    cmd = [sys.executable, "-m", "jupyterlab", "--ip=127.0.0.1", f"--port={port}",
           f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={notebooks}"]
    if (notebooks / DEFAULT_NOTEBOOK).exists():
        cmd.append(f"--LabApp.default_url=/lab/tree/{DEFAULT_NOTEBOOK}")
    if not open_browser:
        cmd.append("--no-browser")
    if is_root:
        cmd.append("--allow-root")
    return cmd


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m demon_nb lab", description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8888, help="port on 127.0.0.1 (default 8888)")
    parser.add_argument("--notebooks", type=Path, default=None, help="folder to serve (default: the repository's notebooks/)")
    parser.add_argument("--no-browser", action="store_true", help="do not open a web browser")
    parser.add_argument("--dry-run", action="store_true", help="print the command and exit")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if not 1 <= args.port <= 65535:
        parser.error(f"--port: expected 1..65535, got {args.port}")
    notebooks = (args.notebooks or default_notebooks()).resolve()
    if not notebooks.is_dir():
        parser.error(f"--notebooks: {notebooks} is not a folder")
    token = secrets.token_hex(16)
    is_root = hasattr(os, "geteuid") and os.geteuid() == 0
    cmd = command(notebooks, args.port, token, not args.no_browser, is_root)
    if args.dry_run:
        print(shlex.join(cmd))
        return 0
    print(f"JupyterLab: http://127.0.0.1:{args.port}/lab/tree/{DEFAULT_NOTEBOOK}?token={token}", flush=True)
    try:
        return subprocess.call(cmd, cwd=notebooks)
    except KeyboardInterrupt:
        return 0
