"""Test helpers: denoiser wrappers that inject faults, and polling."""

import threading
import time


class DenoiserWrapper:
    """Delegates ``velocity``, ``collate``, ``unconditional``, ``cover_context`` and ``channels`` to ``inner``."""

    def __init__(self, inner):
        self.inner, self.channels = inner, inner.channels

    def velocity(self, x, t, cond):
        return self.inner.velocity(x, t, cond)

    def collate(self, conds, contexts):
        return self.inner.collate(conds, contexts)

    def unconditional(self):
        return self.inner.unconditional()

    def cover_context(self, source):
        return self.inner.cover_context(source)


class FailingDenoiser(DenoiserWrapper):
    """Raises ``RuntimeError("injected failure")`` while ``failing`` is set."""

    def __init__(self, inner):
        super().__init__(inner)
        self.failing = threading.Event()

    def velocity(self, x, t, cond):
        if self.failing.is_set():
            raise RuntimeError("injected failure")
        return super().velocity(x, t, cond)


def wait_until(predicate, timeout: float = 10.0) -> bool:
    """Poll ``predicate`` every 10 ms; False if it is still false after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True
