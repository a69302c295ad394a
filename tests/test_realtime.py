"""The instrument warns when the hardware cannot keep up in real time (issue 6)."""

import time

from demon_nb.live.runner import Runner, realtime_warning
from demon_nb.models import load
from helpers import DenoiserWrapper


def test_warning_only_past_the_budget():
    assert realtime_warning(30.0, 10.0, 8, samples=50) is None
    message = realtime_warning(400.0, 50.0, 8, samples=50)
    assert "too slow" in message and "400 ms" in message
    assert realtime_warning(400.0, 50.0, 8, samples=3) is None  # not enough measurements yet


class SlowDenoiser(DenoiserWrapper):
    """Slowed down to 300 ms per forward."""

    def velocity(self, x, t, cond):
        time.sleep(0.3)
        return super().velocity(x, t, cond)


def test_slow_model_raises_the_warning_in_metrics():
    model = load("analytic", frames=16)
    fast = Runner(model, prompt="1")
    for _ in range(10):
        fast.step()
    assert fast.metrics()["warning"] is None
    model.denoiser = SlowDenoiser(model.denoiser)
    slow = Runner(model, prompt="1")
    for _ in range(9):
        slow.step()
    assert "too slow" in slow.metrics()["warning"]
