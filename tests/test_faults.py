"""Faults a live instrument must survive (issue 8), in a real IPython kernel."""

import queue
import time

import pytest
from jupyter_client.manager import start_new_kernel
from wrappers import DenoiserWrapper


@pytest.fixture(scope="module")
def kernel():
    manager, client = start_new_kernel(kernel_name="python3")
    yield manager, client
    client.stop_channels()
    manager.shutdown_kernel(now=True)


def execute(client, code: str, timeout: float = 60.0) -> dict:
    """Run ``code``; returns {'status', 'stdout', 'ename'}."""
    msg_id = client.execute(code)
    stdout, result = [], {"status": None, "ename": None}
    deadline = time.monotonic() + timeout
    while True:
        try:
            msg = client.get_iopub_msg(timeout=max(0.1, deadline - time.monotonic()))
        except queue.Empty:
            raise TimeoutError(f"no reply within {timeout} s for: {code[:60]}")
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        kind = msg["msg_type"]
        if kind == "stream":
            stdout.append(msg["content"]["text"])
        elif kind == "error":
            result["ename"] = msg["content"]["ename"]
        elif kind == "status" and msg["content"]["execution_state"] == "idle":
            break
    reply = client.get_shell_msg(timeout=timeout)
    result["status"] = reply["content"]["status"]
    result["stdout"] = "".join(stdout)
    return result


def test_music_continues_through_a_blocking_cell_and_a_keyboard_interrupt(kernel):
    manager, client = kernel
    setup = execute(client, "from demon_nb.models import load\n"
                            "from demon_nb.instrument.runner import Runner\n"
                            "runner = Runner(load('analytic'), prompt='1', max_ticks_per_s=50).start()\n"
                            "import time; time.sleep(0.5); print(runner.completions)")
    assert setup["status"] == "ok", setup
    # a blocking cell: the tick thread keeps producing completions meanwhile
    blocked = execute(client, "c0 = runner.completions; time.sleep(2); print(runner.completions - c0)")
    assert int(blocked["stdout"].split()[-1]) > 10
    # a cell interrupted with SIGINT (KeyboardInterrupt lands in the main thread only)
    msg_id = client.execute("time.sleep(30)")
    time.sleep(1.0)
    manager.interrupt_kernel()
    while True:
        msg = client.get_iopub_msg(timeout=30)
        if msg["parent_header"].get("msg_id") == msg_id and msg["msg_type"] == "error":
            assert msg["content"]["ename"] == "KeyboardInterrupt"
            break
    client.get_shell_msg(timeout=30)
    after = execute(client, "c1 = runner.completions; time.sleep(1); "
                            "print(runner.alive, runner.completions - c1, len(runner.errors))")
    alive, produced, errors = after["stdout"].split()
    assert alive == "True" and int(produced) > 5 and errors == "0"
    stopped = execute(client, "runner.stop(); print(runner.alive)")
    assert stopped["stdout"].strip() == "False"


class Flaky(DenoiserWrapper):
    """Raises on every third forward, returns NaN on every seventh."""

    def __init__(self, inner):
        super().__init__(inner)
        self.calls = 0

    def velocity(self, x, t, cond):
        self.calls += 1
        if self.calls % 3 == 0:
            raise RuntimeError("injected fault")
        v = super().velocity(x, t, cond)
        return v * float("nan") if self.calls % 7 == 0 else v


def test_injected_tick_faults_are_reported_and_playback_goes_on():
    import numpy as np

    from demon_nb.instrument.runner import Runner
    from demon_nb.models import load

    model = load("analytic", frames=16)
    model.denoiser = Flaky(model.denoiser)
    runner = Runner(model, prompt="1")
    seen, patches = [], []
    runner.on_error(seen.append)
    runner.on_patch(patches.append)
    for _ in range(120):
        runner.step()
    assert len(seen) > 10 and list(runner.errors) == seen[-len(runner.errors):]  # the UI hears every one
    assert any("injected fault" in e.message for e in seen)
    assert any("not finite" in e.message for e in seen)  # NaN completions are dropped, not played
    assert patches and all(np.isfinite(p.pcm).all() for p in patches)
