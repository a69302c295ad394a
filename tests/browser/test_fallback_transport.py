"""AudioOut's base64 transport in a real JupyterLab + Chromium: where binary buffers
do not arrive (Colab), patches go as base64 text and the worklet holds the same
PCM as over the binary path.

Each notebook builds several AudioOut widgets fed the same patches (a noisy loop,
then overlapping windows that crossfade, one wrapping around the loop end) and
compares the loops the worklets hold, read back through the test hook
``readLoop()`` of widgets/audio_out.js: bit for bit between the transports, and
close to the kernel's mirror.
"""

import numpy as np
import pytest

pytestmark = pytest.mark.browser

SETUP = """\
import ipywidgets as W
import numpy as np
from demon_nb.live.audio_out import AudioOut
from demon_nb.live.player import Player

SR, HOP, LOOP = 48_000, 480, 48_000                       # a 1 s loop of 100 frames
rng = np.random.default_rng(7)
n = np.arange(LOOP // 4)
PATCHES = [(0, (0.4 * rng.uniform(-1, 1, (2, LOOP))).astype(np.float32))] + [
    (frame, np.stack([0.3 * np.sin(2 * np.pi * f * n / SR), 0.2 * np.cos(2 * np.pi * f * n / SR)]).astype(np.float32))
    for frame, f in ((10, 440.0), (20, 660.0), (90, 330.0), (20, 550.0))]   # overlapping; 90 wraps

def widget(**kwargs):
    audio = AudioOut(sample_rate=SR, channels=2, loop_samples=LOOP, **kwargs)
    player = Player(LOOP, HOP, SR)
    audio.attach(player)                                   # a reload resends the loop from the mirror

    def first_fill(_sr):                                   # in the ready callback: before the probe's answer
        if audio.ready_events == 1:
            for cid, (frame, pcm) in enumerate(PATCHES, 1):
                audio.send_patch(player.make_patch(frame, pcm, {"tone": cid}, cid))
    audio.on_ready(first_fill)
    return audio, player

def mirror(player):
    pcm = player.mirror.pcm
    return {"sumsq": float((pcm.astype(np.float64) ** 2).sum()), "at": pcm[:, IDX].T.tolist()}

IDX = [0, 4799, 4800, 4801, 5000, 9700, 12000, 20000, 43300, 47999]   # fades, wrap, plain
"""

# the worklets' loops: a hash of the float32 bits, the energy, a few samples; transport counts
READ = """async (uids) => {
    const out = {};
    for (const uid of uids) {
        const s = window.__demon_audio.models[uid];
        const loop = await s.readLoop();
        let hash = 0x811c9dc5, sumsq = 0;
        for (const ch of loop.data) {
            const bits = new Uint32Array(ch.buffer);
            for (let i = 0; i < bits.length; i++) hash = Math.imul(hash ^ bits[i], 16777619) >>> 0;
            for (let i = 0; i < ch.length; i++) sumsq += ch[i] * ch[i];
        }
        out[uid] = {hash, sumsq, filled: loop.filled, at: IDX.map((i) => loop.data.map((ch) => ch[i])),
                    binary: s.binary, dropped: s.dropped, base64: s.base64Received,
                    received: s.patchesReceived, applied: s.applied, error: s.error};
    }
    return out;
}"""
IDX = [0, 4799, 4800, 4801, 5000, 9700, 12000, 20000, 43300, 47999]
APPLIED = """(want) => Object.entries(want).every(([uid, n]) => (window.__demon_audio?.models[uid]?.applied ?? 0) >= n)"""
DESCRIBE = """() => { const a = window.__demon_audio;
    return a && Object.fromEntries(Object.entries(a.models).map(([k, s]) => [k,
        {ready: s.ready, error: s.error, binary: s.binary, dropped: s.dropped, base64: s.base64Received,
         received: s.patchesReceived, applied: s.applied}])); }"""
# Colab's widget manager in miniature: the binary buffers of one widget's comm
# messages vanish before ipywidgets sees them (the widget is marked by a DOM class)
DROP_BUFFERS = """() => {
    const kernel = window.jupyterapp.shell.currentWidget.sessionContext.session.kernel;
    const handle = kernel._handleMessage.bind(kernel), marked = new Set();
    window.__dropped_buffers = 0;
    kernel._handleMessage = (msg) => {
        const c = msg.content, type = msg.header.msg_type;
        if (type === "comm_open" && (c.data?.state?._dom_classes ?? []).includes("demon-drop-buffers")) marked.add(c.comm_id);
        if (type === "comm_msg" && marked.has(c.comm_id) && msg.buffers?.length) {
            window.__dropped_buffers += msg.buffers.length;
            msg.buffers = [];
        }
        return handle(msg);
    };
    return true;
}"""


def read_loops(lab, uids):
    return lab.eval(READ.replace("IDX", str(IDX)), uids)


