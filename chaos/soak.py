"""`python -m chaos.soak [--minutes 30] [--rate R] [--quick]` (``make soak``, issue 16): half
the saturation rate for half an hour on services mode, every process's memory, file
descriptors and the databases' connections sampled all along; the goal is that no process
grows more than 10 % after the first five minutes (``max_growth_pct``) and that the counts
stay flat. Writes docs/chaos/soak.{json,md,png} (``--quick``: var/chaos/); exits 1 if the
goal is missed.

The same pieces as ``make chaos``, without its faults: the deployment from
``chaos.topology.deployed`` (by default the layout ``make up`` runs, from the environment:
one of everything unless WAYBILL_REPLICAS, WAYBILL_BROKER_NODES or
WAYBILL_DATABASE_SERVERS say otherwise; ``--layout chaos`` soaks the chaos run's cluster),
its customers (``chaos.run``), its open-loop ``SteadyLoad`` and ``Tracker``
(``chaos.load``). The conclusions from the samples are ``chaos.growth``'s; ``METHOD`` says
exactly how everything is measured.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from bench.harness import REPO, described, latency_summary, machine

from . import growth

GOAL_MAX_GROWTH_PCT = 10.0
# A count is flat if its peak after the baseline stays within max(absolute, % of baseline).
FD_TOLERANCE = (5, 10.0)
CONNECTION_TOLERANCE = (3, 10.0)
RESULTS_DIR = REPO / "docs" / "chaos"
QUICK_DIR = REPO / "var" / "chaos"
MIB = 2**20


@dataclass
class Plan:
    minutes: float
    baseline_minutes: float  # growth is measured from here on
    interval_s: float  # between samples
    rate: float | None  # orders per second offered; None: half the measured saturation
    quick: bool
    seed: int
    layout: str  # "up" (the environment's, as `make up`) or "chaos" (chaos.topology.LAYOUT)
    customers: int = 4
    max_in_flight: int = 16  # per customer: 64 in all, bench's pool
    warm_orders: int = 30
    burst_orders: int = 200  # the saturation burst: about 18 s of work at bench's 11/s
    burst_rate: float = 1000.0  # far above capacity: the burst is a backlog, drained
    cancel_share: float = 0.1  # of the soak's orders (half while pending, half once confirmed)

    @classmethod
    def of(cls, *, quick: bool, minutes: float | None = None, rate: float | None = None,
           baseline_minutes: float | None = None, interval_s: float | None = None, seed: int | None = None,
           layout: str = "up") -> Plan:
        seed = seed if seed is not None else random.SystemRandom().randrange(1, 2**31)
        if quick:
            return cls(minutes=minutes or 3.0, baseline_minutes=baseline_minutes or 1.0, interval_s=interval_s or 5.0,
                       rate=rate, quick=True, seed=seed, layout=layout, warm_orders=15, burst_orders=80)
        return cls(minutes=minutes or 30.0, baseline_minutes=baseline_minutes if baseline_minutes is not None else 5.0,
                   interval_s=interval_s or 10.0, rate=rate, quick=False, seed=seed, layout=layout)

    @property
    def baseline_s(self) -> float:
        return self.baseline_minutes * 60

    @property
    def window_s(self) -> float:
        """Half-width of the baseline's window: three samples either side."""
        return 3 * self.interval_s


