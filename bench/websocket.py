"""Live push: N concurrent WebSocket clients on one ASGI process, each a distinct customer
watching its own order; latency from the read-model commit to the client's receipt; then
catalog changes broadcast to all of them, counting every client that missed one.

Pieces (``bench/websocket_support/``):

- ``deployment``: the services deployment (private PostgreSQL, RabbitMQ, Redis; every
  context as its own processes behind the nginx gateway). ``readmodels-web``, one uvicorn
  process, alone holds the sockets; pushes reach it through the Redis channel layer.
- ``customers``: N customers and a Django session each, bulk-inserted in the default
  database (what ``login()`` stores), so each client has its own session cookie.
- ``client``: the fleet, bare asyncio protocols over the websockets library's sans-I/O
  client, stamping each frame as it arrives.
- ``projector``: the customers' order changes, applied by the read side's own projection
  (``order_step_project``), which pushes after its commit.

Pushed payloads carry ``committed_at``, the server's wall clock right after the
projection's commit (``apps/readmodels/live/changelog.py``); latency is receipt minus that, on
the same machine's clock. A catalog change is a staff PATCH of a product's on_hand through
the gateway, through inventory, the relay, RabbitMQ and the readmodels worker.

Goal reported against, never asserted: 1,000 clients, p99 < 100 ms, no client missing a
broadcast. ``run.workdir/websocket-details.json`` keeps the per-round breakdown (rates,
CPU seconds per process, drops, connect times, RSS) behind the summary.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field

import httpx
import psutil

from bench.harness import Run, percentile
from bench.websocket_support.client import Fleet
from bench.websocket_support.deployment import (SUPPORT, create_customers, env_of, helper_pids,
                                                raise_open_file_limit, services)
from launcher.stack import REPO

CATALOG_SKU = "MUG-2"  # a demo product; each broadcast raises its on_hand by one
ORDER_DEADLINE = 30.0  # s after the projector finished a wave: a push not received by then is lost
BROADCAST_DEADLINE = 10.0  # s after the PATCH answered: a client without the change by then missed it
CONNECT_CONCURRENCY = 50  # handshakes in flight while the clients connect
IDLE_SECONDS = 15.0  # the clients sit connected with nothing pushed, as browsers do, before the rounds
GOAL = {"clients": 1000, "p99_ms": 100.0, "missed": 0}
# What-if only (never for published numbers): a query string for WAYBILL_REDIS_URL, e.g.
# "socket_timeout=30" (see the report on redis-py 8's 5 s default socket timeout).
REDIS_OPTIONS = os.environ.get("BENCH_WS_REDIS_OPTIONS", "")


@dataclass
class Receipts:
    """Every frame the fleet received, routed by what it is."""

    owner_of: dict[str, int] = field(default_factory=dict)  # order id -> the client it belongs to
    orders: dict[tuple[str, int], list[tuple[int, float, float]]] = field(default_factory=dict)
    catalog: dict[tuple[str, int], dict[int, tuple[float, float]]] = field(default_factory=dict)
    foreign: int = 0  # an order frame at a client it does not belong to (must stay 0)
    other: int = 0

    def take(self, fleet: Fleet) -> None:
        for client, received_at, message in fleet.drain():
            data = message.get("data", {})
            kind = message.get("kind") if message.get("type") == "change" else None
            if kind == "order":
                owner = self.owner_of.get(data["id"])
                if owner is not None and owner != client:
                    self.foreign += 1
                    continue
                self.orders.setdefault((data["id"], data["version"]), []).append(
                    (client, received_at, message["committed_at"]))
            elif kind == "catalog_item":
                self.catalog.setdefault((data["sku"], data["version"]), {}).setdefault(
                    client, (received_at, message["committed_at"]))
            else:
                self.other += 1


class Watch:
    """The socket server's RSS, sampled in a thread; CPU seconds of the processes involved."""

    def __init__(self, deployment, interval: float = 0.25):
        self.processes = {name: psutil.Process(deployment.running[name].pid)
                          for name in ("readmodels-web", "readmodels-worker")}
        self.processes.update({name: psutil.Process(pid) for name, pid in helper_pids(deployment).items()})
        self.processes["client"] = psutil.Process()
        self.web = self.processes["readmodels-web"]
        self.baseline_rss = self.peak_rss = self.web.memory_info().rss
        self._interval, self._stop = interval, threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def add(self, name: str, pid: int) -> None:
        self.processes[name] = psutil.Process(pid)

    def _sample(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self.peak_rss = max(self.peak_rss, self.web.memory_info().rss)
            except psutil.Error:
                return

    def cpu(self) -> dict[str, float]:
        seconds = {}
        for name, proc in self.processes.items():
            try:
                seconds[name] = sum(proc.cpu_times()[:2])
            except psutil.Error:
                seconds[name] = float("nan")
        return seconds

    @staticmethod
    def spent(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
        return {name: round(after[name] - before[name], 2) for name in before if name in after}

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


async def _wait(fleet: Fleet, receipts: Receipts, done, deadline: float) -> None:
    """Route incoming frames until ``done()`` or the monotonic ``deadline``."""
    while True:
        receipts.take(fleet)
        if done() or time.monotonic() >= deadline:
            return
        await asyncio.sleep(0.02)


async def _order_wave(projector, fleet: Fleet, receipts: Receipts, orders: dict[str, int], status: str,
                      version: int) -> dict:
    """Every customer's order (``orders``: order id -> customer id) changes to ``status``
    at ``version``; the latencies of the pushes and the orders whose push never came."""
    command = {"status": status, "version": version, "orders": list(orders.items()), "rate": None}
    projector.stdin.write((json.dumps(command) + "\n").encode())
    await projector.stdin.drain()
    answer = json.loads(await projector.stdout.readline())
    wanted = [(order_id, version) for order_id in orders]
    await _wait(fleet, receipts, lambda: all(key in receipts.orders for key in wanted),
                time.monotonic() + ORDER_DEADLINE)
    latencies, commits, lost, duplicates = [], [], 0, 0
    for key in wanted:
        got = receipts.orders.get(key, [])
        if not got:
            lost += 1
            continue
        duplicates += len(got) - 1
        _, received_at, committed_at = got[0]
        latencies.append((received_at - committed_at) * 1000)
        commits.append(committed_at)
    span = (max(commits) - min(commits)) if len(commits) > 1 else 0.0
    publish = answer["publish_ms"]  # the projector's own time in channelgroups.group_send, after each commit
    return {"latencies_ms": latencies, "lost": lost, "duplicates": duplicates, "projected": answer["projected"],
            "project_seconds": round(answer["seconds"], 2),
            "commits_per_s": round((len(commits) - 1) / span, 1) if span else None,
            "group_send_ms": {"p50": round(percentile(publish, 50), 1), "p99": round(percentile(publish, 99), 1)}}


async def _broadcast(http: httpx.AsyncClient, fleet: Fleet, receipts: Receipts) -> dict:
    """One staff PATCH of the catalog product's on_hand; who got the change, and when."""
    current = (await http.get(f"/api/v1/inventory/products/{CATALOG_SKU}/")).json()
    response = await http.patch(f"/api/v1/inventory/products/{CATALOG_SKU}/", json={"on_hand": current["on_hand"] + 1})
    response.raise_for_status()
    key = (CATALOG_SKU, response.json()["version"])
    expected = set(fleet.connected)  # including any disconnected right now: they miss it
    await _wait(fleet, receipts, lambda: expected <= receipts.catalog.get(key, {}).keys(),
                time.monotonic() + BROADCAST_DEADLINE)
    got = {client: times for client, times in receipts.catalog.get(key, {}).items() if client in expected}
    latencies = [(received_at - committed_at) * 1000 for received_at, committed_at in got.values()]
    spread = (max(r for r, _ in got.values()) - min(r for r, _ in got.values())) * 1000 if got else None
    return {"latencies_ms": latencies, "expected": len(expected), "missed": len(expected - got.keys()),
            "first_to_last_receipt_ms": round(spread, 1) if spread is not None else None}


async def _measure(run: Run, deployment, customers: dict, token: str, watch: Watch) -> dict:
    base = deployment.base_url
    fleet = Fleet(base.replace("http://", "ws://") + "/ws/v1/orders/")
    cookie, people = customers["cookie_name"], customers["customers"]
    cpu_before = watch.cpu()
    began = time.perf_counter()
    await fleet.connect(((i, {"Cookie": f"{cookie}={c['session_key']}", "Origin": base})
                         for i, c in enumerate(people)), concurrency=CONNECT_CONCURRENCY)
    connect = {"wall_s": round(time.perf_counter() - began, 2), "cpu_s": watch.spent(cpu_before, watch.cpu()),
               "p50_s": round(percentile(fleet.connect_seconds, 50), 3),
               "p99_s": round(percentile(fleet.connect_seconds, 99), 3)}
    connect["server_drops"] = len(fleet.drops)  # while the others were still connecting
    rss_connected = watch.web.memory_info().rss
    # Connected and idle for a while, as open shop pages are (any frame now is unexpected).
    idle_began = time.perf_counter()
    await asyncio.sleep(IDLE_SECONDS)
    idle = {"seconds": round(time.perf_counter() - idle_began, 1),
            "server_drops": len(fleet.drops) - connect["server_drops"], "frames": len(fleet.drain())}

    projector = await asyncio.create_subprocess_exec(
        sys.executable, str(SUPPORT / "projector.py"), cwd=str(REPO), env=env_of(deployment, "readmodels-worker"),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
    receipts, rounds = Receipts(), []
    try:
        assert json.loads(await projector.stdout.readline())["ready"]
        watch.add("projector", projector.pid)
        async with httpx.AsyncClient(base_url=base, headers={"Authorization": f"Token {token}"},
                                     timeout=30) as http:
            for number in range(run.warmups + run.repeats):
                round_began = time.perf_counter()
                clients = sorted(fleet.connected)  # including any disconnected right now: they miss it
                orders = {str(uuid.uuid4()): i for i in clients}
                receipts.owner_of.update(orders)
                of_customer = {order_id: people[i]["id"] for order_id, i in orders.items()}
                cpu_0 = watch.cpu()
                waves = [await _order_wave(projector, fleet, receipts, of_customer, status, version)
                         for status, version in (("PENDING", 1), ("CONFIRMED", 2))]
                cpu_1 = watch.cpu()
                broadcast = await _broadcast(http, fleet, receipts)
                cpu_2 = watch.cpu()
                rounds.append({
                    "warmup": number < run.warmups, "clients": len(clients), "open_after": len(fleet.open),
                    "drops_so_far": len(fleet.drops),
                    "seconds": round(time.perf_counter() - round_began, 1), "waves": waves, "broadcast": broadcast,
                    "cpu_s_orders": watch.spent(cpu_0, cpu_1), "cpu_s_broadcast": watch.spent(cpu_1, cpu_2),
                })
    finally:
        projector.stdin.close()
        try:
            await asyncio.wait_for(projector.wait(), 10)
        except TimeoutError:
            projector.kill()
            await projector.wait()
        await fleet.close()
    return {"fleet": fleet, "receipts": receipts, "rounds": rounds, "connect": connect, "idle": idle,
            "rss_connected": rss_connected}


def _method(n: int, run: Run) -> str:
    return (
        f"Services mode: private PostgreSQL, RabbitMQ and Redis, every context as its own processes behind the nginx "
        f"gateway, settings as the launcher runs them plus WAYBILL_DEBUG=false"
        f"{f' and Redis URL options {REDIS_OPTIONS!r} (what-if)' if REDIS_OPTIONS else ''}. One uvicorn process, "
        f"readmodels-web, holds all {n} sockets; pushes reach it through the Redis channel layer. {n} distinct "
        f"customers, each with a Django session bulk-inserted in the default database; each client connects through "
        f"the gateway to /ws/v1/orders/ with its own session cookie and the server's Origin ({CONNECT_CONCURRENCY} "
        f"handshakes in flight; a failed handshake counts as a connect failure, no retry). Clients: bare asyncio "
        f"protocols over the websockets sans-I/O client, all in one process on the same machine, stamping each frame "
        f"on arrival. Each round, every customer's own order changes twice (PENDING v1, then CONFIRMED v2), applied "
        f"one after another by the read side's own projection (apps.readmodels.services.order_step_project, run in "
        f"a process with the readmodels worker's settings), which pushes after each commit; upstream of that commit "
        f"(order service, saga, relay, RabbitMQ, Celery consumer) is left out, so the pushes come as fast as one "
        f"projector commits them, and no stock reservation broadcasts a catalog change per order. p50/p95/p99 are "
        f"from committed_at (server clock right after the projection's commit, added to the pushed change frame in "
        f"apps/readmodels/live/changelog.py) to receipt, pooled over rounds; a push not received {ORDER_DEADLINE:.0f} s "
        f"after its wave is lost. Then one catalog change, a staff PATCH of {CATALOG_SKU}'s on_hand through the "
        f"gateway (inventory -> relay -> RabbitMQ -> readmodels worker -> catalog projection -> group 'catalog'): "
        f"broadcast_ms is commit to receipt over every client; missed counts clients without it "
        f"{BROADCAST_DEADLINE:.0f} s after the PATCH answered, summed over rounds. A client the server "
        f"drops reconnects as the shop page does (0.5 s, doubling) and misses what was pushed meanwhile. The clients "
        f"first sit connected and idle for {IDLE_SECONDS:.0f} s. {run.warmups} warm-up round, then "
        f"{run.repeats} measured rounds ({2 * run.repeats} order pushes and {run.repeats} broadcasts per client). "
        f"server_rss_mib: readmodels-web's peak RSS. 2-core machine shared with the server processes and the clients."
    )


def run(run: Run) -> dict:
    count = run.scale(1000, 100)
    raise_open_file_limit()
    timings, began = {}, time.perf_counter()
    with services(run.workdir / "websocket", extra={"WAYBILL_DEBUG": "false"},
                  redis_options=REDIS_OPTIONS) as deployment:
        timings["deployment_s"] = round(time.perf_counter() - began, 1)
        watch = Watch(deployment)
        try:
            customers = create_customers(deployment, count)
            token = deployment.token("admin")
            timings["customers_s"] = round(time.perf_counter() - began - timings["deployment_s"], 1)
            measured = asyncio.run(_measure(run, deployment, customers, token, watch))
        finally:
            watch.stop()
            stopping = time.perf_counter()
        web_log = (deployment.logs / "readmodels-web.log").read_text(errors="replace")
    timings["stop_s"] = round(time.perf_counter() - stopping, 1)
    timings["total_s"] = round(time.perf_counter() - began, 1)

    fleet, rounds = measured["fleet"], [r for r in measured["rounds"] if not r["warmup"]]
    order_ms = [ms for r in rounds for wave in r["waves"] for ms in wave["latencies_ms"]]
    broadcast_ms = [ms for r in rounds for ms in r["broadcast"]["latencies_ms"]]
    result = {
        "clients": len(fleet.connected),
        "p50_ms": round(percentile(order_ms, 50), 1),
        "p95_ms": round(percentile(order_ms, 95), 1),
        "p99_ms": round(percentile(order_ms, 99), 1),
        "missed": sum(r["broadcast"]["missed"] for r in rounds),
        "broadcast_ms": {"p50": round(percentile(broadcast_ms, 50), 1), "p99": round(percentile(broadcast_ms, 99), 1)},
        "connect_failures": len(fleet.connect_errors),
        "server_rss_mib": round(watch.peak_rss / 2**20, 1),
        "method": _method(count, run),
    }
    details = {
        "result": result,
        "goal": GOAL,
        "timings": timings,
        "target_clients": count,
        "order_pushes": {"measured": len(order_ms),
                         "lost": sum(w["lost"] for r in rounds for w in r["waves"]),
                         "duplicated": sum(w["duplicates"] for r in rounds for w in r["waves"]),
                         "at_wrong_client": measured["receipts"].foreign},
        "server_drops": {"total": len(fleet.drops), "clients": len(fleet.dropped),
                         "during_connect": measured["connect"]["server_drops"],
                         "during_idle": measured["idle"]["server_drops"],
                         "reconnects": fleet.reconnects, "reconnect_failures": fleet.reconnect_failures},
        "idle": measured["idle"],
        "server_consumer_crashes": web_log.count("Exception in ASGI application"),
        "server_redis_timeouts": web_log.count("redis.exceptions.TimeoutError"),
        "connect": measured["connect"] | {"errors": dict(list(fleet.connect_errors.items())[:10])},
        "rss_mib": {"before_clients": round(watch.baseline_rss / 2**20, 1),
                    "clients_connected": round(measured["rss_connected"] / 2**20, 1),
                    "peak": round(watch.peak_rss / 2**20, 1)},
        "rounds": [_round_summary(r) for r in measured["rounds"]],
    }
    (run.workdir / "websocket-details.json").write_text(json.dumps(details, indent=1) + "\n")
    return {"websocket": result}


def _summary(samples: list[float]) -> dict:
    return {"n": len(samples), "p50_ms": round(percentile(samples, 50), 1),
            "p99_ms": round(percentile(samples, 99), 1), "max_ms": round(max(samples), 1) if samples else None}


def _round_summary(r: dict) -> dict:
    waves = [{k: v for k, v in w.items() if k != "latencies_ms"} | _summary(w["latencies_ms"]) for w in r["waves"]]
    broadcast = {k: v for k, v in r["broadcast"].items() if k != "latencies_ms"} | _summary(
        r["broadcast"]["latencies_ms"])
    return {**r, "waves": waves, "broadcast": broadcast}
