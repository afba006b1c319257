"""Outbox relay: events per second draining a backlog to RabbitMQ with the durability
guarantee on (publisher confirms, persistent messages, a durable quorum queue), the
commit-to-publish latency at a fixed offered rate, and what a SIGKILL of the publishing
process mid-run loses. Side by side, in the same run, on the same servers:

- ``waybill``: the product's relay (``Relay(orders).drain()``; ``manage.py runrelay`` for
  the latency and kill phases) over the orders context's PostgreSQL outbox;
- ``on_commit_delay``: a Django row committed, then ``transaction.on_commit`` calls a
  Celery task's ``delay()`` (JSON, confirms);
- ``django_outbox_pattern``: the PyPI package (3.2.x), its ``published`` table and its
  ``publish`` command, over RabbitMQ's STOMP plugin;
- ``raw_kombu``: a bare Kombu publish loop with confirms: the ceiling (plus the same loop
  with pipelined confirms, to show what the wire allows).

``run(Run) -> {"relay": {...}}`` starts a private PostgreSQL and RabbitMQ (STOMP plugin on)
on free loopback ports under ``run.workdir``, and stops them (and every process it
started) whatever happens. Every publisher is a subprocess (bench/relay_support/*_proc).
"""

from __future__ import annotations

import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

from .harness import REPO, Processes, Run, latency_summary, shut_down

sys.path[:0] = [p for p in (str(REPO / "platform"), str(REPO)) if p not in sys.path]

from launcher.provision import provision_postgres, provision_rabbitmq  # noqa: E402
from launcher.servers import PostgresServer, RabbitMQServer  # noqa: E402
from launcher.stack import Stack  # noqa: E402

from .relay_support import broker  # noqa: E402
from .relay_support.common import Progress  # noqa: E402

PYTHON = sys.executable
SYSTEMS = ("waybill", "on_commit_delay", "django_outbox_pattern", "raw_kombu")


