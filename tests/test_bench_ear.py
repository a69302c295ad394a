"""The control-to-ear matching of ``bench ear`` (pure logic; the browser run is the benchmark itself)."""

import pytest

from demon_nb.bench.ear import match_latencies, summarize


def test_each_input_is_matched_to_the_first_heard_version_at_or_after_its_write():
    inputs = [10.0, 20.0]
    writes = [(5, 10.02), (6, 10.05), (7, 20.03)]          # input 1 caused versions 5 and 6 (a drag)
    heard = [(4, 9.0), (6, 10.9), (7, 21.0)]              # 5 was never heard alone: 6 is the first >= 5
    patches = [(4, 9.5), (5, 10.3), (7, 20.4)]
    rows = match_latencies(inputs, writes, heard, patches)
    assert [r["version"] for r in rows] == [5, 7]
    assert rows[0]["ms"] == pytest.approx(900.0) and rows[1]["ms"] == pytest.approx(1000.0)
    assert rows[0]["to_kernel_ms"] == pytest.approx(20.0) and rows[0]["to_patch_ms"] == pytest.approx(280.0)
    assert rows[1]["to_ear_ms"] == pytest.approx(600.0)
    # the parts add up to the whole
    for r in rows:
        assert r["to_kernel_ms"] + r["to_patch_ms"] + r["to_ear_ms"] == pytest.approx(r["ms"])


def test_inputs_without_a_write_or_never_heard_are_left_out():
    rows = match_latencies([1.0, 2.0, 3.0], [(1, 2.01), (2, 3.01)], [(1, 2.5)])
    assert [r["version"] for r in rows] == [1]            # input 1: no write; input 3: never heard
    assert rows[0]["ms"] == pytest.approx(500.0) and "to_patch_ms" not in rows[0]


def test_a_write_stamped_slightly_before_its_input_still_matches_it():
    # kernel and browser clocks may differ by a few ms
    rows = match_latencies([5.0], [(3, 4.99)], [(3, 5.4)])
    assert len(rows) == 1 and rows[0]["ms"] == pytest.approx(400.0)
    assert match_latencies([5.0], [(3, 4.5)], [(3, 5.4)]) == []   # far earlier: not caused by it


def test_summary_percentiles():
    rows = [{"ms": float(v), "to_kernel_ms": 1.0} for v in range(1, 101)]
    s = summarize(rows)
    assert s["n"] == 100 and s["p50_ms"] == pytest.approx(50.5) and s["p95_ms"] == pytest.approx(95.05, abs=0.1)
    assert s["to_kernel_p50_ms"] == 1.0 and "to_patch_p50_ms" not in s
    assert summarize([]) == {"n": 0, "p50_ms": None, "p95_ms": None}


def test_goals_scale_with_the_headless_tick():
    from demon_nb.bench.ear import goals

    result = {"step": {"p50_ms": 120.0, "p95_ms": 170.0}, "submission": {"p50_ms": 300.0},
              "tick_ratio": 1.4, "silent_samples_startup": 30_000}
    fast, slow = goals(result, 15.0, 8), goals(result, 30.0, 8)
    assert fast["step_p50_ms"] == {"value": 120.0, "bound": 105.0, "met": False}      # 60 + 3h
    assert slow["step_p50_ms"]["bound"] == 150.0 and slow["step_p50_ms"]["met"]
    assert (fast["step_p95_ms"]["bound"], slow["submission_p50_ms"]["bound"]) == (160.0, 400.0)  # 100 + 4h, 100 + 10h
    assert fast["tick_ratio"]["met"] and not fast["silent_samples_startup"]["met"]
    missing = goals(result | {"step": {"p50_ms": None, "p95_ms": None}}, 15.0, 8)
    assert missing["step_p50_ms"]["met"] is False


def test_cpu_profile_counts_the_cpu_of_a_process_and_its_threads():
    import os
    import threading

    from demon_nb.bench._cpu import CpuProfile

    profile = CpuProfile(os.getpid())          # this process stands in for the server
    profile.start()
    done = threading.Event()

    def spin():
        end = __import__("time").perf_counter() + 0.4
        while __import__("time").perf_counter() < end:
            pass
        done.set()

    worker = threading.Thread(target=spin, name="demon-tick")
    worker.start()
    worker.join()
    profile.stop()
    report = profile.report()
    assert report["cores"]["jupyter server"] > 0.3         # 0.4 s of busy loop in about 0.4 s
    assert report["kernel_cpu_share"] in (0.0, None) and report["kernel_threads_cores"] == {}
    with __import__("pytest").raises(ValueError, match="start"):
        CpuProfile(os.getpid()).report()
