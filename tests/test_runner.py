"""The runner: tick thread, asyncio facade, pause/resume, error recovery, version tagging."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time

import numpy as np
import pytest

from demon_nb.live.player import Patch
from demon_nb.live.runner import Runner
from demon_nb.models import load
from helpers import FailingDenoiser, wait_until

FRAMES, CHANNELS = 16, 4



def run_coroutine(coro):
    """``asyncio.run`` on a fresh thread: a session-wide Playwright loop may own this thread's loop."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()

@pytest.fixture
def model():
    return load("analytic", frames=FRAMES, channels=CHANNELS)


@pytest.fixture
def runner(model):
    r = Runner(model, depth=2, steps=4, max_ticks_per_s=200)
    yield r
    r.stop()


def test_ticks_continue_while_the_main_thread_sleeps(runner):
    runner.start()
    assert wait_until(lambda: runner.ring.tick_count > 0)
    before = runner.ring.tick_count
    time.sleep(0.5)                          # a blocking cell
    assert runner.ring.tick_count >= before + 10
    assert runner.alive and threading.current_thread() is threading.main_thread()


def test_await_completion(runner):
    runner.start()
    completion = run_coroutine(asyncio.wait_for(runner.completion(), 10))
    assert tuple(completion.latent.shape) == (FRAMES, CHANNELS)
    assert completion.request.version == runner.controls.version
    assert not runner._consumers                # the consumer is removed afterwards


def test_async_for_patches(runner):
    async def take(n):
        out = []
        async for patch in runner.patches():
            out.append(patch)
            if len(out) == n:
                break
        return out

    runner.start()
    patches = run_coroutine(asyncio.wait_for(take(3), 10))
    assert len(patches) == 3 and all(isinstance(p, Patch) for p in patches)
    ids = [p.completion_id for p in patches]
    assert ids == sorted(ids) and len(set(ids)) == 3
    assert all(p.pcm.shape[0] == runner.model.codec.audio_channels and p.pcm.dtype == np.float32 for p in patches)


def test_pause_and_resume(runner):
    runner.start()
    assert wait_until(lambda: runner.ring.tick_count > 2)
    runner.pause()
    time.sleep(0.2)                            # let a tick in progress finish
    paused_at = runner.ring.tick_count
    time.sleep(0.3)
    assert runner.paused and runner.ring.tick_count == paused_at
    runner.resume()
    assert wait_until(lambda: runner.ring.tick_count > paused_at + 5)
    runner.stop()
    assert not runner.alive


def test_an_exception_in_the_denoiser_surfaces_and_the_stream_recovers(model):
    flaky = FailingDenoiser(model.denoiser)
    runner = Runner(dataclasses.replace(model, denoiser=flaky), depth=2, steps=4, max_ticks_per_s=200)
    seen = []
    runner.on_error(seen.append)
    try:
        runner.start()
        assert wait_until(lambda: runner.completions >= 1)
        flaky.failing.set()
        assert wait_until(lambda: len(runner.errors) >= 3)
        flaky.failing.clear()
        after = runner.completions
        assert wait_until(lambda: runner.completions >= after + 3)
        assert runner.alive
        assert "injected failure" in runner.errors[0].message and "RuntimeError" in runner.errors[0].message
        assert seen and seen[0] is runner.errors[0]
        assert runner.metrics()["errors"] == len(runner.errors)
    finally:
        runner.stop()


def test_patches_are_tagged_with_the_versions_they_were_rendered_under(runner):
    patches: list[Patch] = []
    runner.on_patch(patches.append)
    runner.start()
    assert wait_until(lambda: len(patches) >= 2)
    first = patches[0].versions
    state_v = runner.set("velocity_scale", 1.3)
    submission_v = runner.set("denoise", 0.5)
    assert state_v > first["state"] and submission_v > first["submission"]
    assert wait_until(lambda: any(p.versions["state"] >= state_v and p.versions["submission"] >= submission_v
                                  for p in list(patches)))
    states = [p.versions["state"] for p in patches]
    assert states == sorted(states)            # versions only go forward
    assert any(p.versions["state"] < state_v for p in patches)


def test_metrics(runner):
    runner.start()
    assert wait_until(lambda: runner.completions >= 4)
    m = runner.metrics()
    assert m["tick_ms"] > 0 and m["completions"] >= 4 and m["depth"] == 2 and m["steps"] == 4


def test_a_write_ends_the_tick_rate_pause(model):
    """With one tick per 20 s allowed, a control write still starts the next tick at once."""
    r = Runner(model, depth=2, steps=4, max_ticks_per_s=0.05)
    try:
        r.start()
        assert wait_until(lambda: r.ring.tick_count == 1)
        time.sleep(0.2)
        assert r.ring.tick_count == 1  # pausing
        r.set("velocity_scale", 1.1)
        assert wait_until(lambda: r.ring.tick_count == 2, timeout=5.0)
    finally:
        r.stop()


def test_a_step_write_is_patched_at_the_first_tick_that_reads_it(model):
    """After a tick without a patch, a step write is heard from the very next tick: its completion,
    or a preview when no slot finishes; the next completion then replaces the preview whatever the
    patch budget says. A write that lands while a tick whose completion is patched unchanged runs is
    previewed at the next tick; in a sweep (a write before every tick) a tick right after a patch
    with a new value sends no preview. Previews are not completions and are never acked."""
    import torch

    runner = Runner(model, depth=4, steps=8, patch_interval_s=0.49)   # the budget alone would skip most
    patches = []
    runner.on_patch(patches.append)
    finished = 0

    def step():
        nonlocal finished
        before = len(patches)
        done = runner.step()
        finished += len(done)
        return done, len(patches) > before

    with torch.inference_mode():
        for _ in range(12):
            step()
        for trial in range(6):
            for _ in range(trial % 2):
                step()                                 # writes land at both phases of the cadence
            while step()[1]:
                pass                                   # the last tick sent no patch
            before = len(patches)
            version = runner.set("velocity_scale", 1.0 + trial / 10)
            done, _ = step()
            assert len(patches) == before + 1 and patches[-1].versions["state"] == version, (done, patches[-1])
            if not done:                               # a preview, never acked; the next completion replaces it
                assert patches[-1].completion_id < 0
                completions = runner.completions
                while runner.completions == completions:
                    step()
                assert len(patches) == before + 2 and patches[-1].versions["state"] == version
        # a write during a tick whose completion is patched unchanged (the budget's patch): previewed next tick
        runner.player.patch_interval_s = 0.0            # every completion is patched
        heard = patches[-1].versions["state"]
        while not all(step()):
            pass
        assert patches[-1].versions["state"] == heard and patches[-1].completion_id >= 0
        version = runner.set("velocity_scale", 0.6)   # as if it had landed while that tick ran
        done, patched = step()
        assert not done and patched and patches[-1].versions["state"] == version, done
        # a sweep: no preview at the tick right after a patch that carried a new value
        fresh_before = False
        for i in range(12):
            runner.set("velocity_scale", 0.5 + i / 20)
            done, patched = step()
            if fresh_before:
                assert done or not patched, i
            fresh_before = patched
        assert any(p.completion_id >= 0 for p in patches[-4:])
    assert runner.metrics()["previews"] == runner.previews >= 1 and runner.completions == finished
