"""``train-mini``: reproducible step by step, fine-tunes from a weights folder, clear errors on bad flags."""

import json

import pytest
from safetensors.torch import load_file

from demon_nb.models.mini import train as T


def small_run(tmp_path, name, **options):
    out = tmp_path / name
    info = T.train(1.0, options.pop("seed", 0), out, resume=False, checkpoint=tmp_path / f"{name}-ckpt", batch=2,
                   steps=options.pop("steps", 2), progress=False, threads=1, **options)
    return info, load_file(str(out / "model.safetensors"))


def max_diff(a, b):
    return max((a[k] - b[k]).abs().max().item() for k in a)


def test_fixed_steps_replay_the_same_batches(tmp_path):
    info, first = small_run(tmp_path, "a", drum_weight=3.0, bass_weight=2.0)
    _, again = small_run(tmp_path, "b", drum_weight=3.0, bass_weight=2.0)
    _, other_weights = small_run(tmp_path, "c")
    assert max_diff(first, again) == 0.0
    assert max_diff(first, other_weights) > 0.0  # the loss weights are live
    assert info["steps"] == 2 and info["drum_weight"] == 3.0 and info["bass_weight"] == 2.0 and info["init"] is None


def test_init_fine_tunes_from_the_given_weights_and_records_them(tmp_path):
    shipped = load_file(str(T.WEIGHTS_DIR / "model.safetensors"))
    info, tuned = small_run(tmp_path, "ft", init=T.WEIGHTS_DIR, peak_lr=1e-7, seed=1)
    _, scratch = small_run(tmp_path, "scratch", peak_lr=1e-7, seed=1)
    assert max_diff(tuned, shipped) < 1e-3 < max_diff(scratch, shipped)
    record = json.loads((tmp_path / "ft" / "config.json").read_text())["training"]["init"]
    assert len(record["sha256"]) == 64 and record["training"]["steps"] > 0


def test_the_key_loss_is_live_and_its_profile_folds_octaves(tmp_path):
    import torch

    from demon_nb.models.mini import layout as L
    from demon_nb.models.mini.norm import MEAN, STD

    raw = torch.zeros(1, 4, 64)
    raw[0, :, 0] = 1.0                                  # MIDI 36 (C) ...
    raw[0, :, 24] = 1.0                                 # ... and 60 (C) at equal amplitude, ...
    raw[0, :, 7] = 2.0                                  # ... MIDI 43 (G) at twice it
    x = (raw - torch.tensor(MEAN)) / torch.tensor(STD)
    profile = T.pitch_class_profile(x)[0]
    assert L.pitch_class(7) == 7 and profile.sum().item() == pytest.approx(1.0)
    assert profile[0].item() == pytest.approx(2 / 6, abs=1e-5) and profile[7].item() == pytest.approx(4 / 6, abs=1e-5)
    _, plain = small_run(tmp_path, "plain")
    info, keyed = small_run(tmp_path, "keyed", key_weight=100.0)
    assert info["key_weight"] == 100.0 and max_diff(plain, keyed) > 0.0


@pytest.mark.parametrize("argv, message", [
    (["--bass-weight", "-1"], "--bass-weight"),
    (["--drum-weight", "nan"], "--drum-weight"),
    (["--peak-lr", "0"], "--peak-lr"),
    (["--key-weight", "-0.5"], "--key-weight"),
    (["--init", "/nonexistent"], "--init"),
])
def test_bad_flags_name_the_flag(argv, message, capsys):
    with pytest.raises(SystemExit):
        T.main(argv + ["--steps", "1"])
    assert message in capsys.readouterr().err
