"""Run a Python program under cProfile in *every* thread; write the merged stats at exit.

    python -m bench.pipeline_support.profiled OUT.prof -m uvicorn config.asgi:application ...
    python -m bench.pipeline_support.profiled OUT.prof /path/to/.venv/bin/celery -A ... worker ...
    python -m bench.pipeline_support.profiled OUT.prof manage.py runrelay

Waybill's work happens on threads (uvicorn runs each Django request on a thread of its own,
runplatform runs relays and consumers on threads). On Python 3.12+ cProfile is built on
``sys.monitoring`` and one profiler sees every thread (own times, ``tottime``, are right;
cumulative times get mixed up where threads interleave, so read ``tottime`` and callers).
Before 3.12 it saw only the thread that enabled it: there ``threading.Thread.run`` is
wrapped so that each thread gets a profiler of its own. An ``atexit`` hook merges them
into one pstats file. The program must
exit normally (a graceful SIGTERM/SIGINT) for the file to be written. The clock is CPU
time (``time.process_time``; ``PROFILE_CLOCK=wall`` for wall time): waiting on a socket
costs nothing, so ``tottime`` says where the CPU goes (exactly for one busy thread at a
time, as in a Celery consumer or a relay; blurred when several threads are busy at once). For diagnosis only:
profiling slows the program down (roughly 1.5-3x), so only relative costs are meaningful.
"""

from __future__ import annotations

import atexit
import cProfile
import pstats
import runpy
import signal
import sys
import os
import threading
import time

_profiles: list[cProfile.Profile] = []
_lock = threading.Lock()
_original_run = threading.Thread.run


def _new_profile() -> cProfile.Profile:
    clock = time.perf_counter if os.environ.get("PROFILE_CLOCK") == "wall" else time.process_time
    return cProfile.Profile(clock)


def _profiled_run(self) -> None:
    profile = _new_profile()
    with _lock:
        _profiles.append(profile)
    profile.enable()
    try:
        _original_run(self)
    finally:
        profile.disable()


def _dump(path: str, main: cProfile.Profile) -> None:
    main.disable()
    stats = None
    with _lock:
        profiles = [main, *_profiles]
    for profile in profiles:
        try:
            profile.create_stats()
            if not profile.stats:
                continue
            stats = pstats.Stats(profile) if stats is None else stats.add(profile)
        except Exception:  # a thread still running: its profile may be unreadable; skip it
            continue
    if stats is not None:
        stats.dump_stats(path)


def main() -> None:
    out, *argv = sys.argv[1:]
    if sys.version_info < (3, 12):
        threading.Thread.run = _profiled_run
    main_profile = _new_profile()
    atexit.register(_dump, out, main_profile)
    # uvicorn re-raises SIGTERM once it has shut down, with the handler it found: make
    # that an ordinary exit, so atexit (the dump) runs. Programs with their own handler
    # (Celery, runrelay) are unaffected.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    if argv[0] == "-m":
        sys.argv = [argv[1], *argv[2:]]
        main_profile.enable()
        runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
    else:
        sys.argv = argv
        main_profile.enable()
        runpy.run_path(argv[0], run_name="__main__")


if __name__ == "__main__":
    main()
