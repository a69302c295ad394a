"""Faults a live instrument must survive (issue 8), in a real IPython kernel."""

import queue
import time

import pytest
from jupyter_client.manager import start_new_kernel
from helpers import DenoiserWrapper


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
                            "from demon_nb.live.runner import Runner\n"
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

    from demon_nb.live.runner import Runner
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


def _copy_weights(tmp_path):
    import shutil

    from demon_nb.models.mini import WEIGHTS_DIR

    folder = tmp_path / "weights"
    shutil.copytree(WEIGHTS_DIR, folder)
    return folder


@pytest.mark.parametrize("damage, message", [
    ("truncate", "not a readable safetensors"),
    ("garbage", "not a readable safetensors"),
    ("pickle", "not a readable safetensors"),
    ("wrong_shape", "has shape"),
    ("bad_config", "not a valid mini config"),
    ("old_layout", "condition tokens"),
])
def test_a_damaged_mini_checkpoint_is_a_clear_error(tmp_path, damage, message):
    import pickle

    import torch
    from safetensors.torch import load_file, save_file

    from demon_nb.models.mini import load_net

    folder = _copy_weights(tmp_path)
    weights = folder / "model.safetensors"
    if damage == "truncate":
        weights.write_bytes(weights.read_bytes()[:1000])
    elif damage == "garbage":
        weights.write_bytes(b"\x00" * 4096)
    elif damage == "pickle":
        weights.write_bytes(pickle.dumps({"weight": [1.0, 2.0]}))
    elif damage == "wrong_shape":
        state = load_file(str(weights))
        key = next(k for k, v in state.items() if v.ndim == 2)
        state[key] = torch.zeros(3, 3)
        save_file(state, str(weights))
    elif damage == "old_layout":  # weights from before the tempo token
        import json

        config = json.loads((folder / "config.json").read_text())
        config["text_encoder"].pop("cond_tokens")
        (folder / "config.json").write_text(json.dumps(config))
    else:
        (folder / "config.json").write_text("{ not json")
    with pytest.raises(ValueError, match=message):
        load_net(folder)
