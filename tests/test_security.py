"""Security properties (issue 8): no unpickling, no remote code, no listener of our own."""

import pathlib
import re
import time

import pytest

PACKAGE = pathlib.Path(__file__).parents[1] / "demon_nb"


def python_sources():
    return [p for p in PACKAGE.rglob("*.py")]


def test_no_pickle_loading_anywhere():
    offenders = []
    for path in python_sources():
        text = path.read_text()
        for match in re.finditer(r"pickle\.loads?\(|torch\.load\(([^)]*)\)|trust_remote_code\s*=\s*True", text):
            if match.group(0).startswith("torch.load(") and "weights_only=True" in match.group(0):
                continue
            offenders.append(f"{path.relative_to(PACKAGE.parent)}: {match.group(0)[:60]}")
    assert not offenders, offenders


def _listening_sockets():
    """``(table, fields)`` of every listening TCP socket (/proc/net/tcp and tcp6)."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = pathlib.Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] == "0A":  # LISTEN
                yield table, fields


def _listening_inodes() -> set[str]:
    return {fields[9] for _, fields in _listening_sockets()}


def _own_socket_inodes() -> set[str]:
    inodes = set()
    for fd in pathlib.Path("/proc/self/fd").iterdir():
        try:
            target = fd.readlink().as_posix()
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    return inodes


@pytest.mark.skipif(not pathlib.Path("/proc/net/tcp").exists(), reason="needs Linux /proc")
def test_the_runtime_opens_no_listening_socket():
    from demon_nb.live.runner import Runner
    from demon_nb.models import load

    before = _own_socket_inodes() & _listening_inodes()
    runner = Runner(load("analytic"), prompt="1").start()
    time.sleep(0.5)
    during = _own_socket_inodes() & _listening_inodes()
    runner.stop()
    assert during == before


# -- the one listener the project starts on purpose: ``python -m demon_nb app`` (Voila) ---------

def test_app_command_binds_loopback_with_a_token():
    from demon_nb import app

    cmd = app.command(pathlib.Path("/tmp/x/DEMON.ipynb"), 8866, "f00d")
    assert "--Voila.ip=127.0.0.1" in cmd and "--Voila.token=f00d" in cmd
    assert "--Voila.port_retries=0" in cmd and "--no-browser" in cmd   # the printed URL is the one served
    assert app.url(8866, "f00d") == "http://127.0.0.1:8866/?token=f00d"
    code = app.notebook_code("analytic", None, pathlib.Path("/tmp/a'b.json"), pathlib.Path("/tmp"))
    compile(code, "app", "exec")                                      # paths are quoted as Python literals
    assert "inst.load('/tmp/a\\'b.json')" in code or 'inst.load("/tmp/a\'b.json")' in code


def _listeners(port: int) -> list[tuple[str, str]]:
    """``(table, hex address)`` of the sockets listening on ``port``."""
    found = []
    for table, fields in _listening_sockets():
        address, hexport = fields[1].rsplit(":", 1)
        if int(hexport, 16) == port:
            found.append((table, address))
    return found


@pytest.mark.skipif(not pathlib.Path("/proc/net/tcp").exists(), reason="needs Linux /proc")
def test_app_listens_on_loopback_only_and_wants_the_token(tmp_path):
    pytest.importorskip("voila")
    import urllib.request

    from demon_nb.bench._servers import app_server

    with app_server(tmp_path, ["--model", "analytic"], start_timeout=120) as server:
        assert _listeners(server.port) == [("/proc/net/tcp", "0100007F")]     # 127.0.0.1, no IPv6, no 0.0.0.0
        assert len(server.token) == 32
        for path in ("/", "/?token=" + "0" * 32, "/voila/render/DEMON.ipynb"):
            req = urllib.request.Request(server.base + path)
            try:
                with urllib.request.urlopen(req, timeout=20) as r:
                    final, body = r.url, r.read().decode(errors="replace")
            except urllib.error.HTTPError as error:
                final, body = f"HTTP {error.code}", ""
            assert "/login" in final or final.startswith("HTTP 40"), (path, final)
            assert "import demon_nb" not in body and "demon-instrument" not in body, path   # nothing without the token
