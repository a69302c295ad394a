"""A short soak in CI (the 600 s one is `python -m demon_nb bench soak`): random control
changes at 20 Hz, including prompts, sources, depth and steps, on the built-in model."""

import json

from demon_nb.bench import soak


def test_short_soak_has_no_exception_no_nan_and_no_stall(capsys):
    assert soak.main(["--json", "--seconds", "20", "--seed", "3"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["model"] == "mini"
    assert report["changes"] > 200 and report["rejected"] > 0  # it did write, and some writes were bad on purpose
    assert report["exceptions"] == 0, report.get("first_error")
    assert report["nan_patches"] == 0 and report["completions"] > 100
    assert report["stalls_over_500ms"] == 0, report["max_gap_ms"]
