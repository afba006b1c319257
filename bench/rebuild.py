"""Rebuild: events per second replaying the event history into readmodels' projections
(``manage.py rebuild``: blue/green, into fresh tables, then the switch), side by side, in
the same run and on the same servers, with the live consumer's rate on the same events:

- ``live``: the product's own worker for readmodels, exactly as services mode runs it
  (``launcher.deployment``'s ``readmodels-worker``, with ``launcher.stack.Stack.process_env``'s
  environment), draining the backlog of the same N messages from ``waybill.readmodels``
  (for at most ``LIVE_BUDGET_S``): an inbox row per message, acks, pushes of every change
  over Redis;
- ``rebuild``: ``manage.py rebuild --consumer readmodels --no-progress`` as the operator
  runs it (readmodels' database role and broker user), reading the N messages from the
  history stream ``waybill.history``: no pushes, no acks per message, batched writes.

The history is published once to ``waybill.events`` as the relay publishes (so the broker
routes it to the stream and to readmodels' queue); each later live drain starts from empty
read models and a queue refilled with the same messages, not through the exchange, so the
stream keeps the N (and the operations report or two the worker's relay backstop publishes
as it starts; ``bench/rebuild_support/history.py``).

``run(Run) -> {"rebuild": {...}}`` starts a private PostgreSQL, RabbitMQ and Redis on free
loopback ports under ``run.workdir`` and stops them (and every process it started)
whatever happens.
"""

from __future__ import annotations

import resource
import shutil
import signal
import statistics
import sys
import time
from pathlib import Path

from .harness import REPO, Processes, Run, shut_down

sys.path[:0] = [p for p in (str(REPO / "platform"), str(REPO)) if p not in sys.path]

from launcher.deployment import processes as deployment_processes  # noqa: E402
from launcher.provision import provision_postgres, provision_rabbitmq  # noqa: E402
from launcher.servers import PostgresServer, RabbitMQServer, RedisServer  # noqa: E402
from launcher.stack import Stack  # noqa: E402

from .consume import _cpu_seconds  # noqa: E402
from .relay_support import broker  # noqa: E402

PYTHON = sys.executable
CONTEXT = "readmodels"
QUEUE = "waybill.readmodels"
INBOX_PROCESSED = "SELECT count(*) FROM readmodels_inboxmessage WHERE status = 'processed'"
# Kept across a live reset: the rebuilds' own records, and the dashboard's one row.
KEPT_TABLES = ("readmodels_rebuild", "readmodels_dashboard")
# What the history makes of the read models, live or rebuilt (their rows, not their clocks).
CHECKSUM = ("SELECT (SELECT count(*) FROM readmodels_ordersummary),"
            " (SELECT coalesce(sum(version), 0) FROM readmodels_ordersummary),"
            " (SELECT count(*) FROM readmodels_ordersummary WHERE status = 'CONFIRMED'),"
            " (SELECT count(*) FROM readmodels_catalogitem),"
            " (SELECT coalesce(sum(version), 0) FROM readmodels_catalogitem)")
