"""AudioOut in a real JupyterLab + Chromium: patches reach the worklet, audio is
non-silent, the playhead advances, and a blocking cell causes no silence."""

import json
import time

import pytest

pytestmark = pytest.mark.browser

SR, HOP, FRAMES = 48_000, 1920, 100          # a 4 s loop
SETUP = """\
import threading, time
import numpy as np
from demon_nb.live.audio_out import AudioOut
from demon_nb.live.player import Player

SR, HOP, LOOP = {SR}, {HOP}, {loop}
audio = AudioOut(sample_rate=SR, channels=2, loop_samples=LOOP, volume=0.8, dtype="{dtype}")
player = Player(LOOP, HOP, SR, window_s=1.0)
audio.attach(player)
ready = threading.Event()
audio.on_ready(lambda sr: ready.set())
audio
"""
# a 440 Hz sine (1760 periods per loop, so the loop is seamless), one patch every
# 250 ms from a background thread, each tagged with a new "tone" version
STREAM = """\
stop = threading.Event()

def stream():
    ready.wait()
    cid = 0
    while not stop.is_set():
        t0 = time.monotonic()
        a, b = player.plan()
        n = np.arange(a * HOP, b * HOP)
        tone = (0.3 * np.sin(2 * np.pi * 440.0 * n / SR)).astype(np.float32)
        cid += 1
        patch = player.make_patch(a, np.stack([tone, tone]), {"tone": cid}, cid,
                                  decode_s=time.monotonic() - t0)
        audio.send_patch(patch)
        time.sleep(0.25)

threading.Thread(target=stream, daemon=True).start()
"""


def setup(dtype):
    return SETUP.format(SR=SR, HOP=HOP, loop=FRAMES * HOP, dtype=dtype)


# record what is heard (the kernel's mirror of the loop, advanced by the reports)
RECORD = """\
from demon_nb.live.recorder import Recorder
rec = Recorder("heard.wav", SR, 2)
audio.on_status(rec.status_callback(player.mirror))
"""
STATUS = "() => window.__demon_audio?.latest?.status ?? null"
DESCRIBE = """() => { const a = window.__demon_audio; const s = a?.latest;
    const cells = window.jupyterapp.shell.currentWidget.content.widgets.map(c => c.model.outputs.toJSON());
    return {models: a && Object.keys(a.models).length, ready: s?.ready, error: s?.error,
            ctx: s?.ctx.state, received: s?.patchesReceived, status: s?.status, cells}; }"""


def status(lab):
    return lab.eval(STATUS)


def test_audio_out_streams_and_survives_blocking_cell(lab, artifacts):
    lab.write_notebook("audio_out.ipynb", [setup("float32"), STREAM, RECORD])
    lab.open("audio_out.ipynb")
    lab.run_all()

    # the worklet received patches, filled the loop and renders non-silent audio
    first = lab.wait_for("""() => { const s = window.__demon_audio?.latest?.status;
        return s && s.filled === 1 && s.rms > 0.05 ? s : null; }""", timeout=60, describe=DESCRIBE)
    state = lab.eval("""() => { const s = window.__demon_audio.latest;
        return {ready: s.ready, sampleRate: s.sampleRate, received: s.patchesReceived, applied: s.applied, acks: s.acks,
                error: s.error, ctx: s.ctx.state}; }""")
    assert state["ready"] and state["error"] == "" and state["ctx"] == "running", state
    assert state["sampleRate"] == SR
    assert state["received"] >= 1 and first["patches"] >= 1 and state["acks"] >= 1
    # 0.3 amplitude sine at volume 0.8: rms = 0.24 / sqrt(2) = 0.17
    assert 0.1 < first["rms"] < 0.25 and 0.15 < first["peak"] <= 0.3, first

    # the playhead advances at about the sample rate
    t0 = time.monotonic()
    lab.page.wait_for_timeout(1000)
    second = status(lab)
    elapsed = time.monotonic() - t0
    assert second["rendered"] - first["rendered"] > 0.5 * elapsed * SR, (first, second)
    assert second["playhead"] != first["playhead"]

    # the kernel got the reports (traitlets updated from the browser's messages)
    idx = lab.run_new_cell("import json; print(json.dumps({'ready': audio.ready, 'playhead': audio.playhead,"
                           " 'rendered': audio.rendered_samples, 'fill': audio.fill,"
                           " 'heard': audio.heard_versions, 'sent': audio.patches_sent,"
                           " 'lead': player.lead.seconds, 'acked': player.lead.count,"
                           " 'heard_age': time.time() - audio.heard_at['tone']}))")
    kernel = json.loads(lab.output_text(idx).strip().splitlines()[-1])
    assert kernel["ready"] and kernel["fill"] == 1.0 and kernel["rendered"] > 0
    assert 0 <= kernel["playhead"] < FRAMES * HOP and kernel["sent"] >= 1
    assert kernel["heard"].get("tone", 0) >= 1 and kernel["acked"] >= 1
    assert 0.02 <= kernel["lead"] <= 2.0
    assert -1.0 < kernel["heard_age"] < 30.0          # heard_at is an epoch time on this clock

    # a cell that blocks the kernel for 3 s: the music keeps playing, no silent samples
    before = status(lab)
    lab.run_new_cell("import time; time.sleep(3)", wait=False)
    rms_seen = []
    deadline = time.monotonic() + 30
    lab.page.wait_for_timeout(300)
    while time.monotonic() < deadline:
        rms_seen.append(status(lab)["rms"])
        busy = lab.eval("() => window.jupyterapp.shell.currentWidget.sessionContext.session.kernel.status")
        if busy == "idle" and len(rms_seen) > 25:
            break
        lab.page.wait_for_timeout(100)
    after = status(lab)
    assert after["rendered"] - before["rendered"] >= 2.5 * SR, (before, after)
    assert after["silent"] == before["silent"], (before, after)
    assert after["skips"] == before["skips"], (before, after)
    assert min(rms_seen) > 0.1, rms_seen
    # the background thread kept streaming while the cell blocked: newer versions were heard
    assert after["heard"]["tone"] > before["heard"]["tone"], (before["heard"], after["heard"])

    # the recording holds what was heard: the sine at the mirror's level, for the time played
    took = kernel_json(lab, "(lambda p, d: {'seconds': len(d) / SR, 'rms': float(np.sqrt((d ** 2).mean()))})"
                            "(rec.close(), __import__('soundfile').read('heard.wav')[0])")
    assert took["seconds"] >= 3.0 and took["rms"] == pytest.approx(0.3 / 2 ** 0.5, rel=0.1), took

    lab.page.screenshot(path=str(artifacts / "audio_out.png"), full_page=True)
    assert (artifacts / "audio_out.png").stat().st_size > 1000


