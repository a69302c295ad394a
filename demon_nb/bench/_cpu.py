"""Where the CPU goes during a browser run: per process group and per kernel thread (psutil).

``CpuProfile(server_pid)`` finds the processes of a ``bench ear`` run on this machine: the
kernel (a child of the Jupyter server running ``ipykernel``), the server itself, and
Chromium's processes (children of this bench process), grouped by Chromium's ``--type``
(browser, renderer, gpu-process, utility, ...). ``start()`` and ``stop()`` read their CPU
times; ``report(thread_names)`` gives cores used per group (CPU seconds / wall seconds) and
per kernel thread, named by the kernel's own ``threading`` names (``{native_id: name}``).
"""

from __future__ import annotations

import os
import time

import psutil

THREAD_GROUPS = {"demon-tick": "tick", "demon-views": "views", "MainThread": "main thread (cells)"}


def _cpu_seconds(proc: psutil.Process) -> float:
    times = proc.cpu_times()
    return times.user + times.system


def chromium_group(proc: psutil.Process) -> str:
    """``chromium <type>`` from the process's ``--type=`` flag (none: the browser process)."""
    for arg in proc.cmdline():
        if arg.startswith("--type="):
            return f"chromium {arg[len('--type='):]}"
    return "chromium browser"


class CpuProfile:
    def __init__(self, server_pid: int):
        self.server = psutil.Process(server_pid)
        self.kernel: psutil.Process | None = None
        self._start: dict | None = None
        self._stop: dict | None = None

    def _processes(self) -> dict[int, tuple[str, psutil.Process]]:
        found = {self.server.pid: ("jupyter server", self.server)}
        for child in self.server.children(recursive=True):
            try:
                if any("ipykernel" in part for part in child.cmdline()):
                    found[child.pid] = ("kernel", child)
                    self.kernel = child
            except psutil.Error:
                continue
        for child in psutil.Process(os.getpid()).children(recursive=True):
            try:
                if "chrom" in child.name():
                    found[child.pid] = (chromium_group(child), child)
                elif child.pid not in found:
                    found[child.pid] = ("bench driver (playwright)", child)
            except psutil.Error:
                continue
        return found

    def _read(self) -> dict:
        cpu: dict[int, tuple[str, float]] = {}
        for pid, (group, proc) in self._processes().items():
            try:
                cpu[pid] = (group, _cpu_seconds(proc))
            except psutil.Error:
                continue
        threads: dict[int, float] = {}
        if self.kernel is not None:
            try:
                threads = {t.id: t.user_time + t.system_time for t in self.kernel.threads()}
            except psutil.Error:
                pass
        return {"at": time.monotonic(), "cpu": cpu, "threads": threads, "machine": psutil.cpu_times()}

    def start(self) -> None:
        self._start = self._read()

    def stop(self) -> None:
        self._stop = self._read()

    def report(self, thread_names: dict[int, str] | None = None) -> dict:
        """Cores used per process group and per kernel thread over [start, stop], the kernel's
        share of the CPU all of them used (``kernel_cpu_share``) and the machine's idle share."""
        a, b = self._start, self._stop
        if a is None or b is None:
            raise ValueError("report: call start() and stop() first")
        wall = max(1e-9, b["at"] - a["at"])
        groups: dict[str, float] = {}
        for pid, (group, seconds) in b["cpu"].items():
            before = a["cpu"].get(pid, (group, 0.0))[1]
            groups[group] = groups.get(group, 0.0) + max(0.0, seconds - before)
        total = sum(groups.values())
        names = {int(k): v for k, v in (thread_names or {}).items()}
        threads: dict[str, float] = {}
        for tid, seconds in b["threads"].items():
            name = names.get(tid, "other")
            group = THREAD_GROUPS.get(name, "other (ipykernel's message, iopub and heartbeat threads, ...)")
            threads[group] = threads.get(group, 0.0) + max(0.0, seconds - a["threads"].get(tid, 0.0))
        ma, mb = a["machine"], b["machine"]
        machine_total = sum(mb) - sum(ma)
        idle = (mb.idle + getattr(mb, "iowait", 0.0)) - (ma.idle + getattr(ma, "iowait", 0.0))
        return {
            "wall_s": round(wall, 1),
            "cores": {g: round(s / wall, 3) for g, s in sorted(groups.items(), key=lambda kv: -kv[1])},
            "kernel_threads_cores": {g: round(s / wall, 3) for g, s in sorted(threads.items(), key=lambda kv: -kv[1])},
            "kernel_cpu_share": round(groups.get("kernel", 0.0) / total, 3) if total else None,
            "machine_idle_share": round(idle / machine_total, 3) if machine_total > 0 else None,
        }
