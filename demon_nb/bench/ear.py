"""``python -m demon_nb bench ear --json``: control-to-ear latency, measured in a real browser.

Starts JupyterLab on loopback and headless Chromium, opens ``notebooks/01_play.ipynb``,
runs all cells, types a prompt B (so the A/B blend is audible), then moves a step-class
control (velocity scale) and a submission-class control (the A <-> B prompt blend, or
``--submission-control shift``) ``--trials`` times each by clicking their slider tracks
with the mouse.

Latency of one input = ``heard_at(first heard version >= v) - t_input`` where

- ``t_input``: the browser's pointerdown event time, ``performance.timeOrigin + event.timeStamp``;
- ``v``: the smallest version the kernel assigned to the writes this input caused. A cell
  the bench appends wraps ``inst.latency.wrote`` (the instrument's write-time hook: every
  write of a step/submission control reports ``(key, version)`` there) to log
  ``(key, version, time.time())``; a write belongs to the latest input before it;
- ``heard_at``: epoch time the first sample of a patch rendered under version ``>= v``
  reached the output (the worklet tags each patch region with its versions, the audio
  widget converts the audio-context time with ``getOutputTimestamp``); a recorder in the
  page logs every advance of ``heard.state`` / ``heard.submission``.

Keys: step controls bump ``state`` (the shared per-step state version), submission
controls ``submission`` (stamped on each request born). The breakdown splits each
latency into ``to_kernel`` (input -> kernel write), ``to_patch`` (write -> first patch
sent with the version: waiting for the tick, the tick(s), decode) and ``to_ear``
(patch -> heard: transport, any lead left, and the page's output latency; the lead aims below
the arrival, so most patches land on the playhead and are faded in there:
``late_patch_share``). ``silent_samples``:
samples the worklet played as silence during the measurement (startup excluded; the
startup count is ``silent_samples_startup``). All processes are stopped at the end.

Machine-normalized figures: before the browser opens and after it has closed, the same process
runs the instrument's runtime headless for a few seconds (mini, depth 4, 8 steps, one
torch/ONNX thread, as the kernel does); the lower of the two tick p50s is
``headless_tick_ms_p50`` (h); ``tick_ratio`` is the
kernel's tick during the browser run over h. ``cpu`` is where the CPU went during the trials
(cores per process group and per kernel thread, ``kernel_cpu_share``: the kernel's share of
all the CPU the run's processes used) and ``goals`` checks the responsiveness goals, each
scaled by h (step p50 <= 60 + 3h ms, p95 <= 100 + 4h, submission p50 <= 100 + (S + 2)h,
browser-run tick <= 1.5h, start-up silence <= 24,000 samples).
"""

from __future__ import annotations

import json
import random
import signal
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from . import _instrument_page as ui
from . import bench_parser
import contextlib

from ._browser import Lab, RemoteServer, chromium, lab_server, missing_reason, new_page
from ._cpu import CpuProfile

STEP = ("velocity_scale", "state")
MIDI_CC = 21                    # --control midi: this CC drives the step control, mapped over its slider range
MIDI_CELL = "inst.midi.map(cc=21, control='velocity_scale', lo=0.0, hi=2.0)"
SUBMISSION = {"prompt_blend": ("prompt_blend", "submission"), "shift": ("shift", "submission")}
PROMPT_B = "bright staccato bells, fast arpeggios"
SETTLE_MS = 2000               # before the first trial: the page renders the bench's own cells
POSITIONS = (0.3, 0.7)          # slider track fractions clicked in turn (each click changes the value)

THREADS_CELL = "{t.native_id: t.name for t in __import__('threading').enumerate()}"
TICKS_CELL = "{'count': inst.runner.ring.tick_count, 'ms': list(inst.runner.tick_ms)}"
LOGGER_CELL = """\
import time as _ear_time
_ear_log = {"writes": [], "patches": []}
def _ear_wrote(key, version, at=None, _inner=inst.latency.wrote):
    _ear_log["writes"].append([key, int(version), _ear_time.time()])
    _inner(key, version, at)
inst.latency.wrote = _ear_wrote
inst.runner.on_patch(lambda p: _ear_log["patches"].append([p.created_at, {k: int(v) for k, v in p.versions.items()}]))
"""