METHOD = " ".join("""
Services mode as chaos.topology.deployed builds it ({layout}), on private PostgreSQL, RabbitMQ and
Redis servers (fast: fsync off, as the tests), every process under supervisord behind the nginx
gateway, with bench's environment (order throttle raised, DEBUG off, no tracing). {customers}
customer accounts made as the demo's (chaos.customers), each with its API token; 6 products
(chaos.run.SHOP, 1,000,000 units each, so stock never runs out; the lamp's price is in the payment
sandbox's decline band, so an order of the lamp alone is declined and compensated). Load:
chaos.load.SteadyLoad, open loop (order i is sent at t0 + i/rate whatever happened to earlier ones),
1-2 lines of 1-2 units, an Idempotency-Key each, at most {max_in_flight} requests in flight per
customer; an order's outcome (first non-PENDING status) and its time are read from orders' own
database every 0.5 s (chaos.load.Tracker). Saturation, unless --rate is given: after a warm-up of
{warm} orders at 10/s, a burst of {burst} orders offered at {burst_rate:g}/s (far above capacity, so a
backlog) is drained; saturation = orders that reached their outcome / (last outcome time - t0 of the
burst); no cancellations in either. The soak offers half of that for {minutes:g} minutes, with
{cancel_pct:g}% of the orders cancelled (half right after the 202, half once confirmed). Every
{interval:g} s (t = 0 when the soak's load begins; a thread of the soak process): each supervised
process by name (its pid from supervisord, asked each time; the supervisor itself too) and each
server's process tree (each PostgreSQL server, each RabbitMQ node, Redis), with psutil: RSS of the
supervised process and its children (one process, but for the gateway, nginx's master and workers),
PSS summed over each server's tree (a PostgreSQL backend's RSS counts every shared buffer it
touched, so RSS sums count shared memory many times; PSS divides it among the sharers), open file
descriptors (num_fds, summed over the tree); per database, its connections (count of
pg_stat_activity rows of client backends per datname, through each server's superuser; the soak's
own tracker on orders and its sampler on postgres, one each, included); the broker's connections
per user (management API, for information). supervisord is sampled alone (its tree is every
process). A new pid under the same name is a restart (counted,
and reported as a finding). Growth of a process = (peak after minute {baseline:g} - baseline) /
baseline x 100, where baseline = the median of the samples within {window:g} s of minute
{baseline:g} and peak = the largest sample at or after minute {baseline:g}, of RSS for supervised
processes and PSS for the servers' trees; max_growth_pct = the largest over every process, servers
included (max_growth_pct_waybill: over the supervised processes alone). File descriptors (per
process) and connections (per database) are flat if their end (the median of the last {window:g} s)
exceeds their baseline (the same median around minute {baseline:g}) by at most max({fd_abs},
{fd_pct:g}%) and max({conn_abs}, {conn_pct:g}%) respectively: not their peak, since sockets come and
go with the requests in flight (peak_rise is reported too). Latency: POST's scheduled send to the outcome's time in
orders' database, over the soak's accepted orders; achieved rate = outcomes / (last outcome - t0).
The goal is met if max_growth_pct <= {goal:g}, every count is flat, no process restarted and every
offered order was accepted and reached its outcome.
""".split())


def method(plan: Plan) -> str:
    return METHOD.format(layout="the chaos run's layout: chaos.topology.LAYOUT" if plan.layout == "chaos" else
                         "the layout `make up` runs, from the environment (launcher.topology)",
                         customers=plan.customers, max_in_flight=plan.max_in_flight, warm=plan.warm_orders,
                         burst=plan.burst_orders, burst_rate=plan.burst_rate, minutes=plan.minutes,
                         cancel_pct=100 * plan.cancel_share, interval=plan.interval_s, baseline=plan.baseline_minutes,
                         window=plan.window_s, fd_abs=FD_TOLERANCE[0], fd_pct=FD_TOLERANCE[1],
                         conn_abs=CONNECTION_TOLERANCE[0], conn_pct=CONNECTION_TOLERANCE[1], goal=GOAL_MAX_GROWTH_PCT)


# --- sampling ------------------------------------------------------------------------------------
def measure(pid: int, *, tree: bool = True) -> dict | None:
    """RSS and PSS (MiB) and open file descriptors of ``pid`` and (``tree``) every
    descendant; None if it is gone. A member that exits while it is read is left out."""
    import psutil

    try:
        root = psutil.Process(pid)
        members = [root, *(root.children(recursive=True) if tree else [])]
    except psutil.Error:
        return None
    rss = pss = 0
    fds = counted = 0
    for proc in members:
        try:
            info = proc.memory_full_info()
            rss, pss = rss + info.rss, pss + getattr(info, "pss", info.rss)
            fds += proc.num_fds()
            counted += 1
        except psutil.Error:
            continue
    if not counted:
        return None
    return {"pid": pid, "rss": round(rss / MIB, 2), "pss": round(pss / MIB, 2), "fds": fds, "n": counted}


