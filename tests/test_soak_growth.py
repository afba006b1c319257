"""The soak's arithmetic (chaos.growth, and chaos.soak's conclusions) on made-up samples:
what `make soak` concludes from half an hour of them, checked without a deployment."""

from __future__ import annotations

import pytest

from chaos import growth
from chaos.soak import Plan, conclude, goal

AT = {"baseline_s": 300.0, "window_s": 30.0}


def series(values, step=10.0):
    return [(i * step, v) for i, v in enumerate(values)]


def test_growth_is_the_peak_after_the_baseline_over_the_median_around_it():
    # Warm-up climbs to 100 by minute 5 (t=300 is index 30), one noisy sample of 130 at
    # t=290 is outvoted by the median, then a plateau at 104 with one peak of 108.
    values = [50 + i for i in range(29)] + [130, 100, 100, 100, 100] + [104] * 20 + [108] + [104] * 10
    figures = growth.growth(series(values), **AT)
    around = sorted(values[27:34])  # t = 270 .. 330
    assert figures["baseline"] == around[3]
    assert figures["baseline"] == 100
    assert figures["peak"] == 108
    assert figures["growth_pct"] == 8.0
    assert figures["end"] == 104


def test_warm_up_growth_before_the_baseline_does_not_count():
    values = [20 + 2 * i for i in range(30)] + [80] * 150  # x4 in the first five minutes, then flat
    assert growth.growth(series(values), **AT)["growth_pct"] == 0.0


def test_a_steady_leak_is_growth():
    values = [100.0] * 31 + [100.0 + 0.2 * i for i in range(1, 150)]  # +0.2 MiB every 10 s
    figures = growth.growth(series(values), **AT)
    assert figures["growth_pct"] == pytest.approx(29.8)
    assert figures["end"] > figures["baseline"]


def test_no_baseline_no_growth():
    figures = growth.growth([(400.0, 10.0), (410.0, 12.0)], **AT)  # started after minute 5
    assert figures["baseline"] is None and figures["growth_pct"] is None


def test_a_count_is_flat_within_its_tolerance():
    wobble = series([20] * 31 + [21, 23, 22, 20, 24, 20] * 10)
    assert growth.flat(wobble, **AT, abs_tolerance=5, pct_tolerance=10)["flat"]
    climbing = series([20] * 31 + [20 + i // 6 for i in range(60)])  # one more every minute
    result = growth.flat(climbing, **AT, abs_tolerance=5, pct_tolerance=10)
    assert not result["flat"] and result["rise"] == 9 and result["peak_rise"] == 9
    # Sockets of requests in flight: a spike that goes away again is no leak.
    spike = series([20] * 31 + [20, 60, 45, 20] + [20] * 30)
    result = growth.flat(spike, **AT, abs_tolerance=5, pct_tolerance=10)
    assert result["flat"] and result["rise"] == 0 and result["peak_rise"] == 40
    # The relative tolerance rules for large counts: 200 may rise by 20.
    big = series([200] * 31 + [215] * 30)
    assert growth.flat(big, **AT, abs_tolerance=5, pct_tolerance=10)["flat"]


def test_a_count_without_a_baseline_is_not_called_flat():
    assert not growth.flat([], **AT, abs_tolerance=5, pct_tolerance=10)["flat"]


def test_restarts_are_pid_changes_not_gaps():
    pids = [(0, 11), (10, 11), (20, None), (30, 11), (40, 12), (50, 12), (60, 13)]
    assert growth.restarts(pids) == [{"t_s": 40, "old_pid": 11, "new_pid": 12},
                                     {"t_s": 60, "old_pid": 12, "new_pid": 13}]


def test_worst_skips_unknowns():
    assert growth.worst({"a": {"growth_pct": 3.0}, "b": {"growth_pct": None}, "c": {"growth_pct": 7.5}}) == ("c", 7.5)
    assert growth.worst({"a": {"growth_pct": None}}) == (None, None)


def _rows(leak: float = 0.0, *, restart_at: int | None = None, connections_climb: bool = False) -> list[dict]:
    rows = []
    for i in range(61):  # 10 minutes, a sample every 10 s
        t = i * 10.0
        web_pid = 101 if restart_at is None or i < restart_at else 102
        web = 90.0 + (leak * (t - 300) / 10 if t > 300 else 0.0)
        rows.append({
            "t": t, "load": 1.0, "pending": 0,
            "processes": {"orders-web": {"pid": web_pid, "rss": web, "pss": web, "fds": 30, "n": 1},
                          "orders-worker": {"pid": 201, "rss": 110.0, "pss": 100.0, "fds": 25, "n": 1}},
            "servers": {"postgres": {"pid": 301, "rss": 900.0, "pss": 150.0 + (i % 3), "fds": 400, "n": 40}},
            "database_connections": {"orders": 12 + (i // 6 if connections_climb else 0), "postgres": 1},
            "broker_connections": {},
        })
    return rows


PLAN = Plan.of(quick=False, minutes=10, baseline_minutes=5, interval_s=10, seed=1)
ORDERS_OK = {"not_accepted": 0, "without_outcome": 0}


def test_a_clean_soak_meets_the_goal():
    concluded = conclude(_rows(), PLAN, {"orders-web": "web", "orders-worker": "worker"})
    assert concluded["processes"]["orders-web"]["basis"] == "rss"
    assert concluded["processes"]["postgres"]["basis"] == "pss"  # a tree's RSS counts shared memory many times
    assert concluded["processes"]["postgres"]["growth_pct"] == pytest.approx(100 * 1 / 151, abs=0.01)  # median 151, peak 152
    assert concluded["max_growth_pct"] < 10
    verdict = goal(concluded, ORDERS_OK)
    assert verdict["met"], verdict


def test_a_leaking_process_misses_the_goal_and_is_named():
    concluded = conclude(_rows(leak=0.5), PLAN, {"orders-web": "web"})  # +15 MiB over the last five minutes
    assert concluded["max_growth_process"] == "orders-web"
    assert concluded["max_growth_pct"] == pytest.approx(100 * 15 / 90, abs=0.01)
    verdict = goal(concluded, ORDERS_OK)
    assert not verdict["met"]
    assert verdict["grew_more_than_goal"] == {"orders-web": concluded["max_growth_pct"]}


def test_a_restart_and_climbing_connections_are_findings():
    concluded = conclude(_rows(restart_at=45, connections_climb=True), PLAN, {})
    assert concluded["processes"]["orders-web"]["restarts"] == [{"t_s": 450.0, "old_pid": 101, "new_pid": 102}]
    verdict = goal(concluded, ORDERS_OK)
    assert verdict["restarts"] == {"orders-web": 1}
    assert verdict["connections_not_flat"] == ["orders"]
    assert not verdict["checks"]["no_restarts"] and not verdict["checks"]["database_connections_flat"]
    assert not goal(conclude(_rows(), PLAN, {}), {"not_accepted": 0, "without_outcome": 1})["met"]