def kernel_json(lab, expr):
    idx = lab.run_new_cell(f"import json; print(json.dumps({expr}))")
    return json.loads(lab.output_text(idx).strip().splitlines()[-1])


def test_controls_and_page_reload(lab, artifacts):
    """int16 patches; pause/play and volume with the mouse reach the worklet and
    the kernel; after a page reload the browser says ready again and the kernel
    refills its loop."""
    lab.write_notebook("controls.ipynb", [setup("int16"), STREAM])
    lab.open("controls.ipynb")
    lab.run_all()
    loud = """() => { const s = window.__demon_audio?.latest?.status;
        return s && s.filled === 1 && s.rms > 0.1 ? s : null; }"""
    lab.wait_for(loud, timeout=60, describe=DESCRIBE)

    lab.page.click(".demon-audio-play")                       # pause
    paused = lab.wait_for("() => { const s = window.__demon_audio.latest.status; return !s.playing && s; }",
                          timeout=10, describe=DESCRIBE)
    lab.page.wait_for_timeout(500)
    assert status(lab)["rendered"] == paused["rendered"]      # the playhead holds
    assert lab.page.text_content(".demon-audio-play").strip().endswith("play")
    lab.page.click(".demon-audio-play")                       # play again
    lab.wait_for("() => window.__demon_audio.latest.status.playing", timeout=10)

    lab.page.locator(".demon-audio-volume").fill("0.2")
    expected = 0.3 * 0.2 / 2 ** 0.5  # a 0.3 sine at volume 0.2; wait until the meter has settled there
    quiet = lab.wait_for(f"""() => {{ const s = window.__demon_audio.latest.status;
        return s.playing && Math.abs(s.rms - {expected}) < {0.15 * expected} ? s : null; }}""",
                         timeout=10, describe=DESCRIBE)
    assert quiet["rms"] == pytest.approx(expected, rel=0.15)
    kernel = kernel_json(lab, "{'volume': audio.volume, 'playing': audio.playing, 'readies': audio.ready_events}")
    assert kernel == {"volume": 0.2, "playing": True, "readies": 1}

    lab.save()
    lab.page.reload()
    lab.open("controls.ipynb")
    again = lab.wait_for("""() => { const s = window.__demon_audio?.latest?.status;
        return s && s.filled === 1 && s.rms > 0.02 ? s : null; }""", timeout=60, describe=DESCRIBE)
    assert again["rms"] < 0.06                                  # the volume state survived the reload
    lab.page.wait_for_selector(".demon-audio-status")
    assert lab.eval("() => Object.keys(window.__demon_audio.models).length") == 1
    for _ in range(20):  # the second "ready" may still be on its way to the kernel
        kernel = kernel_json(lab, "{'readies': audio.ready_events, 'error': audio.error}")
        if kernel["readies"] == 2:
            break
        lab.page.wait_for_timeout(250)
    assert kernel == {"readies": 2, "error": ""}
    lab.page.screenshot(path=str(artifacts / "audio_out_reload.png"), full_page=True)