class Sampler:
    """Every ``interval_s`` on a thread: each process's figures, each database's connections,
    the broker's connections, the backlog and the load average (``rows``, one per sample)."""

    def __init__(self, topology, *, interval_s: float, t0: float, pending=lambda: 0, log=print):
        self.topology, self.interval_s, self.t0, self.pending, self.log = topology, interval_s, t0, pending, log
        layout = topology.layout
        from launcher.topology import MAIN

        self.postgres = {("postgres" if name == MAIN else f"postgres-{name}"): server
                         for name, server in zip(layout.database_server_names, topology.postgres, strict=True)}
        nodes = topology.broker_nodes
        self.servers = {**self.postgres,
                        **{("rabbitmq" if len(nodes) == 1 else f"rabbitmq-{i}"): node for i, node in enumerate(nodes, 1)},
                        "redis": topology.redis}
        self.rows: list[dict] = []
        self.errors: dict[str, int] = {}
        self._connections: dict[str, object] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="soak-sampler", daemon=True)

    def _error(self, what: str) -> None:
        self.errors[what] = self.errors.get(what, 0) + 1

    def _database_connections(self) -> dict[str, int]:
        import psycopg

        counts = {}
        for name, server in self.postgres.items():
            try:
                connection = self._connections.get(name)
                if connection is None or connection.closed:
                    connection = self._connections[name] = psycopg.connect(server.superuser_url, autocommit=True,
                                                                            connect_timeout=3)
                rows = connection.execute("SELECT datname, count(*) FROM pg_stat_activity "
                                          "WHERE backend_type = 'client backend' AND datname IS NOT NULL "
                                          "GROUP BY datname").fetchall()
            except psycopg.Error:
                self._error(f"{name} connections")
                self._connections.pop(name, None)
                continue
            counts |= {f"{datname}" if len(self.postgres) == 1 else f"{name}/{datname}": n for datname, n in rows}
        return counts

    def _broker_connections(self) -> dict[str, int]:
        import httpx
        from urllib.parse import urlsplit

        url = self.topology.management_url
        if not url:
            return {}
        parts = urlsplit(url)
        try:
            answer = httpx.get(f"{parts.scheme}://{parts.hostname}:{parts.port}/api/connections",
                               params={"columns": "user"}, auth=(parts.username or "", parts.password or ""),
                               timeout=5).json()
        except (httpx.HTTPError, ValueError):
            self._error("broker connections")
            return {}
        counts: dict[str, int] = {}
        for connection in answer if isinstance(answer, list) else []:
            counts[connection.get("user", "?")] = counts.get(connection.get("user", "?"), 0) + 1
        return dict(sorted(counts.items()))

    def _broker_memory(self) -> dict:
        """What the broker's memory is (per category, MiB, every node summed: the management
        API's memory breakdown) and what its queues hold (messages, and memory, of the five
        largest): where a broker that grows keeps it."""
        import httpx
        from urllib.parse import urlsplit

        url = self.topology.management_url
        if not url:
            return {}
        parts = urlsplit(url)
        base, auth = f"{parts.scheme}://{parts.hostname}:{parts.port}/api", (parts.username or "", parts.password or "")
        try:
            nodes = [n["name"] for n in httpx.get(f"{base}/nodes", params={"columns": "name"}, auth=auth,
                                                   timeout=5).json()]
            breakdown: dict[str, float] = {}
            for node in nodes:
                memory = httpx.get(f"{base}/nodes/{node}/memory", auth=auth, timeout=5).json().get("memory", {})
                for category, value in memory.items():
                    if isinstance(value, int | float) and category != "total":
                        breakdown[category] = breakdown.get(category, 0.0) + value / MIB
            queues = httpx.get(f"{base}/queues", params={"columns": "name,messages,memory"}, auth=auth,
                               timeout=5).json()
        except (httpx.HTTPError, ValueError, KeyError, TypeError):
            self._error("broker memory")
            return {}
        largest = sorted(queues, key=lambda q: -(q.get("memory") or 0))[:5]
        return {"breakdown_mib": {k: round(v, 2) for k, v in sorted(breakdown.items()) if v >= 0.5},
                "messages": sum(q.get("messages") or 0 for q in queues),
                "largest_queues": {q["name"]: {"messages": q.get("messages"),
                                               "memory_mib": round((q.get("memory") or 0) / MIB, 2)}
                                   for q in largest}}

    def sample(self) -> dict:
        deployment = self.topology.deployment
        row = {"t": round(time.time() - self.t0, 1), "load": round(os.getloadavg()[0], 2), "pending": self.pending(),
               "processes": {}, "servers": {}}
        try:
            pids = deployment.pids()
        except Exception:  # noqa: BLE001 - a supervisor that does not answer once is a gap, not the end
            self._error("supervisor")
            pids = {}
        if deployment.supervisor.pid:
            pids["supervisor"] = deployment.supervisor.pid
        for name, pid in sorted(pids.items()):
            # supervisord's own tree is every process: itself alone.
            figures = measure(pid, tree=name != "supervisor")
            if figures is not None:
                row["processes"][name] = figures
        for name, server in self.servers.items():
            figures = measure(server.pid) if server.pid else None
            if figures is not None:
                row["servers"][name] = figures
        row["database_connections"] = self._database_connections()
        row["broker_connections"] = self._broker_connections()
        row["broker_memory"] = self._broker_memory()
        self.rows.append(row)
        return row

    def _loop(self) -> None:
        k = 0
        while not self._stop.is_set():
            self.sample()
            k += 1
            # On a fixed grid from t0, so that a slow sample does not shift the later ones.
            self._stop.wait(max(0.0, self.t0 + k * self.interval_s - time.time()))

    def start(self) -> Sampler:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)
        for connection in self._connections.values():
            connection.close()


