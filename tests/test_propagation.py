"""The propagation harness measures what DESIGN.md section 4 predicts."""

import json

import pytest

from demon_nb.bench import identity as identity_bench
from demon_nb.bench import propagation as propagation_bench


@pytest.fixture(scope="module")
def report():
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert propagation_bench.main(["--json", "--sweep-ticks", "32"]) == 0
    return json.loads(out.getvalue())


def test_contract_keys(report):
    assert report["depth"] == 4 and report["steps"] == 8 and report["tick_ms"] > 0
    for klass in ("rebuild", "submission", "steps", "step", "decode"):
        assert {"onset_ticks", "convergence_ticks", "gap_ticks", "dead_ticks"} <= set(report["classes"][klass])


def test_step_class_is_felt_next_tick_and_converges_in_s(report):
    step = report["classes"]["step"]
    assert (step["onset_ticks"], step["convergence_ticks"], step["dead_ticks"]) == (1, 8, 0)


def test_submission_class_has_no_dead_air(report):
    sub = report["classes"]["submission"]
    assert sub["dead_ticks"] == 0 and sub["dead_ticks_max"] == 0
    assert sub["onset_ticks"] == sub["onset_ticks_max"] == 8  # express lane: S ticks at every phase


def test_loop_length_rebuild_has_dead_air(report):
    rebuild, steps = report["classes"]["rebuild"], report["steps"]
    assert rebuild["probe"] == "loop_length"
    # S - 1 ticks without any completion, S - 2 of them beyond the normal one-tick cadence gap
    assert rebuild["gap_ticks"] >= steps - 1 and rebuild["dead_ticks"] >= steps - 2


def test_steps_change_is_a_submission_without_dead_air(report):
    steps = report["classes"]["steps"]
    assert steps["class"] == "submission" and steps["dead_ticks"] == 0 and steps["dead_ticks_max"] == 0
    assert steps["onset_ticks"] == 10  # the first slot born with 10 steps, at the very next tick (express lane)


def test_decode_class_is_next_decode(report):
    assert report["classes"]["decode"]["onset_ticks"] == 1 and report["classes"]["decode"]["convergence_ticks"] == 1


def test_sweep_per_slot_keeps_throughput_baseline_starves(report):
    sweep = report["sweep"]
    assert sweep["per_slot_completions"] == sweep["ticks"] * 4 // 8
    assert sweep["baseline_completions"] <= 1


def test_identity_bench_is_exactly_zero(capsys):
    assert identity_bench.main(["--json", "--requests", "5"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["ode_max_abs_diff"] == 0.0 and result["sde_max_abs_diff"] == 0.0 and result["cfg_max_abs_diff"] == 0.0
