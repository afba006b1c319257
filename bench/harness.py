"""What every scenario shares: the run's mode, statistics, the machine, and the results."""

from __future__ import annotations

import json
import os
import platform as stdlib_platform
import shutil
import signal
import statistics
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO / "docs" / "benchmarks"


@dataclass
class Run:
    """One `python -m bench` invocation: quick (smoke) or full, and where to write."""

    quick: bool = False
    workdir: Path = field(default_factory=lambda: Path(os.environ.get("TMPDIR", "/tmp")) / "waybill-bench")
    repeats: int = 5
    warmups: int = 1

    def __post_init__(self):
        if self.quick:
            self.repeats, self.warmups = 2, 1
        self.workdir.mkdir(parents=True, exist_ok=True)

    def scale(self, full: int, quick: int) -> int:
        return quick if self.quick else full


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0..100), by linear interpolation (numpy's default)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = (len(ordered) - 1) * q / 100
    low, high = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (k - low)


def latency_summary(samples_ms: list[float]) -> dict:
    return {"p50": percentile(samples_ms, 50), "p95": percentile(samples_ms, 95),
            "p99": percentile(samples_ms, 99), "n": len(samples_ms)}


def repeat(run: Run, measure: Callable[[], float]) -> dict:
    """Warm up, then measure ``run.repeats`` times; the median and the spread."""
    for _ in range(run.warmups):
        measure()
    values = [measure() for _ in range(run.repeats)]
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "runs": values}


def source() -> dict:
    """The commit measured, and whether the tree had changes to it outside docs/ (where the
    runs write their results) when it was measured."""
    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            return ""

    return {"commit": git("rev-parse", "HEAD") or "unknown",
            "uncommitted_changes": bool(git("status", "--porcelain", "--untracked-files=no", "--", ".", ":!docs"))}


def machine() -> dict:
    def first_line(command: list[str]) -> str:
        try:
            return subprocess.run(command, capture_output=True, text=True, timeout=10).stdout.strip().splitlines()[0]
        except (OSError, IndexError, subprocess.TimeoutExpired):
            return "unknown"

    cpu = "unknown"
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {
        **source(),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "os": f"{stdlib_platform.system()} {stdlib_platform.release()}",
        "python": stdlib_platform.python_version(),
        "postgresql": first_line(["/usr/lib/postgresql/15/bin/postgres", "--version"]),
        "rabbitmq": "3.10 (Debian 12)",
        "date": time.strftime("%Y-%m-%d"),
    }


def described(m: dict) -> str:
    """A ``machine()`` record in words, for a report's first line."""
    commit = m.get("commit", "unknown")[:12]
    changes = " with uncommitted changes" if m.get("uncommitted_changes") else ""
    return (f"{m.get('cores')} cores ({m.get('cpu')}), {m.get('memory_gib')} GiB, {m.get('os')}, Python "
            f"{m.get('python')}, {m.get('postgresql')}, RabbitMQ {m.get('rabbitmq')}, at commit {commit}{changes}")


def write_results(results: dict, *, quick: bool) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / ("results-quick.json" if quick else "results.json")
    path.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    return path


class Processes:
    """Every subprocess a scenario starts, each in its own session, so a failure or a
    Ctrl-C anywhere still ends them (by pid/process group, nothing broader)."""

    def __init__(self, logs: Path):
        self.logs = logs
        self.live: list[subprocess.Popen] = []

    def start(self, name: str, argv: list[str], env: dict) -> subprocess.Popen:
        log = open(self.logs / f"{name}.log", "ab")
        proc = subprocess.Popen(argv, cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        proc.bench_name = name  # type: ignore[attr-defined]
        self.live.append(proc)
        return proc

    def call(self, name: str, argv: list[str], env: dict, timeout: float = 900) -> dict:
        """Run to completion; return the JSON its last ``RESULT`` line carries."""
        proc = subprocess.Popen(argv, cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, start_new_session=True)
        self.live.append(proc)
        try:
            out, err = proc.communicate(timeout=timeout)
        finally:
            self.end(proc, signal.SIGKILL)
        if proc.returncode != 0:
            raise RuntimeError(f"{name} failed ({proc.returncode}):\n{out[-2000:]}\n{err[-4000:]}")
        lines = [line for line in out.splitlines() if line.startswith("RESULT ")]
        if not lines:
            raise RuntimeError(f"{name} printed no result:\n{out[-2000:]}\n{err[-4000:]}")
        return json.loads(lines[-1][len("RESULT "):])

    def end(self, proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 20) -> int | None:
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                pass
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        if proc in self.live:
            self.live.remove(proc)
        return proc.returncode

    def end_all(self) -> None:
        for proc in list(self.live):
            self.end(proc, signal.SIGKILL, timeout=5)


def shut_down(processes: Processes | None, *servers) -> None:
    """End a scenario: its processes, then its servers (in the order given, each even if
    one before it failed to stop), and remove the servers' data folders."""
    try:
        if processes is not None:
            processes.end_all()
    finally:
        for server in servers:
            try:
                server.stop()
            finally:
                shutil.rmtree(server.data_dir, ignore_errors=True)