# --- conclusions -----------------------------------------------------------------------------------
def conclude(rows: list[dict], plan: Plan, kinds: dict[str, str]) -> dict:
    """Per process its memory growth, file descriptors and restarts; per database its
    connections; and the goal's checks (``chaos.growth`` does the arithmetic)."""
    at = {"baseline_s": plan.baseline_s, "window_s": plan.window_s}
    processes = {}
    for group, basis in (("processes", "rss"), ("servers", "pss")):
        names = sorted({name for row in rows for name in row[group]})
        for name in names:
            seen = [(row["t"], row[group][name]) for row in rows if name in row[group]]
            memory = growth.growth([(t, f[basis]) for t, f in seen], **at)
            fds = growth.flat([(t, f["fds"]) for t, f in seen], **at, abs_tolerance=FD_TOLERANCE[0],
                              pct_tolerance=FD_TOLERANCE[1])
            pid_series = [(row["t"], row[group][name]["pid"] if name in row[group] else None) for row in rows]
            processes[name] = {
                "kind": kinds.get(name, "supervisor" if name == "supervisor" else
                                  "server" if group == "servers" else "gateway" if name == "gateway" else "?"),
                "basis": basis,
                "start_mib": seen[0][1][basis] if seen else None,
                "baseline_mib": _round(memory["baseline"]),
                "peak_after_baseline_mib": _round(memory["peak"]),
                "end_mib": _round(memory["end"]),
                "growth_pct": memory["growth_pct"],
                "fds": _counted(fds),
                "restarts": growth.restarts(pid_series),
                "missing_samples": len(rows) - len(seen),
                "tree_processes_max": max((f["n"] for _, f in seen), default=0),
            }
    databases = {}
    for name in sorted({name for row in rows for name in row["database_connections"]}):
        series = [(row["t"], row["database_connections"].get(name, 0)) for row in rows if row["database_connections"]]
        databases[name] = _counted(growth.flat(series, **at, abs_tolerance=CONNECTION_TOLERANCE[0],
                                               pct_tolerance=CONNECTION_TOLERANCE[1]))
    worst_name, worst_pct = growth.worst(processes)
    _, worst_waybill = growth.worst({name: p for name, p in processes.items() if p["basis"] == "rss"})
    return {"processes": processes, "databases": databases, "max_growth_pct": worst_pct,
            "max_growth_process": worst_name, "max_growth_pct_waybill": worst_waybill}


def _round(value):
    return round(value, 1) if isinstance(value, float) else value


def _counted(figures: dict) -> dict:
    return {k: _round(v) for k, v in figures.items() if k != "samples"}


def orders_figures(placed, final: dict[str, tuple[str, float]], t0: float) -> dict:
    accepted = [p for p in placed if p.accepted]
    outcomes: dict[str, int] = {}
    ends, latencies = [], []
    for p in accepted:
        if p.order_id in final:
            status, at = final[p.order_id]
            outcomes[status] = outcomes.get(status, 0) + 1
            ends.append(at)
            latencies.append((at - p.t_sched) * 1000)
    retries: dict[str, int] = {}
    for p in placed:
        for why in p.troubles:
            retries[why] = retries.get(why, 0) + 1
    return {"offered": len(placed), "accepted": len(accepted), "outcomes": dict(sorted(outcomes.items())),
            "confirmed": outcomes.get("CONFIRMED", 0), "without_outcome": len(accepted) - len(ends),
            "not_accepted": len(placed) - len(accepted), "http_retries": retries,
            "achieved_per_s": round(len(ends) / (max(ends) - t0), 2) if ends and max(ends) > t0 else 0.0,
            "post_to_outcome_ms": {k: round(v, 1) if isinstance(v, float) else v
                                   for k, v in latency_summary(latencies).items()}}


