"""What a soak concludes from its samples (``chaos.soak``): how much each process grew
after the warm-up, and whether a count (file descriptors, database connections) stayed
flat. Pure functions over ``(t, value)`` pairs, so tests/test_soak_growth.py checks them on
made-up series without a deployment.

The baseline is the *median* of the samples within ``window_s`` of ``baseline_s`` (minute 5
of a full soak): one sample taken during a garbage collection or a burst of requests would
otherwise set it. Growth is then measured to the *peak* after ``baseline_s``, not to the
end: memory that rose and fell again was still memory the process needed.

    growth_pct = (peak of the samples at t >= baseline_s - baseline) / baseline * 100

A count (file descriptors, connections) is flat when its *end* (the median of the last
``window_s``) is within ``max(abs_tolerance, pct_tolerance % of the baseline)`` of its
baseline. Not its peak: most of a web process's descriptors are sockets, which come and go
with the requests in flight; a leak is a count that does not come back down, and it ends
higher (the second full soak's orders-web rose from 47 to 60 and ended at 57, a Redis
connection per request, since fixed). The peak's rise is reported beside it.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence

Series = Sequence[tuple[float, float]]  # (seconds since the soak began, value)


def baseline(samples: Series, *, baseline_s: float, window_s: float) -> float | None:
    """The median of the values sampled within ``window_s`` of ``baseline_s``; None when
    there is none (a process that was not running then)."""
    around = [value for t, value in samples if abs(t - baseline_s) <= window_s]
    return statistics.median(around) if around else None


def growth(samples: Series, *, baseline_s: float, window_s: float) -> dict:
    """``baseline``, ``peak`` (after ``baseline_s``), ``end`` (the median of the last
    ``window_s``), ``growth_pct`` (peak over baseline; None without a baseline)."""
    base = baseline(samples, baseline_s=baseline_s, window_s=window_s)
    after = [value for t, value in samples if t >= baseline_s]
    peak = max(after) if after else None
    last_t = max((t for t, _ in samples), default=0.0)
    tail = [value for t, value in samples if t >= last_t - window_s]
    end = statistics.median(tail) if tail else None
    pct = round((peak - base) / base * 100, 2) if base and peak is not None else None
    return {"baseline": base, "peak": peak, "end": end, "growth_pct": pct, "samples": len(samples)}


def flat(samples: Series, *, baseline_s: float, window_s: float, abs_tolerance: float,
         pct_tolerance: float) -> dict:
    """``growth`` of a count, with ``rise`` (end - baseline), ``peak_rise`` (peak -
    baseline), the ``tolerance`` the rise was held to and ``flat``; a series with no
    baseline or no sample after it is not called flat."""
    figures = growth(samples, baseline_s=baseline_s, window_s=window_s)
    base, peak, end = figures["baseline"], figures["peak"], figures["end"]
    if base is None or peak is None:
        return {**figures, "rise": None, "peak_rise": None, "tolerance": None, "flat": False}
    tolerance = max(abs_tolerance, pct_tolerance / 100 * base)
    rise = end - base
    return {**figures, "rise": rise, "peak_rise": peak - base, "tolerance": round(tolerance, 2),
            "flat": rise <= tolerance}


def worst(figures: dict[str, dict], key: str = "growth_pct") -> tuple[str | None, float | None]:
    """The name and value of the largest ``key`` among ``figures`` (None values skipped)."""
    known = [(value[key], name) for name, value in figures.items() if value.get(key) is not None]
    if not known:
        return None, None
    value, name = max(known)
    return name, value


def restarts(pids: Iterable[tuple[float, int | None]]) -> list[dict]:
    """Each change of pid in a process's ``(t, pid)`` samples (None: not running then): a
    supervisor that started it again. A gap followed by the same pid is no restart."""
    found, last = [], None
    for t, pid in pids:
        if pid is None:
            continue
        if last is not None and pid != last:
            found.append({"t_s": t, "old_pid": last, "new_pid": pid})
        last = pid
    return found