POLL_S = 0.02
# Seconds of measured live drain per round: the live consumer takes about 10 minutes for
# the full 100,000 on 2 cores, so a full run measures it on the first part of the backlog
# (a quick run's backlog drains within it, and is checked whole).
LIVE_BUDGET_S = 60.0


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class _Bench:
    def __init__(self, run: Run, base: Path, pg: PostgresServer, mq: RabbitMQServer, redis: RedisServer):
        self.run = run
        self.pg, self.mq, self.redis = pg, mq, redis
        self.tmp = base / "tmp"
        self.tmp.mkdir(parents=True, exist_ok=True)
        self.procs = Processes(self.tmp)
        pg_urls = provision_postgres(pg, aliases=(CONTEXT,))
        broker_urls = provision_rabbitmq(mq, contexts=(CONTEXT,))
        self.admin_url = broker_urls["admin"]  # vhost "waybill"
        self.db_url = pg_urls[CONTEXT]
        # The product's services-mode environment, with a Redis of its own: the live
        # consumer pushes every change through the channel layer, as in production. Base
        # settings; the worker's relay backstop put off (no relay runs here: what the
        # worker's own jobs record stays in its outbox).
        self.stack = Stack(workdir=base / "stack", database_urls=pg_urls, broker_urls=broker_urls,
                           redis_url=redis.url, settings_module="config.settings.base",
                           extra={"WAYBILL_LOG_LEVEL": "WARNING", "WAYBILL_OTEL_EXPORTER": "none",
                                  "WAYBILL_RELAY_SWEEP_SECONDS": "3600"})
        self.worker = next(p for p in deployment_processes() if p.name == f"{CONTEXT}-worker")
        self.worker_env = self.stack.process_env(self.worker)
        # The operator's command: readmodels' role and broker user, as the worker has them.
        self.rebuild_env = self.stack.env(contexts=(CONTEXT,), broker=CONTEXT, service_name="rebuild")
        setup_env = self.stack.env(contexts=(CONTEXT,), broker="admin", service_name="setup")
        self.stack.manage("migrate", "--database", CONTEXT, "--no-input", env=self.worker_env)
        self.stack.manage("migrate", "--database", "default", "--no-input", env=setup_env)
        self.stack.manage("declare_topology", env=setup_env)  # the history stream, then readmodels' queue
        self.bodies = self.tmp / "history.jsonl"
        self.history: dict = {}
        self.servers = {"postgres": pg.pid, "rabbitmq": mq.pid, "redis": redis.pid}

    # --- shorthands -----------------------------------------------------------------------
    def helper(self, args: list, timeout: float = 900) -> dict:
        return self.procs.call(f"history-{args[0]}", [PYTHON, "-m", "bench.rebuild_support.history",
                                                       *map(str, args)], self.rebuild_env, timeout)

    def _sql(self, query: str) -> list[tuple]:
        import psycopg

        with psycopg.connect(self.db_url, autocommit=True) as connection:
            cursor = connection.execute(query)
            return cursor.fetchall() if cursor.description else []

    def _checksum(self) -> list[int]:
        return [int(value) for value in self._sql(CHECKSUM)[0]]  # sums come back as Decimal

    def _servers_cpu(self) -> dict[str, float]:
        return {name: _cpu_seconds(pid) for name, pid in self.servers.items()}

    def publish(self, n: int) -> dict:
        """The history, once: to the events exchange, so into the stream and the queue."""
        self.history = self.helper(["publish", n, self.admin_url, self.bodies])
        if self.history["published"] != n:
            raise RuntimeError(f"published {self.history['published']} of {n}")
        return self.history

    def reset_live(self) -> dict:
        """Empty read models, and the queue holding the history's N messages again."""
        tables = [name for (name,) in self._sql(
            "SELECT tablename FROM pg_tables WHERE schemaname = current_schema() AND tablename LIKE 'readmodels\\_%'")
            if name not in KEPT_TABLES]
        self._sql(f"TRUNCATE {', '.join(tables)}")
        self._sql("VACUUM ANALYZE")
        broker.purge(self.admin_url, QUEUE)
        return self.helper(["refill", self.bodies, self.admin_url, QUEUE])

    # --- one timed live drain -------------------------------------------------------------
    def drain_once(self, n: int, *, label: str, refill: bool, budget: float) -> dict:
        """Start the worker on a backlog of n and time it from the first processed message
        to the n-th (polling the inbox), its start-up left out; or, if it is slower than
        that, for ``budget`` seconds (the backlog is then not drained to its end)."""
        import psycopg

        refilled = self.reset_live() if refill else None
        queued = broker.wait_for_count(self.admin_url, QUEUE, n, timeout=120)
        if queued < n:
            raise RuntimeError(f"{queued} of {n} messages in {QUEUE} before the live drain")
        timeout = 120 + n / 20  # bounded: 20 messages/s, plus start-up
        started = time.monotonic()
        proc = self.procs.start(f"live-{label}", self.stack.argv(self.worker), self.worker_env)
        try:
            with psycopg.connect(self.db_url, autocommit=True) as db, broker.connect(self.admin_url) as amqp:
                channel = amqp.channel()

                def processed() -> int:
                    return db.execute(INBOX_PROCESSED).fetchone()[0]

                def check(deadline: float) -> None:
                    if proc.poll() is not None:
                        raise RuntimeError(f"readmodels worker exited ({proc.returncode}): see {self.tmp}")
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"live: {processed()} of {n} processed within {timeout:.0f} s")

                deadline = started + timeout
                while (first_count := processed()) == 0:
                    check(deadline)
                    time.sleep(POLL_S)
                t_first = time.monotonic()
                cpu_first = {"consumer": _cpu_seconds(proc.pid), **self._servers_cpu()}
                # The broker's ready count while most of the backlog waits (a count of a
                # growing inbox costs PostgreSQL); the inbox's, at the end or the budget's.
                end_by = t_first + budget
                while channel.queue_declare(QUEUE, passive=True).message_count > 0 and time.monotonic() < end_by:
                    check(deadline)
                    time.sleep(0.1)
                while True:
                    count, t_done = processed(), time.monotonic()
                    if count >= n or t_done >= end_by:
                        break
                    check(deadline)
                    time.sleep(POLL_S)
                cpu_done = {"consumer": _cpu_seconds(proc.pid), **self._servers_cpu()}
        finally:
            self.procs.end(proc, signal.SIGTERM, timeout=30)
        measured, seconds = count - first_count, t_done - t_first
        drained = count >= n
        cpu = {k: cpu_done[k] - cpu_first[k] for k in cpu_done}
        (dead,), = self._sql("SELECT count(*) FROM readmodels_deadletter")
        result = {
            "n": n, "measured_events": measured, "seconds": round(seconds, 3),
            "events_per_s": measured / seconds if seconds > 0 else float("nan"),
            "startup_s": round(t_first - started, 2),
            "cpu_ms_per_event": 1000 * cpu["consumer"] / measured,
            "servers_cpu_ms_per_event": {k: round(1000 * cpu[k] / measured, 3) for k in self.servers},
            "refill_s": round(refilled["seconds"], 2) if refilled else None,
            "drained": drained, "checksum": self._checksum(), "dead_letters": dead,
        }
        # Only a drained backlog has all the read models the history makes.
        if dead or (drained and result["checksum"] != self.history["checksum"]):
            result["warning"] = (f"live: read models {result['checksum']}, expected {self.history['checksum']}; "
                                 f"{dead} dead letters")
        return result

    # --- one timed rebuild ----------------------------------------------------------------
    def rebuild_once(self, n: int, *, label: str, live_checksum: list | None) -> dict:
        """Run ``manage.py rebuild`` to its end, polling its row: the replay is timed from
        the first progress it reports to the switch (its start-up and the green tables'
        migration left out, as the live drain leaves out the worker's start-up), and the
        whole command too. The replaced tables are dropped afterwards, untimed."""
        import psycopg

        argv = [PYTHON, "manage.py", "rebuild", "--consumer", CONTEXT, "--no-progress"]
        before = self._sql("SELECT coalesce(max(id), 0) FROM readmodels_rebuild")[0][0]
        row_query = f"SELECT id, status, done FROM readmodels_rebuild WHERE id > {before} ORDER BY id DESC LIMIT 1"
        timeout = 300 + n / 20
        children_before = _children_cpu()
        started = time.monotonic()
        proc = self.procs.start(f"rebuild-{label}", argv, self.rebuild_env)
        seen: dict[str, float] = {}
        first_done = 0
        cpu_first = cpu_replayed = None
        try:
            with psycopg.connect(self.db_url, autocommit=True) as db:
                while proc.poll() is None:
                    if time.monotonic() > started + timeout:
                        raise RuntimeError(f"rebuild not done within {timeout:.0f} s: see {self.tmp}")
                    row = db.execute(row_query).fetchone()
                    now = time.monotonic()
                    if row is not None:
                        _, status, done = row
                        seen.setdefault("claimed", now)
                        if done and "first_progress" not in seen:
                            seen["first_progress"], first_done = now, done
                            cpu_first = {"rebuild": _cpu_seconds(proc.pid), **self._servers_cpu()}
                        if status != "replaying" and "replayed" not in seen:
                            seen["replayed"] = now
                            cpu_replayed = {"rebuild": _cpu_seconds(proc.pid), **self._servers_cpu()}
                    time.sleep(POLL_S)
            t_end = time.monotonic()
        finally:
            self.procs.end(proc, signal.SIGKILL)
        cpu_whole = _children_cpu() - children_before
        if proc.returncode != 0:
            raise RuntimeError(f"rebuild exited ({proc.returncode}): see {self.tmp / f'rebuild-{label}.log'}")
        (rebuild_id, status, done, product_rate, switched_at, started_at), = self._sql(
            "SELECT id, status, done, events_per_s, extract(epoch FROM switched_at)::float8,"
            f" extract(epoch FROM started_at)::float8 FROM readmodels_rebuild WHERE id > {before}"
            " ORDER BY id DESC LIMIT 1")
        checksum = self._checksum()
        self.stack.manage("rebuild", "--consumer", CONTEXT, "--drop-replaced", env=self.rebuild_env)
        if cpu_first is None or cpu_replayed is None:
            raise RuntimeError(f"rebuild {rebuild_id}: its progress was not seen ({seen}): too small a history?")
        measured, seconds = done - first_done, seen["replayed"] - seen["first_progress"]
        cpu = {k: cpu_replayed[k] - cpu_first[k] for k in cpu_replayed}
        result = {
            "n": n, "rebuild_id": rebuild_id, "status": status, "done": done, "measured_events": measured,
            "seconds": round(seconds, 3),
            "events_per_s": measured / seconds if seconds > 0 else float("nan"),
            "events_per_s_reported": product_rate,  # the row's own figure (the replay loop)
            "command_s": round(t_end - started, 2),
            "events_per_s_command": done / (t_end - started),
            "startup_s": round(seen["claimed"] - started, 2),  # Django's start-up, to the row's claim
            "before_first_progress_s": round(seen["first_progress"] - seen["claimed"], 2),  # green tables, first batch
            "switch_s": round(t_end - seen["replayed"], 2),  # the switch, and the command's exit
            "started_to_switched_s": round(float(switched_at) - float(started_at), 2),
            "cpu_ms_per_event": 1000 * cpu["rebuild"] / measured,
            "cpu_ms_per_event_command": 1000 * cpu_whole / done,
            "servers_cpu_ms_per_event": {k: round(1000 * cpu[k] / measured, 3) for k in self.servers},
            "checksum": checksum, "matches_live": None if live_checksum is None else checksum == live_checksum,
        }
        # The stream holds the N, and the operations reports the worker's relay backstop
        # publishes once as it starts (readmodels' own outbox): a few more.
        if status != "switched" or not n <= done <= n + 10 or checksum != self.history["checksum"]:
            result["warning"] = (f"rebuild {rebuild_id} {status} after {done} of {n} events; read models "
                                 f"{checksum}, expected {self.history['checksum']}, live {live_checksum}")
        return result

    # --- rounds ---------------------------------------------------------------------------
    def rounds(self, n: int) -> dict:
        """Round after round, a live drain then a rebuild, so a load change on the shared
        machine hits both alike; the first drain takes the backlog the publish left."""
        self.publish(n)
        live, rebuilds = [], []
        for i in range(self.run.scale(3, 2)):
            live.append(self.drain_once(n, label=f"run{i}", refill=i > 0, budget=LIVE_BUDGET_S))
            live_built = live[-1]["checksum"] if live[-1]["drained"] else None
            rebuilds.append(self.rebuild_once(n, label=f"run{i}", live_checksum=live_built))
            print(f"   round {i}: live {live[-1]['events_per_s']:,.0f} events/s, rebuild "
                  f"{rebuilds[-1]['events_per_s']:,.0f} events/s ({rebuilds[-1]['command_s']} s the command)",
                  flush=True)
        return {"live": live, "rebuilds": rebuilds}