def goal(concluded: dict, orders: dict) -> dict:
    processes, databases = concluded["processes"], concluded["databases"]
    restarted = {name: len(p["restarts"]) for name, p in processes.items() if p["restarts"]}
    checks = {
        f"no_process_grows_more_than_{GOAL_MAX_GROWTH_PCT:g}pct": (concluded["max_growth_pct"] is not None
                                                                  and concluded["max_growth_pct"]
                                                                  <= GOAL_MAX_GROWTH_PCT),
        "file_descriptors_flat": all(p["fds"]["flat"] for p in processes.values()),
        "database_connections_flat": bool(databases) and all(d["flat"] for d in databases.values()),
        "no_restarts": not restarted,
        "every_order_accepted_and_reached_its_outcome": orders["not_accepted"] == 0 and orders["without_outcome"] == 0,
    }
    return {"met": all(checks.values()), "checks": checks, "restarts": restarted,
            "fds_not_flat": sorted(name for name, p in processes.items() if not p["fds"]["flat"]),
            "connections_not_flat": sorted(name for name, d in databases.items() if not d["flat"]),
            "grew_more_than_goal": {name: p["growth_pct"] for name, p in processes.items()
                                    if p["growth_pct"] is not None and p["growth_pct"] > GOAL_MAX_GROWTH_PCT}}


# --- the run ---------------------------------------------------------------------------------------
def _layout(name: str):
    from launcher.topology import Topology as Layout

    from .topology import LAYOUT

    return LAYOUT if name == "chaos" else Layout.from_environment()


async def _drained(tracker, loads, timeout_s: float) -> None:
    """Until every accepted order of ``loads`` has its outcome (or ``timeout_s`` passed)."""
    deadline = time.time() + timeout_s
    ids = [p.order_id for load in loads for p in load.placed if p.accepted]
    while time.time() < deadline and any(i not in tracker.final for i in ids):
        await asyncio.sleep(0.5)


async def _saturation(plan: Plan, base_url: str, customers, products, rng, tracker, log) -> dict:
    from .load import SteadyLoad

    def load(rate: float, count: int) -> SteadyLoad:
        return SteadyLoad(base_url, customers, products, rng, rate=rate, count=count, cancel_share=0.0,
                          max_in_flight=plan.max_in_flight)

    warm = load(10.0, plan.warm_orders)
    await warm.run(tracker)
    await _drained(tracker, [warm], 120)
    burst = load(plan.burst_rate, plan.burst_orders)
    await burst.run(tracker)
    await _drained(tracker, [burst], 60 + 3 * plan.burst_orders)
    figures = orders_figures(burst.placed, dict(tracker.final), burst.t0)
    rate = figures["achieved_per_s"]
    log(f"soak: saturation {rate}/s ({figures['accepted']}/{figures['offered']} accepted, outcomes "
        f"{figures['outcomes']}, {figures['without_outcome']} without)")
    return {"orders_per_s": rate, "burst": figures, "warm_up_orders": plan.warm_orders}


async def _soak(plan: Plan, topology, customers, products, rng, log) -> dict:
    from .load import SteadyLoad, Tracker

    deployment = topology.deployment
    tracker = Tracker(topology.stack.database_urls["orders"]).start()
    try:
        saturation = None
        if plan.rate is None:
            saturation = await _saturation(plan, deployment.base_url, customers, products, rng, tracker, log)
            rate = round(saturation["orders_per_s"] / 2, 2)
            if rate <= 0:
                raise RuntimeError(f"saturation measured as {saturation['orders_per_s']}/s: nothing to soak at")
        else:
            rate = plan.rate
        load = SteadyLoad(deployment.base_url, customers, products, rng, rate=rate, duration_s=plan.minutes * 60,
                          cancel_share=plan.cancel_share, max_in_flight=plan.max_in_flight)
        log(f"soak: {load.count} orders at {rate}/s for {plan.minutes:g} min; a sample every {plan.interval_s:g} s")
        t0 = time.time() + 1.0
        sampler = Sampler(topology, interval_s=plan.interval_s, t0=t0, pending=tracker.pending, log=log)
        sampler.start()
        progress = asyncio.create_task(_progress(load, tracker, sampler, t0, log))
        try:
            await load.run(tracker, t0=t0)
            offered_s = load.finished_at - t0
            await _drained(tracker, [load], 120)
        finally:
            progress.cancel()
            sampler.stop()
        orders = orders_figures(load.placed, dict(tracker.final), t0)
        log(f"soak: offered in {offered_s:.0f} s; {orders['accepted']} accepted, outcomes {orders['outcomes']}, "
            f"{orders['without_outcome']} without; p50 {orders['post_to_outcome_ms']['p50']:.0f} ms, "
            f"p99 {orders['post_to_outcome_ms']['p99']:.0f} ms")
        return {"rate_offered_per_s": rate, "saturation": saturation, "orders": orders, "rows": sampler.rows,
                "sampler_errors": sampler.errors, "tracker_failed_polls": tracker.failed_polls,
                "offered_s": round(offered_s, 1)}
    finally:
        tracker.stop()