def match_latencies(inputs: list[float], writes: list[tuple[int, float]], heard: list[tuple[int, float]],
                    patches: list[tuple[int, float]] | None = None, skew_s: float = 0.05) -> list[dict]:
    """Per input time (sorted), the latency to the first heard version >= its first write's version.

    ``writes``: ``(version, t)``; ``heard``: ``(version, heard_at)`` in the order heard;
    ``patches``: ``(version, sent_at)``. A write belongs to the latest input at or before
    ``t + skew_s`` (kernel and browser clocks may differ by a few ms). Inputs with no write
    or never heard are left out. Times in seconds; results in ms.
    """
    inputs = sorted(inputs)
    if not inputs:
        return []
    first_version: dict[int, int] = {}
    for version, t in writes:
        i = int(np.searchsorted(inputs, t + skew_s, side="right")) - 1
        if i >= 0:
            first_version[i] = min(version, first_version.get(i, version))
    results = []
    for i, v in sorted(first_version.items()):
        at = next((h_at for h_v, h_at in heard if h_v >= v), None)
        if at is None:
            continue
        write_t = min(t for version, t in writes if version >= v)
        row = {"version": v, "ms": (at - inputs[i]) * 1e3, "to_kernel_ms": (write_t - inputs[i]) * 1e3}
        sent = next((p_t for p_v, p_t in (patches or []) if p_v >= v), None)
        if sent is not None:
            row["to_patch_ms"] = (sent - write_t) * 1e3
            row["to_ear_ms"] = (at - sent) * 1e3
        results.append(row)
    return results


def summarize(rows: list[dict]) -> dict:
    """p50/p95 of the latency and p50 of each part of the breakdown (ms)."""
    out: dict = {"n": len(rows)}
    if not rows:
        return out | {"p50_ms": None, "p95_ms": None}
    ms = np.array([r["ms"] for r in rows])
    out |= {"p50_ms": round(float(np.percentile(ms, 50)), 1), "p95_ms": round(float(np.percentile(ms, 95)), 1),
            "min_ms": round(float(ms.min()), 1), "max_ms": round(float(ms.max()), 1)}
    for part in ("to_kernel_ms", "to_patch_ms", "to_ear_ms"):
        values = [r[part] for r in rows if part in r]
        if values:
            out[f"{part[:-3]}_p50_ms"] = round(float(np.percentile(values, 50)), 1)
    return out


