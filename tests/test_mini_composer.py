"""Composer: determinism, variety, keys, tempo measurability, normalization, bad arguments."""

import numpy as np
import pytest
import torch

from demon_nb.models.mini import layout as L
from demon_nb.models.mini.composer import STYLE_NAMES, compose, compose_raw
from demon_nb.models.mini.metrics import backbeat_phase, beat_grid, estimate_bpm, key_share


def test_deterministic_by_seed():
    a, b = compose(123), compose(123)
    assert torch.equal(a[0], b[0]) and a[1] == b[1] and a[2] == b[2]
    assert not torch.equal(a[0], compose(124)[0])


def test_shape_and_loop_length():
    z, caption, meta = compose(0)
    assert z.shape == (250, 64) and z.dtype == torch.float32
    assert z.shape[0] / L.FRAME_RATE >= 8.0
    assert set(meta) >= {"key", "mode", "bpm", "style"}


def test_variety_over_seeds():
    metas = [compose_raw(s)[2] for s in range(120)]
    assert len({m["style"] for m in metas}) >= 8
    assert {m["mode"] for m in metas} == {"major", "minor"}
    assert len({(m["key"], m["mode"]) for m in metas}) >= 20
    bpms = [m["bpm"] for m in metas]
    assert min(bpms) >= 70 and max(bpms) <= 160 and len(set(bpms)) > 30


@pytest.mark.parametrize("mode", ["major", "minor"])
def test_all_keys_are_diatonic(mode):
    for tonic in range(12):
        raw, caption, meta = compose_raw(tonic, tonic=tonic, mode=mode)
        assert meta["key"] == tonic and meta["mode"] == mode
        assert key_share(raw, tonic, mode) == pytest.approx(1.0)
        assert mode in caption and f"{meta['bpm']} bpm" in caption


def test_other_key_scores_lower():
    raw, _, meta = compose_raw(7, tonic=0, mode="major")
    assert key_share(raw, 1, "major") < 0.7


def test_tempo_is_measurable():
    hits = []
    for s in range(1000, 1030):
        raw, _, meta = compose_raw(s)
        hits.append(abs(estimate_bpm(raw) - meta["bpm"]) <= 0.04 * meta["bpm"])
    assert np.mean(hits) >= 0.95


def test_groove_clock_follows_the_drums():
    """The composer's clock channels agree with the beat grid recovered from its kick + snare."""
    for s in range(1100, 1110):
        raw, _, meta = compose_raw(s)
        bpm, phase = beat_grid(raw)
        assert abs(bpm - meta["bpm"]) <= 0.01 * meta["bpm"]
        rebuilt = L.clock(raw.shape[0], bpm, backbeat_phase(raw, bpm, phase))
        assert np.corrcoef(rebuilt.ravel(), raw[:, L.CLOCK].ravel())[0, 1] > 0.95
        kicks = np.nonzero(raw[:, L.KICK] > 0)[0]
        assert (raw[kicks, L.BEAT_COS] > 0.8).all()  # kicks sit on the beat


def test_beat_grid_without_a_beat():
    raw = compose_raw(1200)[0]
    assert np.isnan(beat_grid(raw[:40])[0])  # shorter than two beats at 60 bpm
    quiet = raw.copy()
    quiet[:, L.DRUMS] = 0.0
    assert np.isnan(beat_grid(quiet)[0])
    broken = raw.copy()
    broken[::7, L.KICK] = np.nan  # non-finite values count as no hit
    assert np.isfinite(beat_grid(broken)[0])


def test_every_style_by_name():
    for name in STYLE_NAMES:
        raw, caption, meta = compose_raw(3, style=name)
        assert meta["style"] == name and name in caption
        assert raw[:, L.DRUMS].max() > 0 and raw[:, L.PITCHED].max() > 0


def test_normalized_over_composer_data():
    data = torch.cat([compose(s)[0] for s in range(2000, 2040)])
    mean, std = data.mean(0), data.std(0)
    assert (mean.abs() < 0.5).float().mean() >= 0.9
    busy = std > 0.3  # rarely-used edge notes have a floored std
    assert busy.sum() >= 50
    assert ((std[busy] > 0.6) & (std[busy] < 1.6)).float().mean() >= 0.9


def test_bad_arguments():
    with pytest.raises(ValueError, match="style"):
        compose(0, style="polka")
    with pytest.raises(ValueError, match="mode"):
        compose(0, mode="dorian")
    with pytest.raises(ValueError, match="frames"):
        compose(0, frames=0)
    with pytest.raises(ValueError, match="bpm"):
        compose(0, bpm=1000)