async def _progress(load, tracker, sampler: Sampler, t0: float, log) -> None:
    """A line a minute: what was offered, what reached its outcome, the backlog, memory."""
    while True:
        await asyncio.sleep(60)
        row = sampler.rows[-1] if sampler.rows else {}
        rss = sum(f["rss"] for f in row.get("processes", {}).values())
        log(f"soak: {time.time() - t0:5.0f} s: offered {sum(1 for p in load.placed if p.t_send)}, outcomes "
            f"{len(tracker.final)}, backlog {tracker.pending()}, Waybill RSS {rss:.0f} MiB, load {row.get('load')}")


def run(plan: Plan, *, workdir: Path, log=print) -> dict:
    from bench.pipeline_support.targets import WAYBILL_ENV, Product, create_products

    from .load import Stocked
    from .run import SHOP, _customers
    from .topology import deployed

    started = time.time()
    say = log

    def log(line: str) -> None:
        say(f"[{time.time() - started:6.1f} s] {line}")

    rng = random.Random(plan.seed)
    layout = _layout(plan.layout)
    log(f"soak: {plan.minutes:g} min, {'at ' + str(plan.rate) + '/s' if plan.rate else 'at half the saturation'}, "
        f"growth from minute {plan.baseline_minutes:g}; seed {plan.seed}; layout {plan.layout}")
    with deployed(workdir, extra_env=WAYBILL_ENV, layout=layout) as topology:
        log(f"soak: deployment ready in {topology.startup_s} s; logs in {topology.deployment.logs}")
        customers = _customers(topology, plan.customers)
        products = [Stocked(sku, name, price, weight, 1_000_000) for sku, name, price, weight, _ in SHOP]
        create_products(topology.deployment, [Product(p.sku, p.name, p.price, p.on_hand) for p in products])
        soaked = asyncio.run(_soak(plan, topology, customers, products, rng, log))
        describe = topology.describe()
        kinds = dict(topology.kinds)
    concluded = conclude(soaked["rows"], plan, kinds)
    verdict = goal(concluded, soaked["orders"])
    rows = soaked.pop("rows")
    results = {
        "max_growth_pct": concluded["max_growth_pct"],
        "max_growth_process": concluded["max_growth_process"],
        "max_growth_pct_waybill": concluded["max_growth_pct_waybill"],
        "goal": {"max_growth_pct": GOAL_MAX_GROWTH_PCT, "after_minute": plan.baseline_minutes, **verdict},
        "goal_met": verdict["met"],
        "processes": concluded["processes"],
        "database_connections": concluded["databases"],
        **soaked,
        "quick": plan.quick, "plan": asdict(plan), "topology": describe,
        "machine": machine(), "date": time.strftime("%Y-%m-%d %H:%M"),
        "load_average_end": [round(x, 2) for x in os.getloadavg()],
        "duration_s": round(time.time() - started, 1),
        "method": method(plan),
        "samples": rows,
    }
    results["broker_memory"] = broker_memory_change(results)
    log(f"soak: done in {results['duration_s']} s: max growth {results['max_growth_pct']}% "
        f"({results['max_growth_process']}); goal {'met' if verdict['met'] else 'MISSED'}")
    return results