class _Bench:
    def __init__(self, run: Run, base: Path, pg: PostgresServer, mq: RabbitMQServer):
        self.run = run
        self.rate = run.scale(1000, 300)  # offered messages/s of the fixed-rate phases
        self.base = base
        self.tmp = base / "tmp"
        self.tmp.mkdir(parents=True, exist_ok=True)
        self.procs = Processes(self.tmp)
        pg_urls = provision_postgres(pg, aliases=("orders",))
        broker_urls = provision_rabbitmq(mq, contexts=("orders",))
        self.admin_url = broker_urls["admin"]  # vhost "waybill"
        self.orders_db_url = pg_urls["orders"]
        # Waybill: exactly the environment of a services-mode process hosting orders (its
        # own database role and broker user; the topology declared beforehand, as the
        # launcher does). Base settings: production's values without its Redis demand.
        stack = Stack(workdir=base / "stack", database_urls=pg_urls, broker_urls=broker_urls, redis_url="",
                      settings_module="config.settings.base",
                      extra={"WAYBILL_LOG_LEVEL": "WARNING", "WAYBILL_OTEL_EXPORTER": "none"})
        self.waybill_env = stack.env(contexts=("orders",), broker="orders", service_name="relay-bench")
        for alias in ("orders", "default"):
            stack.manage("migrate", "--database", alias, "--no-input", env=self.waybill_env)
        # The comparison systems: their own database on the same server, admin broker user.
        import psycopg

        with psycopg.connect(pg.superuser_url, autocommit=True) as admin:
            admin.execute("CREATE DATABASE bench_compare")
        self.compare_env = {k: v for k, v in os.environ.items() if not k.startswith(("WAYBILL_", "DJANGO_"))}
        self.compare_env.update({
            "PYTHONPATH": f"{REPO / 'platform'}{os.pathsep}{REPO}",
            "DJANGO_SETTINGS_MODULE": "bench.relay_support.django_settings",
            "BENCH_DATABASE_URL": pg.superuser_url.rsplit("/", 1)[0] + "/bench_compare",
            "BENCH_BROKER_URL": self.admin_url,
            "BENCH_STOMP_PORT": str(mq.stomp_port),
        })
        self.onco(["migrate"])
        broker.declare(self.admin_url)

    # --- subprocess shorthands ------------------------------------------------------
    def _module(self, module: str, args: list) -> list[str]:
        return [PYTHON, "-m", f"bench.relay_support.{module}", *map(str, args)]

    def waybill(self, args: list, timeout: float = 900) -> dict:
        return self.procs.call(f"waybill-{args[0]}", self._module("waybill_proc", args), self.waybill_env, timeout)

    def onco(self, args: list, timeout: float = 900) -> dict:
        return self.procs.call(f"onco-{args[0]}", self._module("onco_proc", args), self.compare_env, timeout)

    def dop(self, args: list, timeout: float = 900) -> dict:
        return self.procs.call(f"dop-{args[0]}", self._module("dop_proc", args), self.compare_env, timeout)

    def kombu(self, args: list, timeout: float = 900) -> dict:
        return self.procs.call(f"kombu-{args[0]}", self._module("kombu_proc", [args[0], self.admin_url, *args[1:]]),
                               self.compare_env, timeout)

    def queue(self, system: str) -> str:
        return broker.QUEUES[system.removesuffix("_pipelined")]

    def start_publisher(self, system: str) -> subprocess.Popen:
        """The long-running publisher, as each system ships it."""
        if system == "waybill":
            proc = self.procs.start("runrelay", [PYTHON, "manage.py", "runrelay"], self.waybill_env)
        else:
            proc = self.procs.start("dop-publish", [PYTHON, "-m", "django", "publish"], self.compare_env)
        time.sleep(0.2)
        if proc.poll() is not None:
            raise RuntimeError(f"{system} publisher exited at start: see {self.tmp}")
        return proc

    def start_consumer(self, system: str, out: Path, *, expected: int, idle: float, timeout: float):
        return self.procs.start(f"consume-{system}", self._module("broker", [
            "consume", self.admin_url, self.queue(system), out, "--expected", expected, "--idle", idle,
            "--timeout", timeout]), self.compare_env)

    def collect(self, system: str, name: str) -> dict[str, int]:
        """Take everything off the system's queue: message id -> copies received."""
        out = self.tmp / f"{name}.arrivals"
        expected = broker.count(self.admin_url, self.queue(system))
        proc = self.start_consumer(system, out, expected=expected, idle=1.0, timeout=300)
        proc.wait(330)
        self.procs.end(proc)
        copies: dict[str, int] = {}
        for line in out.read_text().splitlines():
            ident = line.split()[0]
            copies[ident] = copies.get(ident, 0) + 1
        return copies

    # --- the databases, straight from here (no Django process start per question) --------
    TABLES = {
        "waybill": ("orders_outboxmessage", "sent_at IS NULL", "message_id::text"),
        "django_outbox_pattern": ("published", "status = 1", "body->>'id'"),
        "on_commit_delay": ("bench_shop_shipment", "false", "message_id::text"),
    }

    def _sql(self, system: str, query: str) -> list[tuple]:
        import psycopg

        url = self.orders_db_url if system == "waybill" else self.compare_env["BENCH_DATABASE_URL"]
        with psycopg.connect(url, autocommit=True) as connection:
            cursor = connection.execute(query)
            return cursor.fetchall() if cursor.description else []

    def status(self, system: str) -> dict:
        table, unsent, _ = self.TABLES[system]
        total, pending = self._sql(system, f"SELECT count(*), count(*) FILTER (WHERE {unsent}) FROM {table}")[0]
        return {"total": total, "unsent": pending}

    def committed_ids(self, system: str) -> set[str]:
        table, _, ident = self.TABLES[system]
        return {row[0] for row in self._sql(system, f"SELECT {ident} FROM {table}")}

    def reset(self, system: str) -> None:
        if system in self.TABLES:
            self._sql(system, f"TRUNCATE {self.TABLES[system][0]}")
        broker.purge(self.admin_url, self.queue(system))

    # --- 1. draining a backlog ----------------------------------------------------------
    def backlog_once(self, system: str, n: int) -> dict:
        """One timed run: n messages from committed state to confirmed in the queue."""
        self.reset(system)
        progress = self.tmp / f"{system}.progress"
        progress.unlink(missing_ok=True)
        if system == "waybill":
            result = self.waybill(["drain", n])
        elif system == "django_outbox_pattern":
            result = self.dop(["drain", n])
        elif system == "on_commit_delay":
            result = self.onco(["burst", n, progress])
        elif system == "raw_kombu":
            result = self.kombu(["burst", n, progress])
        elif system == "raw_kombu_pipelined":
            result = self.kombu(["pipelined", n, 500, progress])
        in_queue = broker.wait_for_count(self.admin_url, self.queue(system), n, timeout=30)
        result.update(in_queue=in_queue, events_per_s=result["published"] / result["seconds"])
        if result["published"] != n or in_queue < n:
            result["warning"] = f"expected {n} published and queued"
        return result

    def backlog(self, systems: tuple[str, ...]) -> dict[str, dict]:
        """Warm every system up, size its runs so one fits a time budget (a slow system
        drains less than the full backlog, and does fewer repeats), then repeat in rounds,
        one run of each system per round, so a load change on the shared machine hits
        them all alike."""
        run = self.run
        backlog = run.scale(100_000, 5_000)
        warm = min(backlog, run.scale(2_000, 300))
        budget = run.scale(45.0, 4.0)  # seconds per timed run
        total_budget = run.scale(150.0, 4.0)  # seconds for all of a system's timed runs
        plans: dict[str, dict] = {}
        for system in systems:
            warmups = [self.backlog_once(system, warm) for _ in range(max(1, run.warmups))]
            estimate = warmups[-1]["events_per_s"]
            n = backlog if backlog / estimate <= budget else max(warm, int(estimate * budget) // 1000 * 1000 or warm)
            plans[system] = {"n": n, "estimate": estimate}
        repeats = 1 if run.quick else run.repeats
        if not run.quick:
            slowest = max(plan["n"] / plan["estimate"] for plan in plans.values())
            if repeats * slowest > total_budget:
                repeats = max(3, int(total_budget / slowest))
        runs: dict[str, list[dict]] = {system: [] for system in systems}
        for _ in range(repeats):
            for system in systems:
                runs[system].append(self.backlog_once(system, plans[system]["n"]))
        results = {}
        for system in systems:
            rates = [r["events_per_s"] for r in runs[system]]
            results[system] = {
                "events_per_s": statistics.median(rates),
                "events_per_s_runs": rates,
                "events_per_s_min": min(rates),
                "events_per_s_max": max(rates),
                "backlog_used": plans[system]["n"],
                "repeats": repeats,
                "run_seconds": [round(r["seconds"], 2) for r in runs[system]],
                "warmup_events_per_s": plans[system]["estimate"],
                "warnings": [r["warning"] for r in runs[system] if "warning" in r],
            }
        return results

    # --- 2. commit-to-publish latency at a fixed rate (open loop) ------------------------
    def latency(self, system: str, rate: float | None = None, seconds: float | None = None) -> dict:
        run = self.run
        rate, seconds, workers = rate or self.rate, seconds or run.scale(5.0, 1.0), 8
        total = int(rate * seconds)
        self.reset(system)
        writes = self.tmp / f"{system}.writes"
        progress = self.tmp / f"{system}.progress"
        progress.unlink(missing_ok=True)
        if system == "raw_kombu":
            result = self.kombu(["rate", rate, seconds, writes])
            records = _read_writes(writes)
            call = [(done - started) * 1000 for _, (intended, started, committed, done) in records.items()]
            late = [(done - intended) * 1000 for _, (intended, started, committed, done) in records.items()]
            return {"commit_to_publish_ms": latency_summary(call), "intended_to_publish_ms": latency_summary(late),
                    "measured": "publish() call, confirm included", "rate_per_s": rate, "seconds": seconds,
                    "workers": 1, "achieved_per_s": result["achieved_per_s"]}
        publisher = None
        try:
            if system in ("waybill", "django_outbox_pattern"):
                publisher = self.start_publisher(system)
                self._warm_publisher(system)
            arrivals = self.tmp / f"{system}.arrivals"
            consumer = self.start_consumer(system, arrivals, expected=total, idle=0.5, timeout=seconds + 120)
            time.sleep(0.5)  # the consumer subscribes
            writer = {"waybill": self.waybill, "on_commit_delay": self.onco, "django_outbox_pattern": self.dop}[system]
            result = writer(["write", rate, seconds, workers, writes, progress])
            consumer.wait(seconds + 150)
            self.procs.end(consumer)
        finally:
            if publisher is not None:
                self.procs.end(publisher, signal.SIGINT)
        records = _read_writes(writes)
        received = _read_arrivals(arrivals)
        c2p = [(received[i] - committed) * 1000 for i, (_, _, committed, _) in records.items() if i in received]
        i2p = [(received[i] - intended) * 1000 for i, (intended, _, _, _) in records.items() if i in received]
        return {"commit_to_publish_ms": latency_summary(c2p), "intended_to_publish_ms": latency_summary(i2p),
                "measured": "commit returned -> arrival at a consumer of the queue",
                "rate_per_s": rate, "seconds": seconds, "workers": workers,
                "achieved_per_s": result["achieved_per_s"], "write_errors": result["errors"],
                "missing": sum(1 for i in records if i not in received)}

    def _warm_publisher(self, system: str) -> None:
        """A few messages through the freshly started publisher (connections, imports)."""
        writer = {"waybill": self.waybill, "django_outbox_pattern": self.dop}[system]
        writer(["write", 50, 0.2, 1, self.tmp / "warm.writes", self.tmp / "warm.progress"])
        broker.wait_for_count(self.admin_url, self.queue(system), 10, timeout=15)
        time.sleep(0.3)
        broker.purge(self.admin_url, self.queue(system))

    # --- 3. SIGKILL of the publishing process mid-run ------------------------------------
    def kill(self, system: str) -> dict:
        """SIGKILL trials; ``lost`` is the sum over them."""
        trials = [self.kill_once(system) for _ in range(self.run.scale(3, 1))]
        lost_runs = [trial.pop("lost") for trial in trials]
        return {"lost": sum(lost_runs), "lost_runs": lost_runs,
                "killed_at": [trial.pop("killed_at") for trial in trials], "trials": trials}

    def kill_once(self, system: str) -> dict:
        run = self.run
        size = run.scale(5_000, 600)
        self.reset(system)
        queue = self.queue(system)
        progress_path = self.tmp / f"{system}.kill.progress"
        progress_path.unlink(missing_ok=True)
        detail: dict = {}
        if system in ("waybill", "django_outbox_pattern"):
            (self.waybill if system == "waybill" else self.dop)(["fill", size])
            publisher = self.start_publisher(system)
            reached = broker.wait_for_count(self.admin_url, queue, size // 2, timeout=300, poll=0.01)
            os.kill(publisher.pid, signal.SIGKILL)
            self.procs.end(publisher)
            status = self.status(system)
            detail["killed_at"] = {"in_queue": broker.count(self.admin_url, queue),
                                   "marked_sent": status["total"] - status["unsent"], "backlog": size,
                                   "in_queue_when_kill_sent": reached}
            # Restart the publisher; wait until the outbox says everything went out.
            publisher = self.start_publisher(system)
            deadline = time.monotonic() + 600
            while time.monotonic() < deadline:
                time.sleep(0.2)
                status = self.status(system)
                if status["unsent"] == 0:
                    break
            self.procs.end(publisher, signal.SIGINT)
            detail["unsent_after_restart"] = status["unsent"]
            committed = self.committed_ids(system)
        elif system == "on_commit_delay":
            rate, seconds = self.rate, run.scale(6.0, 1.5)
            writer = self.procs.start("onco-write-kill", self._module("onco_proc", [
                "write", rate, seconds, 8, self.tmp / "onco.kill.writes", progress_path]), self.compare_env)
            progress = _wait_progress(progress_path, int(rate * seconds) // 2, writer, timeout=120)
            os.kill(writer.pid, signal.SIGKILL)
            self.procs.end(writer)
            detail["killed_at"] = {"delayed": progress.get(), "workers": 8, "offered_rate_per_s": rate}
            committed = self.committed_ids(system)
            detail["killed_at"]["committed"] = len(committed)
            detail["restart"] = "nothing to restart from: a delay() that did not happen is gone"
        else:  # raw_kombu: no durable source; lost = confirmed by the broker yet not in the queue
            publisher = self.procs.start("kombu-burst-kill", self._module("kombu_proc", [
                "burst", self.admin_url, size, progress_path]), self.compare_env)
            progress = _wait_progress(progress_path, size // 2, publisher, timeout=300)
            os.kill(publisher.pid, signal.SIGKILL)
            self.procs.end(publisher)
            confirmed = progress.get()
            copies = self.collect(system, f"{system}.kill")
            return {"lost": max(0, confirmed - len(copies)), "duplicates": sum(copies.values()) - len(copies),
                    "killed_at": {"confirmed": confirmed, "in_queue": len(copies), "backlog": size,
                                  "never_published": size - confirmed},
                    "note": "no outbox: the unpublished part of the in-memory batch dies with the process; "
                            "'lost' counts broker-confirmed messages missing from the queue"}
        copies = self.collect(system, f"{system}.kill")
        lost = committed - copies.keys()
        detail.update(lost=len(lost), committed=len(committed), received_distinct=len(committed & copies.keys()),
                      duplicates=sum(copies.values()) - len(copies))
        return detail


GOAL_RATIO_TO_PIPELINED = 0.55  # issue 12


def _goals(results: dict) -> dict:
    """Waybill's relay against the wire's ceiling in this same run: at least 0.55x raw Kombu
    with pipelined confirms, durable (it is: confirms, persistent, quorum queue) and with
    nothing lost across the SIGKILLs."""
    waybill, pipelined = results["waybill"], results["raw_kombu"]["pipelined_confirms"]
    ratio = waybill["events_per_s"] / pipelined["events_per_s"] if pipelined["events_per_s"] else float("nan")
    return {"waybill_at_least_0_55x_pipelined": {
        "met": bool(ratio >= GOAL_RATIO_TO_PIPELINED and waybill.get("lost") == 0), "ratio": round(ratio, 3)}}


def _wait_progress(path: Path, target: int, proc: subprocess.Popen, *, timeout: float) -> Progress:
    deadline = time.monotonic() + timeout
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    progress = Progress(path)
    while progress.get() < target and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    return progress


def _read_writes(path: Path) -> dict[str, tuple[float, float, float, float]]:
    records = {}
    for line in path.read_text().splitlines():
        ident, *times = line.split()
        records[ident] = tuple(float(t) for t in times)
    return records


def _read_arrivals(path: Path) -> dict[str, float]:
    first: dict[str, float] = {}
    for line in path.read_text().splitlines():
        ident, when = line.split()
        if ident not in first:
            first[ident] = float(when)
    return first


METHOD = (
    "One private PostgreSQL 15 (fsync on, synchronous_commit off: a killed client loses nothing it committed) "
    "and one RabbitMQ 3.10 node (STOMP plugin on) on loopback, started and stopped by the scenario on the shared "
    "2-core machine (load averages recorded). Every system publishes the same ~700-byte orders.order_placed "
    "envelope, persistent, into a durable quorum queue of its own, with publisher confirms where the system "
    "supports them. BACKLOG: waybill = N outbox rows COPYed into the orders context's outbox, then "
    "Relay(contexts.get('orders')).drain() (pipelined confirms, one window of unconfirmed messages per batch with at most one per aggregate) timed in a process with the product's services-mode environment "
    "(launcher.stack.Stack.env: own DB role and broker user, config.settings.base, default batch size) until every "
    "row is marked sent; django_outbox_pattern = N rows COPYed into its `published` table, then its producer's "
    "pass timed (the loop body of its `publish` command, STOMP SEND frames, no receipts: the package does not wait "
    "for the broker; its 1-s sleep between passes left out); on_commit_delay = one thread committing N rows, each "
    "transaction's on_commit calling a Celery task's delay() (JSON, confirm_publish); raw_kombu = one thread "
    "calling Kombu Producer.publish N times with confirm_publish (a confirm per message), and "
    "raw_kombu.pipelined_confirms = py-amqp publishes awaiting confirms once per 500. After a warm-up run each, a "
    "system's run size is capped so one run fits a time budget (backlog_used < backlog says so) and the repeats "
    "so all fit a total budget (repeats says how many); the runs go in rounds, one of each system per round, so "
    "background load hits all alike; events_per_s is the median, every run listed. LATENCY: an open-loop generator "
    "offers a fixed rate for a few seconds (latency.rate_per_s, .seconds) to 8 worker threads (request threads), "
    "each committing one transaction with one message; commit_to_publish_ms runs from the moment the commit "
    "returned (first on_commit hook) to the message's arrival at a consumer of the queue (same clock), with the "
    "long-running publisher as shipped (manage.py runrelay with its LISTEN/NOTIFY wake-ups; the package's `publish` "
    "command, which polls every second); intended_to_publish_ms runs from the scheduled send time, so a writer or "
    "relay that falls behind shows; full mode adds the same at 100/s (latency_at_100_per_s). raw_kombu's latency "
    "is its publish() call including the confirm. KILL: SIGKILL of the publishing process once half of a backlog "
    "is in the queue (waybill: runrelay over a filled outbox, then runrelay again until no row is unsent; "
    "django_outbox_pattern: its publish command, likewise; on_commit_delay: the app process itself, 8 threads at "
    "the fixed rate, since it is its own publisher and has nothing to restart from; raw_kombu: the burst, which has "
    "no durable source), repeated (lost_runs); lost = committed rows whose message id never reached the queue, "
    "counted by consuming the queue (for raw_kombu: broker-confirmed messages missing); duplicates listed per trial."
)


def run(run: Run) -> dict:
    base = run.workdir / "relay"
    shutil.rmtree(base, ignore_errors=True)
    base.mkdir(parents=True)
    started = time.monotonic()
    pg = PostgresServer(base / "pg", fast=False, settings={"synchronous_commit": "off"})
    mq = RabbitMQServer(base / "mq", plugins=["rabbitmq_stomp"])
    bench = None
    try:
        pg.start()
        mq.start()
        bench = _Bench(run, base, pg, mq)
        load_at_start = os.getloadavg()
        began = time.monotonic()
        results: dict = bench.backlog((*SYSTEMS, "raw_kombu_pipelined"))
        results["raw_kombu"]["pipelined_confirms"] = results.pop("raw_kombu_pipelined")
        backlog_seconds = time.monotonic() - began
        for system in SYSTEMS:
            began = time.monotonic()
            s = results[system]
            latency = bench.latency(system)
            s["commit_to_publish_ms"] = latency.pop("commit_to_publish_ms")
            s["latency"] = latency
            if not run.quick:  # a rate every system sustains: the idle path's latency
                low = bench.latency(system, rate=100, seconds=3.0)
                s["latency_at_100_per_s"] = {k: low[k] for k in (
                    "commit_to_publish_ms", "intended_to_publish_ms", "achieved_per_s")}
            kill = bench.kill(system)
            s["lost"] = kill["lost"]
            s["lost_runs"] = kill["lost_runs"]
            s["killed_at"] = kill["killed_at"]
            s["kill"] = kill["trials"]
            s["latency_and_kill_seconds"] = round(time.monotonic() - began, 1)
        load_at_end = os.getloadavg()
        this_run = (f" This run: {'quick' if run.quick else 'full'} mode, {time.monotonic() - started:.0f} s "
                    f"({backlog_seconds:.0f} s of backlog runs); load average (1/5/15 min) "
                    f"{'/'.join(f'{x:.1f}' for x in load_at_start)} at the start and "
                    f"{'/'.join(f'{x:.1f}' for x in load_at_end)} at the end, on {os.cpu_count()} cores shared "
                    "with other work.")
        return {"relay": {"backlog": run.scale(100_000, 5_000), **results, "goals": _goals(results),
                          "method": METHOD + this_run}}
    finally:
        # The servers' data (hundreds of MB after a full run) goes; logs stay in relay/tmp.
        shut_down(bench.procs if bench is not None else None, mq, pg)