def assert_loops_equal(loops, kernel, a, b, atol):
    """Widgets ``a`` and ``b`` hold the same loop, bit for bit, close to the kernel's mirror."""
    assert loops[a]["filled"] == loops[b]["filled"] == 48_000, loops
    assert loops[a]["hash"] == loops[b]["hash"] and loops[a]["at"] == loops[b]["at"], (loops[a], loops[b])
    assert loops[a]["sumsq"] == loops[b]["sumsq"]
    assert loops[a]["sumsq"] == pytest.approx(kernel["sumsq"], rel=1e-3)
    np.testing.assert_allclose(loops[a]["at"], kernel["at"], rtol=0, atol=atol)


def test_fallback_forced_base64_holds_the_binary_pcm(lab):
    """transport_encoding="base64": float32 and int16 patches as text decode to the
    same samples in the worklet as the binary buffers do."""
    lab.write_notebook("fallback_forced.ipynb", [SETUP, """\
pairs = {dtype: (widget(dtype=dtype, transport_encoding="binary"), widget(dtype=dtype, transport_encoding="base64"))
         for dtype in ("float32", "int16")}
W.VBox([audio for pair in pairs.values() for audio, _ in pair])
"""])
    lab.open("fallback_forced.ipynb")
    lab.run_all()
    info = lab.kernel_json("{d: {'uids': [a._uid for a, _ in p], 'encodings': [a.encoding for a, _ in p],"
                           " 'mirror': mirror(p[0][1])} for d, p in pairs.items()}")
    uids = [uid for d in info.values() for uid in d["uids"]]
    lab.wait_for(APPLIED, arg={uid: 5 for uid in uids}, timeout=60, describe=DESCRIBE)
    loops = read_loops(lab, uids)
    for dtype, atol in (("float32", 1e-6), ("int16", 2e-4)):
        binary, text = info[dtype]["uids"]
        assert info[dtype]["encodings"] == ["binary", "base64"]
        assert loops[binary]["binary"] is True and loops[binary]["base64"] == 0, loops[binary]
        assert loops[text]["base64"] == loops[text]["received"] == 5 and loops[text]["error"] == "", loops[text]
        assert_loops_equal(loops, info[dtype]["mirror"], binary, text, atol)


def test_fallback_dropped_buffers_negotiate_base64_and_reload_renegotiates(lab):
    """transport_encoding="auto" where the page drops one widget's buffers: the probe
    fails, the patches sent meanwhile are resent as base64 and the loop equals a
    binary widget's; after a reload (buffers arrive again) both negotiate binary."""
    lab.write_notebook("fallback_auto.ipynb", [SETUP, """\
(ref, ref_player), (lossy, lossy_player) = widget(dtype="int16"), widget(dtype="int16", _dom_classes=("demon-drop-buffers",))
W.VBox([ref, lossy])
"""])
    lab.open("fallback_auto.ipynb")
    assert lab.eval(DROP_BUFFERS)
    lab.run_all()
    state = "{'uids': [ref._uid, lossy._uid], 'encodings': [ref.encoding, lossy.encoding]," \
            " 'readies': [ref.ready_events, lossy.ready_events], 'errors': [ref.error, lossy.error]," \
            " 'mirror': mirror(ref_player)}"
    info = lab.kernel_json(state)
    ref_uid, lossy_uid = info["uids"]
    lab.wait_for(APPLIED, arg={ref_uid: 5, lossy_uid: 5}, timeout=60, describe=DESCRIBE)
    info = lab.kernel_json(state)
    assert info["encodings"] == ["binary", "base64"] and info["errors"] == ["", ""], info
    loops = read_loops(lab, info["uids"])
    assert loops[ref_uid]["binary"] is True and loops[ref_uid]["dropped"] == 0, loops[ref_uid]
    lossy_state = loops[lossy_uid]
    assert lossy_state["binary"] is False and lossy_state["error"] == "", lossy_state
    assert lossy_state["dropped"] >= 1 and lossy_state["base64"] == lossy_state["received"] == 5, lossy_state
    assert lab.eval("() => window.__dropped_buffers") >= 1 + lossy_state["dropped"]   # the probe's too
    assert_loops_equal(loops, info["mirror"], ref_uid, lossy_uid, 2e-4)

    lab.save()
    lab.page.reload()                                     # a fresh page: buffers arrive again
    lab.open("fallback_auto.ipynb")
    lab.wait_for(APPLIED, arg={ref_uid: 1, lossy_uid: 1}, timeout=60, describe=DESCRIBE)
    for _ in range(20):                                   # the probe answers may still be on their way
        info = lab.kernel_json(state)
        if info["encodings"] == ["binary", "binary"]:
            break
        lab.page.wait_for_timeout(250)
    assert info["encodings"] == ["binary", "binary"] and info["readies"] == [2, 2], info
    loops = read_loops(lab, info["uids"])
    assert loops[lossy_uid]["binary"] is True and loops[lossy_uid]["base64"] == 0, loops[lossy_uid]
    assert_loops_equal(loops, info["mirror"], ref_uid, lossy_uid, 2e-4)