# --- the report ------------------------------------------------------------------------------------
def write(results: dict, directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "soak.json"
    path.write_text(json.dumps(results, indent=1, sort_keys=True, default=str) + "\n")
    charted = chart(results, directory / "soak.png")
    (directory / "soak.md").write_text(markdown(results, chart="soak.png" if charted else None))
    return path


def chart(results: dict, path: Path) -> bool:
    try:
        import matplotlib
    except ImportError:
        return False
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = results["samples"]
    baseline_min = results["plan"]["baseline_minutes"]
    fig, axes = plt.subplots(4, 1, figsize=(12, 13), sharex=True,
                             gridspec_kw={"height_ratios": [3, 1.6, 1.4, 1.4]})
    panels = (("processes", "rss", axes[0], "RSS (MiB), each Waybill process"),
              ("servers", "pss", axes[1], "PSS (MiB), each server's process tree"))
    colours = plt.get_cmap("tab20").colors  # some 20 processes: tab10's cycle would repeat colours
    for group, basis, ax, title in panels:
        ax.set_prop_cycle(color=colours)
        for name in sorted({n for row in rows for n in row[group]}):
            xs = [row["t"] / 60 for row in rows if name in row[group]]
            ys = [row[group][name][basis] for row in rows if name in row[group]]
            growth_pct = results["processes"].get(name, {}).get("growth_pct")
            ax.plot(xs, ys, linewidth=1.1, label=f"{name} ({growth_pct:+.1f}%)" if growth_pct is not None else name)
        ax.set_ylabel("MiB")
        ax.set_title(title + " (in brackets: growth after the baseline, peak vs median)", fontsize=9, loc="left")
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.005, 1.0), frameon=False)
    ax = axes[2]
    for name in sorted({n for row in rows for n in row["database_connections"]}):
        ax.plot([row["t"] / 60 for row in rows], [row["database_connections"].get(name, 0) for row in rows],
                linewidth=1.1, label=name)
    ax.set_ylabel("connections")
    ax.set_title("PostgreSQL connections per database", fontsize=9, loc="left")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.005, 1.0), frameon=False)
    ax = axes[3]
    ax.set_prop_cycle(color=colours)
    for group in ("processes", "servers"):
        for name in sorted({n for row in rows for n in row[group]}):
            ax.plot([row["t"] / 60 for row in rows if name in row[group]],
                    [row[group][name]["fds"] for row in rows if name in row[group]], linewidth=0.9, label=name)
    ax.set_ylabel("open fds")
    ax.set_yscale("log")
    ax.set_title("Open file descriptors, every process (log scale)", fontsize=9, loc="left")
    ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.005, 1.0), frameon=False, ncol=2)
    ax.set_xlabel("minutes since the soak's load began")
    for ax in axes:
        ax.axvline(baseline_min, color="#888", linestyle="--", linewidth=0.8)
        ax.grid(alpha=0.25)
    rate = results["rate_offered_per_s"]
    fig.suptitle(f"Soak: {rate}/s for {results['plan']['minutes']:g} min on services mode; max growth after minute "
                 f"{baseline_min:g}: {results['max_growth_pct']}% ({results['max_growth_process']}); goal "
                 f"{'met' if results['goal_met'] else 'missed'}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def markdown(results: dict, *, chart: str | None) -> str:
    m, o, g, plan = results["machine"], results["orders"], results["goal"], results["plan"]
    sat = results.get("saturation")
    latency = o["post_to_outcome_ms"]
    command = (f"PYTHONPATH=platform:. .venv/bin/python -m chaos.soak --minutes {plan['minutes']:g} --rate "
               f"{results['rate_offered_per_s']} --seed {plan['seed']}{' --quick' if plan['quick'] else ''}"
               f"{' --layout chaos' if plan['layout'] == 'chaos' else ''}")
    lines = [
        f"# Soak{' (quick)' if results['quick'] else ''}: goal {'met' if results['goal_met'] else 'MISSED'}",
        "",
        f"{results['date']} on {described(m)}; services mode with "
        f"{results['topology']['broker_nodes']} RabbitMQ node(s), {results['topology']['postgres_servers']} "
        f"PostgreSQL server(s), replicas `{results['topology']['replicas'] or 'none'}`. `make soak` runs it "
        f"(again at the same rate: `{command}`); the whole run took {results['duration_s']:.0f} s, load "
        f"average at the end {', '.join(map(str, results['load_average_end']))} (a shared machine).",
        "",
        f"**max_growth_pct: {results['max_growth_pct']}** ({results['max_growth_process']}), goal at most "
        f"{g['max_growth_pct']:g} % after minute {g['after_minute']:g}; over Waybill's own (supervised) processes "
        f"alone: {results['max_growth_pct_waybill']}.",
        "",
        "| check | met |", "|---|---|",
        *[f"| {name.replace('_', ' ')} | {'yes' if ok else '**no**'} |" for name, ok in g["checks"].items()],
        "",
        "## Load",
        "",
        (f"- saturation measured first: {sat['orders_per_s']} orders/s (a burst of {sat['burst']['offered']} "
         f"drained); offered half of it" if sat else "- rate given (--rate), no saturation measured; offered")
        + f": {results['rate_offered_per_s']}/s for {plan['minutes']:g} minutes",
        f"- {o['offered']:,} orders offered, {o['accepted']:,} accepted, outcomes "
        f"{', '.join(f'{k} {v:,}' for k, v in o['outcomes'].items())}; {o['without_outcome']} without an outcome",
        f"- achieved {o['achieved_per_s']} outcomes/s; POST to outcome p50 {latency['p50']:.0f} ms, "
        f"p95 {latency['p95']:.0f} ms, p99 {latency['p99']:.0f} ms",
        f"- HTTP retries (same Idempotency-Key): {o['http_retries'] or 'none'}",
        "",
    ]
    if chart:
        lines += [f"![memory, connections and file descriptors over time]({chart})", ""]
    lines += ["## Processes", "",
              "| process | kind | basis | start MiB | baseline MiB | peak after MiB | end MiB | growth % "
              "| fds baseline / end / peak | fds flat | restarts |",
              "|---|---|---|---:|---:|---:|---:|---:|---:|---|---:|"]
    for name, p in sorted(results["processes"].items(), key=lambda kv: -(kv[1]["growth_pct"] or 0)):
        fds = p["fds"]
        lines.append(f"| {name} | {p['kind']} | {p['basis']} | {p['start_mib']} | {p['baseline_mib']} | "
                     f"{p['peak_after_baseline_mib']} | {p['end_mib']} | {p['growth_pct']} | "
                     f"{fds['baseline']} / {fds['end']} / {fds['peak']} | {'yes' if fds['flat'] else '**no**'} | "
                     f"{len(p['restarts'])} |")
    lines += ["", "## Database connections", "", "| database | baseline | peak after | end | flat |",
              "|---|---:|---:|---:|---|"]
    for name, d in results["database_connections"].items():
        lines.append(f"| {name} | {d['baseline']} | {d['peak']} | {d['end']} | {'yes' if d['flat'] else '**no**'} |")
    lines += _broker_section(results)
    lines += ["", "## Method", "", results["method"], ""]
    return "\n".join(lines)


def broker_memory_change(results: dict) -> dict:
    """The broker's memory categories and queued messages at the sample nearest the
    baseline and at the last one, largest rise first."""
    rows = [row for row in results["samples"] if row.get("broker_memory")]
    if not rows:
        return {}
    baseline_s = results["plan"]["baseline_minutes"] * 60
    first = min(rows, key=lambda row: abs(row["t"] - baseline_s))["broker_memory"]
    last = rows[-1]["broker_memory"]
    categories = sorted(set(first["breakdown_mib"]) | set(last["breakdown_mib"]),
                        key=lambda c: -(last["breakdown_mib"].get(c, 0) - first["breakdown_mib"].get(c, 0)))
    return {"categories_mib": {c: [first["breakdown_mib"].get(c, 0.0), last["breakdown_mib"].get(c, 0.0)]
                               for c in categories},
            "messages": [first["messages"], last["messages"]], "largest_queues_at_end": last["largest_queues"]}


def _broker_section(results: dict) -> list[str]:
    change = broker_memory_change(results)
    if not change:
        return []
    lines = ["", f"## The broker's memory, at minute {results['plan']['baseline_minutes']:g} and at the end", "",
             f"Messages held (its queues and the history stream): {change['messages'][0]:,} then "
             f"{change['messages'][1]:,}. By the management "
             "API's memory breakdown (MiB, largest rise first):", "", "| category | baseline | end |",
             "|---|---:|---:|"]
    lines += [f"| {c} | {a:.1f} | {b:.1f} |" for c, (a, b) in list(change["categories_mib"].items())[:8]]
    lines += ["", "Largest queues at the end: " + ", ".join(
        f"{name} ({q['messages']} messages, {q['memory_mib']} MiB)" for name, q in change["largest_queues_at_end"].items())]
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m chaos.soak", description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, help="how long the load lasts (full: 30, quick: 3)")
    parser.add_argument("--rate", type=float, help="orders per second (default: half the saturation, measured first)")
    parser.add_argument("--baseline-minutes", type=float, help="growth is measured from here (full: 5, quick: 1)")
    parser.add_argument("--interval", type=float, help="seconds between samples (full: 10, quick: 5)")
    parser.add_argument("--seed", type=int, help="the orders' seed (default: a new one)")
    parser.add_argument("--layout", choices=("up", "chaos"), default="up",
                        help="up: as `make up` (from the environment); chaos: the chaos run's cluster")
    parser.add_argument("--quick", action="store_true", help="a short soak, written to var/chaos/")
    args = parser.parse_args(argv)
    plan = Plan.of(quick=args.quick, minutes=args.minutes, rate=args.rate, baseline_minutes=args.baseline_minutes,
                   interval_s=args.interval, seed=args.seed, layout=args.layout)
    if plan.baseline_minutes >= plan.minutes:
        parser.error("--baseline-minutes must be shorter than --minutes")
    workdir = Path(os.environ.get("TMPDIR", "/tmp")) / "waybill-soak"
    results = run(plan, workdir=workdir, log=lambda line: print(line, flush=True))
    path = write(results, QUICK_DIR if plan.quick else RESULTS_DIR)
    print(f"results: {path}")
    for name, ok in results["goal"]["checks"].items():
        print(f"  {name}: {'yes' if ok else 'NO'}")
    return 0 if results["goal_met"] else 1


if __name__ == "__main__":
    sys.exit(main())
