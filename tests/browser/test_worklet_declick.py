"""The loop worklet's processor in Chromium's JS engine, driven block by block (no audio device, no
timing): a patch landing on the playhead changes the buffer as the kernel's mirror does,
and the output fades into it from what was about to play instead of stepping at the playhead;
every advance of a heard version is reported with the time its first sample played."""

from pathlib import Path

import numpy as np
import pytest

from demon_nb.live.player import LoopMirror, Patch

pytestmark = pytest.mark.browser

WORKLET = (Path(__file__).resolve().parents[2] / "widgets" / "audio_worklet.js").read_text()
LOOP, FADE, BLOCK = 4800, 240, 128

# AudioWorkletGlobalScope stand-ins: the processor class is captured and run by hand
HARNESS = """
([source, loop, fade, block, old, fresh, patchAt, start]) => {
  let Processor = null;
  const scope = {
    AudioWorkletProcessor: class { constructor() { this.port = { postMessage() {} }; } },
    registerProcessor: (name, cls) => { Processor = cls; },
    sampleRate: 48000, currentTime: 0, currentFrame: 0,
  };
  new Function(...Object.keys(scope), source)(...Object.values(scope));
  const p = new Processor({ processorOptions: { loopSamples: loop, channels: 1, playing: true, volume: 1 } });
  p.gain = 1;
  p.applyPatch({ start: 0, data: [Float32Array.from(old)], fade: fade, versions: {}, id: 0 });
  const played = [];
  for (let b = 0; b * block < 2 * patchAt; b++) {
    if (b * block === patchAt) p.applyPatch({ start, data: [Float32Array.from(fresh)], fade, versions: {}, id: 1 });
    const out = [new Float32Array(block)];
    p.process([], [out]);
    played.push(...out[0]);
  }
  return { played, buffer: Array.from(p.buf[0]), declicks: p.counts.declicks };
}
"""


def run(page, old, fresh, patch_at, start):
    page.goto("about:blank")
    return page.evaluate(HARNESS, [WORKLET, LOOP, FADE, BLOCK, old.tolist(), fresh.tolist(), patch_at, start])


def mirror_of(old, fresh, start):
    mirror = LoopMirror(LOOP, channels=1, fade=FADE)
    mirror.apply(Patch(0, old[None], {}, 0, 0.0))
    mirror.apply(Patch(start, fresh[None], {}, 1, 0.0))
    return mirror.pcm[0]


def test_a_late_patch_fades_in_at_the_playhead_and_the_buffer_stays_the_mirror(page):
    t = np.arange(LOOP)
    old = (0.5 * np.sin(2 * np.pi * 220 * t / 48000)).astype(np.float32)
    fresh = (-0.5 * np.ones(2400)).astype(np.float32)  # a step of up to 1.0 against the old sine
    patch_at, start = 1280, 1000                         # the playhead (1280) is inside [1000, 3400)
    result = run(page, old, fresh, patch_at, start)
    played, buffer = np.asarray(result["played"]), np.asarray(result["buffer"], dtype=np.float32)
    # the same crossfade as the mirror (JS rounds once from double, numpy per float32 operation)
    np.testing.assert_allclose(buffer, mirror_of(old, fresh, start), atol=1e-7)
    assert result["declicks"] == 1
    steps = np.abs(np.diff(played))
    # the old sine steps at most 2*pi*220/48000*0.5 = 0.0144 per sample; the fade adds at most ~1.0 * pi / (2 * 240)
    assert steps.max() < 0.03, steps.argmax()
    np.testing.assert_allclose(played[patch_at + FADE:patch_at + 1000], buffer[patch_at + FADE:patch_at + 1000], atol=1e-6)
    np.testing.assert_allclose(played[:patch_at], old[:patch_at], atol=1e-6)


def test_an_early_patch_is_played_from_the_buffer_without_an_output_fade(page):
    old = np.zeros(LOOP, dtype=np.float32)
    fresh = np.full(1200, 0.25, dtype=np.float32)
    result = run(page, old, fresh, 1280, 2000)          # the playhead (1280) is before the patch
    played, buffer = np.asarray(result["played"]), np.asarray(result["buffer"], dtype=np.float32)
    assert result["declicks"] == 0
    np.testing.assert_allclose(played, buffer[:len(played)], atol=1e-7)


# Heard versions: every advance is reported, also one overtaken before the next report.
HEARD_HARNESS = """
([source, loop, block]) => {
  let Processor = null;
  const messages = [];
  globalThis.sampleRate = 48000; globalThis.currentTime = 0; globalThis.currentFrame = 0;
  const AudioWorkletProcessor = class { constructor() { this.port = { postMessage: (m) => messages.push(m) }; } };
  new Function("AudioWorkletProcessor", "registerProcessor", source)(AudioWorkletProcessor, (n, cls) => { Processor = cls; });
  const p = new Processor({ processorOptions: { loopSamples: loop, channels: 1, playing: true, volume: 1, reportSeconds: 10 } });
  const patch = (start, n, v) => p.applyPatch({ start, data: [new Float32Array(n).fill(0.1)], fade: 0, versions: { state: v }, id: v });
  patch(0, loop, 1);
  patch(1024, 512, 2);                      // played from sample 1024 ...
  patch(1536, 512, 3);                      // ... and overtaken 512 samples later, before any report
  for (let b = 0; b * block < 2400; b++) {
    globalThis.currentTime = b * block / sampleRate; globalThis.currentFrame = b * block;
    p.process([], [[new Float32Array(block)]]);
  }
  p.report();
  return messages.filter((m) => m.type === "status");
}
"""


def test_every_heard_version_is_reported_with_the_time_its_first_sample_played(page):
    page.goto("about:blank")
    reports = page.evaluate(HEARD_HARNESS, [WORKLET, LOOP, BLOCK])
    assert len(reports) == 1
    report = reports[0]
    assert report["heard"]["state"] == [3, 1536 / 48000]       # the newest, as before
    advances = [(name, v, round(t * 48000)) for name, v, t in report["advances"]]
    assert advances == [("state", 1, 0), ("state", 2, 1024), ("state", 3, 1536)]
