"""`bench controls`: every control the instrument offers is alive (its precondition met), on mini."""

import json

import pytest

from demon_nb.bench import controls as controls_bench
from demon_nb.engine.control_table import CONTROLS, NEEDS


@pytest.fixture(scope="module")
def report():
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert controls_bench.main(["--json"]) == 0
    return json.loads(out.getvalue())


def test_every_control_is_reported_with_its_class_and_need(report):
    assert report["model"] == "mini" and set(report["controls"]) == set(CONTROLS)
    for name, row in report["controls"].items():
        assert row["class"] == CONTROLS[name].klass and row["needs"] == CONTROLS[name].needs
        assert row["needs"] is None or row["needs"] in NEEDS


def test_no_control_is_inert(report):
    assert report["inert"] == []
    assert all(row["alive"] and row["onset_ticks"] >= 1 for row in report["controls"].values())


def test_onsets_follow_the_classes(report):
    rows, steps = report["controls"], report["steps"]
    # step: the next completion (every S/D = 2 ticks), except the x0-target gate, felt by the first
    # slot still before the gate; decode: the next completion's decode
    assert all(r["onset_ticks"] <= 2 for n, r in rows.items() if r["class"] in ("step", "decode") and n != "x0_target_gate")
    assert rows["x0_target_gate"]["onset_ticks"] <= steps // 2
    # submission writes take the express lane: first heard from a first look of `first_look` steps
    # (default 4; the first_look probe itself is 2), never sooner: an earlier onset means state
    # leaked between runs (e.g. an adapter left in the shared model)
    look = CONTROLS["first_look"].default
    assert all(r["onset_ticks"] == look for n, r in rows.items() if r["class"] == "submission" and n != "first_look")
    assert rows["first_look"]["onset_ticks"] == 2 < look < steps
