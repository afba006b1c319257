"""Peak RSS (sampled) and CPU seconds of the processes of a deployment, with psutil.

``ProcessSampler({"orders-web": ("web", pid), ...})`` samples every process's RSS every
``interval`` seconds on a thread of its own and keeps the peak; ``cpu()`` reads the CPU
seconds each process has used so far (for infrastructure trees such as PostgreSQL, whose
backends come and go, ``tree=True`` also counts reaped children, from the parent's
``children_user``/``children_system`` times), so the difference of two readings is what a
phase cost each process.
"""

from __future__ import annotations

import threading
import time

import psutil

MIB = 2**20


class ProcessSampler:
    def __init__(self, processes: dict[str, tuple[str, int]], *, interval: float = 0.1,
                 trees: dict[str, int] | None = None):
        """``processes``: name -> (kind, pid), sampled for RSS; ``trees``: name -> pid of
        a process whose whole tree is counted for CPU only (databases, broker, gateway)."""
        self.kinds = {name: kind for name, (kind, _) in processes.items()}
        self.procs = {name: psutil.Process(pid) for name, (_, pid) in processes.items()}
        self.trees = {name: psutil.Process(pid) for name, pid in (trees or {}).items()}
        self.interval = interval
        self.peak: dict[str, int] = {}
        self.first: dict[str, int] = {}
        self.samples = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _sample(self) -> None:
        for name, proc in self.procs.items():
            try:
                rss = proc.memory_info().rss
            except psutil.Error:
                continue  # exited: keep what we saw
            self.first.setdefault(name, rss)
            if rss > self.peak.get(name, 0):
                self.peak[name] = rss
        self.samples += 1

    def _loop(self) -> None:
        while not self._stop.is_set():
            began = time.monotonic()
            self._sample()
            self._stop.wait(max(0.0, self.interval - (time.monotonic() - began)))

    def start(self) -> ProcessSampler:
        self._sample()
        self._thread = threading.Thread(target=self._loop, name="rss-sampler", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        self._sample()

    # --- CPU ---------------------------------------------------------------------------
    @staticmethod
    def cpu_of(proc: psutil.Process, *, tree: bool) -> float:
        try:
            times = proc.cpu_times()
            total = times.user + times.system
            if tree:
                total += times.children_user + times.children_system
                for child in proc.children(recursive=True):
                    try:
                        child_times = child.cpu_times()
                        total += child_times.user + child_times.system
                    except psutil.Error:
                        pass
            return total
        except psutil.Error:
            return float("nan")

    def cpu(self) -> dict[str, float]:
        """CPU seconds (user + system) used so far by each process (and each tree)."""
        result = {name: self.cpu_of(proc, tree=False) for name, proc in self.procs.items()}
        result |= {name: self.cpu_of(proc, tree=True) for name, proc in self.trees.items()}
        return result

    # --- results -----------------------------------------------------------------------
    def peaks_mib(self) -> dict[str, float]:
        return {name: round(rss / MIB, 1) for name, rss in sorted(self.peak.items())}

    def start_mib(self) -> dict[str, float]:
        return {name: round(rss / MIB, 1) for name, rss in sorted(self.first.items())}

    def peak_by_kind_mib(self) -> dict[str, float]:
        """The largest peak of any one process of each kind (web, worker, relay, ...)."""
        result: dict[str, float] = {}
        for name, rss in self.peak.items():
            kind = self.kinds[name]
            result[kind] = max(result.get(kind, 0.0), round(rss / MIB, 1))
        return dict(sorted(result.items()))


def cpu_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {name: round(after[name] - before.get(name, 0.0), 3) for name in after}
