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


def _listening_inodes() -> set[str]:
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = pathlib.Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] == "0A":  # LISTEN
                inodes.add(fields[9])
    return inodes


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
