"""``python -m demon_nb render``: offline renders through the ring at depth 1."""

import importlib

import numpy as np
import pytest
import soundfile as sf

from demon_nb.models.acestep import tiny
from demon_nb.render import main


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return tiny.write_official(tmp_path_factory.mktemp("ckpt"), seed=0)


def _render(tmp_path, name, *extra):
    out = tmp_path / name
    assert main(list(extra) + ["--out", str(out)]) == 0
    data, rate = sf.read(str(out), always_2d=True)
    return data, rate


def test_acestep_render_writes_wav_and_source_changes_it(ckpt, tmp_path):
    base = ["--model", "acestep", "--checkpoints", str(ckpt), "--prompt", "dusty lofi piano", "--seconds", "1"]
    a, rate = _render(tmp_path, "a.wav", *base, "--seed", "0")
    assert rate == 48000 and a.shape == (48000, 2)
    assert np.abs(a).max() > 1e-3 and np.isfinite(a).all()
    # a source (cover, denoise 0.6) changes the render
    t = np.arange(48000) / 48000
    sf.write(str(tmp_path / "src.wav"), 0.5 * np.sin(2 * np.pi * 330 * t), 44100)  # mono, other rate
    c, rate = _render(tmp_path, "c.wav", *base, "--seed", "0", "--source", str(tmp_path / "src.wav"),
                      "--denoise", "0.6")
    assert rate == 48000 and c.shape == a.shape
    assert np.abs(a - c).max() > 1e-4


def test_loop_length_follows_the_source(ckpt, tmp_path):
    sf.write(str(tmp_path / "src.wav"), np.random.default_rng(0).normal(0, 0.1, (48000 // 2 + 100, 2)), 48000)
    data, _ = _render(tmp_path, "d.wav", "--checkpoints", str(ckpt), "--prompt", "noise",
                      "--source", str(tmp_path / "src.wav"), "--denoise", "0.5")
    assert data.shape[0] == ((48000 // 2 + 100) // 1920) * 1920


@pytest.mark.parametrize("extra, message", [
    (["--denoise", "0.5"], "--denoise"),
    (["--source", "/no/such/file.wav"], "--source"),
    (["--seconds", "-3"], "--seconds"),
])
def test_bad_arguments_are_reported(ckpt, tmp_path, capsys, extra, message):
    code = main(["--checkpoints", str(ckpt), "--prompt", "x", "--out", str(tmp_path / "x.wav")] + extra)
    assert code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "x.wav").exists()


def test_mini_render(tmp_path):
    mini = importlib.import_module("demon_nb.models.mini")
    if not hasattr(mini, "load"):
        pytest.skip("the built-in model is not there yet")
    data, rate = _render(tmp_path, "m.wav", "--model", "mini", "--prompt", "warm pads", "--seed", "2")
    assert data.shape[0] > 0 and np.abs(data).max() > 1e-4