def run_trials(lab: Lab, name: str, key: str, trials: int, timeout_s: float, rng: random.Random,
               midi: bool = False) -> int:
    """Move control ``name`` ``trials`` times (a click on its slider track, or with ``midi`` a control
    change from the fake MIDI device on ``MIDI_CC``), each time waiting until a newer ``key``
    version is heard."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    unheard = 0
    for i in range(trials):
        before = ui.heard_max(lab, key)
        position = POSITIONS[i % 2] + rng.uniform(-0.05, 0.05)
        if midi:
            lab.eval(ui.SEND_CC_JS, [name, MIDI_CC, round(127 * position)])
        else:
            ui.click_slider(lab, name, position)
        try:
            lab.page.wait_for_function(f"(b) => ({ui.HEARD_MAX_JS})({json.dumps(key)}) > b", arg=before,
                                       timeout=timeout_s * 1000, polling=100)
        except PlaywrightTimeout:  # a write never heard is counted here and left out of the statistics
            unheard += 1
        lab.page.wait_for_timeout(rng.uniform(150, 600))   # de-phase from the tick and the loop
    return unheard


def headless_tick_ms(seconds: float = 6.0) -> float:
    """h: the tick p50 of the instrument's runtime headless (mini, depth 4, 8 steps), with one
    torch and one ONNX Runtime thread like the kernel (``demon_nb.instrument(threads=1)``)."""
    import torch

    from ..models import load
    from .stream import run_stream

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return float(run_stream(load("mini"), seconds, depth=4)["tick_ms_p50"])
    finally:
        torch.set_num_threads(previous)


def goals(result: dict, h: float, steps: int) -> dict:
    """Each responsiveness goal with its bound (ms, samples or ratio, scaled by h) and whether it is met."""
    def check(value, bound):
        return {"value": value, "bound": round(bound, 1), "met": value is not None and value <= bound}

    return {
        "step_p50_ms": check(result["step"].get("p50_ms"), 60 + 3 * h),
        "step_p95_ms": check(result["step"].get("p95_ms"), 100 + 4 * h),
        "submission_p50_ms": check(result["submission"].get("p50_ms"), 100 + (steps + 2) * h),
        "tick_ratio": check(result["tick_ratio"], 1.5),
        "silent_samples_startup": check(result["silent_samples_startup"], 24_000),
    }


def measure(args) -> dict:
    rng = random.Random(args.seed)
    h_before = headless_tick_ms() if not args.server else None
    controls = {"step": STEP, "submission": SUBMISSION[args.submission_control]}
    if args.control == "midi":   # the same step control from a MIDI controller, side by side with the slider
        controls = {"step": STEP, "midi": STEP, "submission": controls["submission"]}
    with contextlib.ExitStack() as stack:
        if args.server:  # a running server, e.g. a GPU machine's: latency over a real network link
            server = RemoteServer(args.server)
        else:
            server = stack.enter_context(lab_server(Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="demon-ear-")))))
        browser = stack.enter_context(chromium())
        page = new_page(browser, width=1280, height=1400)
        if args.control == "midi":
            page.add_init_script(ui.FAKE_MIDI_JS)
        lab = Lab(server, page)
        profile = CpuProfile(server.proc.pid) if server.proc is not None else None
        startup = ui.open_instrument(lab, Path(args.notebook), run_timeout=args.timeout)
        if controls["submission"][0] == "prompt_blend":
            ui.type_text(lab, "prompt_b", PROMPT_B)
            if lab.kernel_json("inst.get('prompt_b')") != PROMPT_B:
                raise RuntimeError("prompt B typed in the page did not reach the kernel")
        lab.run_new_cell(LOGGER_CELL)
        if args.control == "midi":
            lab.wait_for(f"() => ({ui.MIDI_STATUS_JS})().includes('Fake MIDI')", timeout=60)
            lab.run_new_cell(MIDI_CELL)
        ui.install_recorder(lab, list(dict.fromkeys(name for name, _ in controls.values())))
        for name, _ in controls.values():
            ui.slider_track(lab, name)                      # scrolled into view, present
        threads = lab.kernel_json(THREADS_CELL)
        page.wait_for_timeout(SETTLE_MS)                # the page draws the cells just run, as a player waits
        if profile is not None:
            profile.start()
        start = ui.status(lab)
        ticks_before = lab.kernel_json(TICKS_CELL)["count"]
        unheard, ticks = {}, {}
        for klass, (name, key) in controls.items():
            unheard[klass] = run_trials(lab, name, key, args.trials, args.trial_timeout, rng, midi=klass == "midi")
            now = lab.kernel_json(TICKS_CELL)       # the kernel's tick times during this class's trials
            ticks[klass] = now["ms"][-min(len(now["ms"]), now["count"] - ticks_before):]
            ticks_before = now["count"]
        end = ui.status(lab)
        if profile is not None:
            profile.stop()
        latency = lab.eval("() => { const c = window.__demon_audio.latest.ctx; "
                           "return 1000 * ((c.baseLatency || 0) + (c.outputLatency || 0)); }")
        rec = lab.eval("() => window.__ear")
        log = lab.kernel_json("{'writes': _ear_log['writes'], 'patches': _ear_log['patches'], 'model': inst.model.name,"
                              " 'metrics': {k: v for k, v in inst.metrics().items() if k != 'warning'},"
                              " 'view_hz': inst._refresher.hz}")
        if args.screenshot:
            page.locator(".demon-instrument").first.screenshot(path=args.screenshot)
        page.context.close()
    # h again with the browser and the server gone; the lower of the two is h (the stricter goals)
    h_after = headless_tick_ms() if not args.server else None
    h = min(h_before, h_after) if h_before else None
    if args.raw:
        Path(args.raw).write_text(json.dumps({"recorder": rec, "kernel": log, "start": start, "end": end}))
    result: dict = {}
    for klass, (name, key) in controls.items():
        kind = "midi" if klass == "midi" else "pointerdown"
        inputs = [r["t"] for r in rec["inputs"] if r["name"] == name and r["type"] == kind]
        writes = [(v, t) for k, v, t in log["writes"] if k == key]
        heard = [(r["version"], r["at"]) for r in rec["heard"] if r["key"] == key]
        patches = [(versions[key], t) for t, versions in log["patches"] if key in versions]
        rows = match_latencies(inputs, writes, heard, patches)
        result[klass] = summarize(rows) | {"control": name, "inputs": len(inputs), "unheard": unheard[klass]}
    if "midi" in result and result["midi"].get("p50_ms") is not None and result["step"].get("p50_ms") is not None:
        result["midi_minus_slider_p50_ms"] = round(result["midi"]["p50_ms"] - result["step"]["p50_ms"], 1)
    metrics = log["metrics"]
    result |= {
        "silent_samples": int(end["silent"] - start["silent"]),
        "silent_samples_startup": int(start["silent"]),
        "skips": int(end["skips"] - start["skips"]),
        # patches that landed on the playhead (faded in at it on the output side) per patch applied
        "late_patch_share": round((end.get("declicks", 0) - start.get("declicks", 0))
                                  / max(1, end["patches"] - start["patches"]), 3),
        "model": log["model"],
        # the tick during the step trials: the same rows as the headless h (one prompt); during the
        # submission trials the A-B blend gives every slot a second prompt row
        "tick_ms_p50": round(float(np.median(ticks["step"])), 1),
        "tick_ms_p50_submission_trials": round(float(np.median(ticks["submission"])), 1),
        "decode_ms_p50": round(metrics["decode_ms"], 1),
        "lead_ms": round(metrics["lead_ms"], 1), "depth": metrics["depth"], "steps": metrics["steps"],
        "startup_rms": round(float(startup["rms"]), 4),
        "audio_output_latency_ms": round(float(latency), 1),
        "patches_sent": metrics["patches_sent"], "patches_skipped": metrics["patches_skipped"],
        "previews": metrics.get("previews", 0),
        "view_hz_end": round(float(log["view_hz"]), 1), "status_reports_per_s": None,
        "headless_tick_ms_p50": h, "headless_tick_ms_p50_before_after": [h_before, h_after],
        "tick_ratio": round(float(np.median(ticks["step"])) / h, 2) if h else None,
    }
    if profile is not None:
        cpu = profile.report(threads)
        result["status_reports_per_s"] = round((end["reports_sent"] - start["reports_sent"]) / cpu["wall_s"], 2)
        result["kernel_cpu_share"] = cpu["kernel_cpu_share"]
        result["cpu"] = cpu
    if h:
        result["goals"] = goals(result, h, int(metrics["steps"]))
    return result


def main(argv: list[str]) -> int:
    parser = bench_parser("ear", description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=24, help="slider moves per control class (default 24, >= 1)")
    parser.add_argument("--trial-timeout", type=float, default=15.0, help="s to wait for a move to be heard")
    parser.add_argument("--timeout", type=float, default=300.0, help="s to run the notebook's cells")
    parser.add_argument("--notebook", default=str(ui.NOTEBOOK), help="notebook to play (default 01_play)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the click positions and pauses")
    parser.add_argument("--screenshot", default=None, help="save a screenshot of the instrument here")
    parser.add_argument("--submission-control", choices=sorted(SUBMISSION), default="prompt_blend",
                        help="the submission-class slider moved (default prompt_blend)")
    parser.add_argument("--raw", default=None, help="save the raw event logs (JSON) here")
    parser.add_argument("--control", choices=("slider", "midi"), default="slider",
                        help="midi: also move the step control from a (fake) MIDI controller, CC 21, beside the slider")
    parser.add_argument("--server", default=None,
                        help="measure through a running JupyterLab at this URL (with ?token=...), e.g. a GPU machine's")
    args = parser.parse_args(argv)
    if args.server:
        try:
            RemoteServer(args.server)
        except ValueError as error:
            parser.error(str(error))
    if args.trials < 1:
        parser.error(f"--trials: expected an integer >= 1, got {args.trials}")
    if not Path(args.notebook).is_file():
        parser.error(f"--notebook: {args.notebook} is not a file")
    reason = missing_reason()
    if reason:
        print(json.dumps({"error": reason}))
        return 1
    started = time.monotonic()
    previous = signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))   # so the servers are stopped
    try:
        result = measure(args)
    finally:
        signal.signal(signal.SIGTERM, previous)
    result["wall_s"] = round(time.monotonic() - started, 1)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
