import pytest

from demon_nb.engine.schedule import _cached_timesteps, check_explicit_timesteps, timesteps

# DESIGN.md section 3, S = 8, shift k = 3
ORACLE = {
    1.0: [1, .9545, .9, .8333, .75, .6429, .5, .3, 0],
    0.7: [.8889, .84, .7826, .7143, .6316, .5294, .4, .2308, 0],
    0.5: [.75, .7, .6429, .5769, .5, .4091, .3, .1667, 0],
}


@pytest.mark.parametrize("denoise", sorted(ORACLE))
def test_schedule_table(denoise):
    assert timesteps(8, 3.0, denoise) == pytest.approx(ORACLE[denoise], abs=1e-4)


def test_schedule_keeps_all_steps_and_ends_at_zero():
    for d in (0.05, 0.3, 0.99):
        ts = timesteps(8, 3.0, d)
        assert len(ts) == 9 and ts[-1] == 0.0
        assert all(a > b for a, b in zip(ts, ts[1:]))


def test_shift_one_is_linear():
    assert timesteps(4, 1.0, 1.0) == pytest.approx([1, .75, .5, .25, 0])


def test_near_zero_denoise_is_all_zero():
    assert timesteps(8, 3.0, 0.0004) == (0.0,) * 9


def test_cache_is_bounded_by_quantization():
    _cached_timesteps.cache_clear()
    for i in range(5000):
        timesteps(8, 3.0, 0.5 + i * 1e-7)  # all quantize to 0.5
    assert _cached_timesteps.cache_info().currsize == 1
    assert _cached_timesteps.cache_info().maxsize is not None


@pytest.mark.parametrize("kwargs, name", [
    (dict(steps=0), "steps"), (dict(steps=2.5), "steps"), (dict(shift=float("nan")), "shift"),
    (dict(denoise=1.5), "denoise"), (dict(denoise=-0.1), "denoise"),
])
def test_bad_schedule_arguments_name_the_parameter(kwargs, name):
    args = dict(steps=8, shift=3.0, denoise=1.0) | kwargs
    with pytest.raises(ValueError, match=name):
        timesteps(**args)


def test_explicit_timesteps_validation():
    assert check_explicit_timesteps([1.0, 0.5, 0]) == (1.0, 0.5, 0.0)
    for bad in ([1.0], [0.5, 0.7, 0], [1.0, 0.5, 0.1], [1.0, float("inf"), 0], "abc"):
        with pytest.raises(ValueError, match="timesteps"):
            check_explicit_timesteps(bad)
