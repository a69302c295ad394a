"""`bench gpu`: the one command for a GPU machine. Here (no CUDA) it says why it skips, and its
code path runs reduced on the CPU (`--smoke`)."""

import json

import torch

from demon_nb.bench import gpu


def test_without_cuda_it_skips_with_a_reason(capsys):
    if torch.cuda.is_available():
        return  # a GPU machine runs the real thing instead
    assert gpu.main(["--json"]) == 0
    assert "no CUDA device" in json.loads(capsys.readouterr().out)["skipped"]


def test_smoke_run_reports_every_figure(capsys):
    assert gpu.main(["--json", "--device", "cpu", "--smoke", "--backends", "eager,tensorrt"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    ticks = result["backends"]["eager"]["ticks"]
    assert set(ticks) == {"1", "4"} and all(t["tick_ms"] > 0 and t["completions_per_s"] > 0 for t in ticks.values())
    assert "skipped" in result["backends"]["tensorrt"] or "ticks" in result["backends"]["tensorrt"]
    decode = result["decode"]
    # Timings are the benchmark's to report, not the test's to judge (a busy CI machine reorders them);
    # the test checks that both were measured and that the window equals the full decode.
    assert decode["window_ms"] > 0 and decode["full_ms"] > 0 and decode["max_abs_err"] < 1e-4
    assert result["layers"] == 1 and result["smoke"] is True