def _median(runs: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def _method(run: Run, history: dict) -> str:
    types = ", ".join(f"{count:,} {name}" for name, count in sorted(history["types"].items()))
    return (
        "One private PostgreSQL 15 (the launcher's production settings: fsync and synchronous_commit on), one RabbitMQ "
        "3.10 node and one Redis on loopback, started and stopped by the scenario on the shared 2-core machine (load "
        "averages recorded). readmodels' database and broker user are provisioned as the launcher does, migrated, and "
        "the topology declared (manage.py declare_topology: the history stream waybill.history bound to waybill.events "
        f"for every routing key, then readmodels' quorum queue). The history: {history['published']:,} messages "
        f"({types}) for {history['orders']:,} orders and {history['products']} products, built with the contracts' "
        "own classes in Waybill envelopes (per order placed, stock_reserved, payment_charged, confirmed, the snapshots "
        "carrying the whole order; a product document every second order; orders overlapping, each step 25 orders "
        "after the one before), published once as the relay publishes (bus.route's exchange and routing key, "
        "persistent, confirms awaited per 500), so the broker put each in the stream and in waybill.readmodels. "
        "live = the product's readmodels-worker as services mode runs it (launcher.deployment's worker_command, "
        "Stack.process_env's environment, config.settings.base, a Redis channel layer, so every change is pushed; its "
        "relay backstop put off), started on the full backlog and timed from the first poll that sees a processed "
        "inbox row (its start-up, startup_s, left out) to the first that sees N, or for at most "
        f"{LIVE_BUDGET_S:.0f} s (it drains the full 100,000 in about ten minutes here: a full run measures it on the "
        "first part of the backlog, live_events_measured, which favours it, its tables being smaller; a drained "
        "backlog is checked against what the history makes) (polls every 20 ms; the broker's ready count every "
        "100 ms while messages wait); events_per_s = messages processed in that window / its length. "
        "rebuild = manage.py rebuild --consumer readmodels --no-progress, with readmodels' database role and broker "
        "user (blue/green: a fresh schema migrated, the stream replayed into it through the same projection code with "
        "side effects off, then the switch), timed from the first poll (20 ms) of its readmodels_rebuild row that sees "
        "progress (done > 0, written after the first batch, then once a second) to the first that sees it past "
        "replaying; events_per_s = events read in that window / its length (it includes the 1 s the history reader "
        "waits to know it has caught up; events_per_s_reported is the row's own figure, events_per_s_command the "
        "whole command's, Django's start-up, the green schema's migration and the switch included). After each "
        "rebuild its replaced tables are dropped (rebuild --drop-replaced, untimed), and what it built is checked "
        "against what the history makes (orders, their versions summed, confirmed, products, their versions summed) "
        "and, after a drained live backlog, against what the live consumer built (matches_live). CPU over each "
        "window with psutil: cpu_ms_per_event = the consumer's process tree (the worker, "
        "the rebuild command), servers_cpu_ms_per_event = PostgreSQL's, RabbitMQ's and Redis's trees "
        "(the bench's polls included); cpu_ms_per_event_command = the rebuild command's whole life (getrusage of the "
        "reaped child) / events. Runs in rounds, a live drain then a rebuild; each later drain starts from empty read "
        "models (truncated) and the queue purged and refilled with the same N messages, published to it alone "
        "(the default exchange), so the stream keeps the N and every rebuild reads all of it (done checked: N, plus "
        "the operations report or two each worker's relay backstop publishes from readmodels' outbox as it starts). "
        "ratio = median rebuild events_per_s / median live events_per_s; goal >= 3x."
    )


def run(run: Run) -> dict:
    import os

    base = run.workdir / "rebuild"
    shutil.rmtree(base, ignore_errors=True)
    base.mkdir(parents=True)
    started = time.monotonic()
    # The launcher's production servers (launcher.up), not the tests' fast ones.
    pg = PostgresServer(base / "pg", fast=False)
    mq = RabbitMQServer(base / "mq")
    redis = RedisServer(base / "redis")
    bench = None
    try:
        pg.start()
        mq.start()
        redis.start()
        bench = _Bench(run, base, pg, mq, redis)
        n = run.scale(100_000, 5_000)
        load_at_start = os.getloadavg()
        began = time.monotonic()
        done = bench.rounds(n)
        rounds_seconds = time.monotonic() - began
        load_at_end = os.getloadavg()
        live, rebuilds = done["live"], done["rebuilds"]
        rate, live_rate = _median(rebuilds, "events_per_s"), _median(live, "events_per_s")
        ratio = rate / live_rate
        this_run = (f" This run: {'quick' if run.quick else 'full'} mode, {time.monotonic() - started:.0f} s "
                    f"({rounds_seconds:.0f} s of rounds); load average (1/5/15 min) "
                    f"{'/'.join(f'{x:.1f}' for x in load_at_start)} at the start and "
                    f"{'/'.join(f'{x:.1f}' for x in load_at_end)} at the end, on {os.cpu_count()} cores shared "
                    "with other work.")
        rebuild = {
            "events": n,
            "events_per_s": rate,
            "live_events_per_s": live_rate,
            "ratio": ratio,
            "cpu_ms_per_event": _median(rebuilds, "cpu_ms_per_event"),
            "live_cpu_ms_per_event": _median(live, "cpu_ms_per_event"),
            "servers_cpu_ms_per_event": statistics.median(sum(r["servers_cpu_ms_per_event"].values())
                                                          for r in rebuilds),
            "live_servers_cpu_ms_per_event": statistics.median(sum(r["servers_cpu_ms_per_event"].values())
                                                               for r in live),
            "events_per_s_command": _median(rebuilds, "events_per_s_command"),
            "ratio_command": _median(rebuilds, "events_per_s_command") / live_rate,
            "cpu_ms_per_event_command": _median(rebuilds, "cpu_ms_per_event_command"),
            "live_events_measured": [r["measured_events"] for r in live],
            "live_drained": all(r["drained"] for r in live),
            "events_per_s_runs": [round(r["events_per_s"], 1) for r in rebuilds],
            "live_events_per_s_runs": [round(r["events_per_s"], 1) for r in live],
            "runs": {"rebuild": rebuilds, "live": live},
            "history": bench.history,
            "warnings": [r["warning"] for r in live + rebuilds if "warning" in r],
            "goal": ">= 3x",
            "goals": {"rebuild_at_least_3x_live": {"met": ratio >= 3.0, "ratio": round(ratio, 3)}},
            "load_average": {"start": list(load_at_start), "end": list(load_at_end)},
            "method": _method(run, bench.history) + this_run,
        }
        return {"rebuild": rebuild}
    finally:
        shut_down(bench.procs if bench is not None else None, redis, mq, pg)
