import numpy as np
import pytest
import soundfile as sf

from demon_nb.live.player import LoopMirror, Patch
from demon_nb.live.recorder import Recorder


def ramp_mirror(loop=1000, channels=2):
    m = LoopMirror(loop, channels, fade=0)
    pcm = np.tile(np.linspace(-0.9, 0.9, loop, dtype=np.float32), (channels, 1))
    pcm[1] *= -1
    m.apply(Patch(0, pcm))
    return m


def test_write_and_close_produces_valid_wav(tmp_path):
    path = tmp_path / "take.wav"
    rng = np.random.default_rng(0)
    pcm = rng.uniform(-0.5, 0.5, (2, 4800)).astype(np.float32)
    rec = Recorder(path, 48000, 2, subtype="FLOAT")
    rec.write(pcm[:, :1000])
    rec.write(pcm[:, 1000:])
    assert not path.exists()                      # only the temp file exists until close
    assert rec.close() == path
    data, sr = sf.read(path, dtype="float32")
    assert sr == 48000 and data.shape == (4800, 2)
    np.testing.assert_array_equal(data.T, pcm)
    assert list(tmp_path.iterdir()) == [path]     # temp file renamed away


def test_follow_records_mirror_between_playheads_with_wrap(tmp_path):
    m = ramp_mirror()
    path = tmp_path / "heard.wav"
    with Recorder(path, 1000, 2, subtype="FLOAT") as rec:
        assert rec.follow(m, 900) == 0            # first call sets the position
        assert rec.follow(m, 100) == 200          # wraps around the loop end
        assert rec.follow(m, 100, elapsed=1000) == 1000   # one full loop
    data, _ = sf.read(path, dtype="float32")
    expect = np.concatenate([m.read(900, 200), m.read(100, 1000)], axis=1)
    np.testing.assert_allclose(data.T, expect, atol=1e-7)


def test_exception_leaves_no_file(tmp_path):
    path = tmp_path / "broken.wav"
    with pytest.raises(RuntimeError):
        with Recorder(path, 48000, 2) as rec:
            rec.write(np.zeros((2, 100), np.float32))
            raise RuntimeError("crash mid-recording")
    assert list(tmp_path.iterdir()) == []


def test_existing_file_survives_until_new_recording_completes(tmp_path):
    path = tmp_path / "take.wav"
    sf.write(path, np.zeros((10, 2), np.float32), 8000)
    rec = Recorder(path, 48000, 2)
    rec.write(np.full((2, 50), 0.25, np.float32))
    assert sf.info(path).frames == 10             # old take intact while recording
    rec.close()
    assert sf.info(path).frames == 50 and sf.info(path).samplerate == 48000


def test_pcm16_clips_out_of_range(tmp_path):
    path = tmp_path / "c.wav"
    with Recorder(path, 8000, 1) as rec:
        rec.write(np.array([[2.0, -3.0, 0.5]], np.float32))
    data, _ = sf.read(path, dtype="float32")
    assert data.max() <= 1.0 and data.min() == -1.0 and abs(data[2] - 0.5) < 1e-4


@pytest.mark.parametrize("kwargs, word", [
    (dict(path="x.mp3"), "wav"),
    (dict(subtype="MP3"), "subtype"),
    (dict(sample_rate=0), "sample_rate"),
    (dict(channels=0), "channels"),
])
def test_bad_arguments(tmp_path, kwargs, word):
    args = dict(path=tmp_path / "a.wav", sample_rate=48000, channels=2)
    if "path" in kwargs:
        kwargs = dict(kwargs, path=tmp_path / kwargs["path"])
    args.update(kwargs)
    with pytest.raises(ValueError, match=word):
        Recorder(**args)
    assert list(tmp_path.iterdir()) == []


def test_bad_writes(tmp_path):
    rec = Recorder(tmp_path / "a.wav", 8000, 2)
    with pytest.raises(ValueError, match="shape"):
        rec.write(np.zeros((1, 10), np.float32))
    with pytest.raises(ValueError, match="finite"):
        rec.write(np.full((2, 10), np.nan, np.float32))
    rec.abort()
    with pytest.raises(ValueError, match="closed"):
        rec.write(np.zeros((2, 10), np.float32))
    assert list(tmp_path.iterdir()) == []


def test_status_callback_records_rendered_span(tmp_path):
    m = ramp_mirror()
    path = tmp_path / "s.wav"
    rec = Recorder(path, 1000, 2, subtype="FLOAT")
    cb = rec.status_callback(m)
    cb({"playhead": 100, "rendered": 5000})       # sets the position
    cb({"playhead": 400, "rendered": 5300})
    cb({"playhead": 400, "rendered": 6300})       # exactly one loop later
    rec.close()
    data, _ = sf.read(path, dtype="float32")
    np.testing.assert_allclose(data.T, np.concatenate([m.read(100, 300), m.read(400, 1000)], axis=1), atol=1e-7)
