"""Consumer: messages per second draining a backlog of queued messages through one
context's consumer on RabbitMQ and PostgreSQL, each message applied exactly once with its
effects durable (an inbox row, the handler's writes and its outbox messages in one
transaction, then the ack). Side by side, in the same run, on the same servers:

- ``waybill``: the product's own worker for inventory, exactly as services mode runs it
  (the command ``launcher.deployment`` gives ``inventory-worker``, with the environment
  ``launcher.stack.Stack.process_env`` gives it), draining ``waybill.inventory``;
- ``celery_task``: the usual Django way, a plain Celery task per message (``acks_late``,
  prefetch multiplier 1, one ``transaction.atomic()``: inbox row, the same handler),
  ``bench/consume_support/celery_app.py``.

Both apply ``inventory.reserve_stock`` with inventory's real handler, so both write per
message an inbox row, a reservation, its two products' stock and a ``stock_reserved`` event;
of the products' state documents (``product_updated``) the task records two per message,
Waybill's batch each product's last (``waybill.outbox._latest_documents``).
Waybill's worker gives a run of them in one batch to the handler's ``many``
(``waybill.api.Batched``: ``services.stock_reserve_many``, whose effects are those of
reserving each in turn, ``apps/inventory/tests/test_stock.py``); the Celery task calls
the handler for one message, as a task does.

``run(Run) -> {"consume": {...}}`` starts a private PostgreSQL and RabbitMQ on free loopback
ports under ``run.workdir`` and stops them (and every process it started) whatever happens.

    PYTHONPATH=platform:. .venv/bin/python -m bench.consume --profile [cprofile|py-spy] [--quick]

runs the same drains with each consumer profiled and prints each one's top functions,
writing no results: ``cprofile`` (the default) runs the consumer process under cProfile
(every thread, CPU clock, its whole life, start-up included:
``bench/pipeline_support/profiled.py``; it slows the consumer 2-3x), ``py-spy`` samples
it from outside during the timed window only (200 Hz, idle threads left out, the process
not paused), so its figures stay close to an unprofiled run's.
"""

from __future__ import annotations

import os
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
from launcher.servers import PostgresServer, RabbitMQServer  # noqa: E402
from launcher.stack import Stack  # noqa: E402

from .relay_support import broker  # noqa: E402

PYTHON = sys.executable
SYSTEMS = ("waybill", "celery_task")
CONTEXT = "inventory"
PRODUCTS = 100
QUEUES = {"waybill": "waybill.inventory", "celery_task": "bench.consume.celery"}
# Waybill's worker applies its event messages on one thread (the Celery consumer's, which
# calls ContextConsumer.on_message; its --concurrency 4 threads serve its task queue), so
# the comparison gets one too: the solo pool, tasks run on the worker's main thread.
CELERY_POOL = ("--pool", "solo")
# What the drain writes into inventory's database; emptied before every run.
WRITTEN_TABLES = ("inventory_inboxmessage", "inventory_outboxmessage", "inventory_reservation",
                  "inventory_deadletter")
INBOX_PROCESSED = "SELECT count(*) FROM inventory_inboxmessage WHERE status = 'processed'"
POLL_S = 0.02


def _cpu_seconds(pid: int) -> float:
    """CPU seconds (user + system) of a process and its whole tree, reaped children too."""
    import psutil

    from bench.pipeline_support.sampler import ProcessSampler

    try:
        return ProcessSampler.cpu_of(psutil.Process(pid), tree=True)
    except psutil.Error:
        return float("nan")


class _Bench:
    def __init__(self, run: Run, base: Path, pg: PostgresServer, mq: RabbitMQServer, *,
                 profile: str | None = None, profile_dir: Path | None = None):
        self.run = run
        self.pg, self.mq = pg, mq
        self.tmp = base / "tmp"
        self.tmp.mkdir(parents=True, exist_ok=True)
        self.procs = Processes(self.tmp)
        self.profile, self.profile_dir = profile, profile_dir
        self.profiles: dict[str, Path] = {}
        pg_urls = provision_postgres(pg, aliases=(CONTEXT,))
        broker_urls = provision_rabbitmq(mq, contexts=(CONTEXT,))
        self.admin_url = broker_urls["admin"]  # vhost "waybill"
        self.db_url = pg_urls[CONTEXT]
        # The product's services-mode environment. Base settings: production's values
        # without its Redis demand. The worker's relay backstop (a sweep of the outbox
        # every WAYBILL_RELAY_SWEEP_SECONDS, for a relay process that missed a wake-up)
        # is put off: publishing the outbox is the relay scenario's, there is no relay
        # process here, and the Celery comparison publishes nothing either.
        self.stack = Stack(workdir=base / "stack", database_urls=pg_urls, broker_urls=broker_urls, redis_url="",
                           settings_module="config.settings.base",
                           extra={"WAYBILL_LOG_LEVEL": "WARNING", "WAYBILL_OTEL_EXPORTER": "none",
                                  "WAYBILL_RELAY_SWEEP_SECONDS": "3600"})
        self.worker = next(p for p in deployment_processes() if p.name == f"{CONTEXT}-worker")
        self.worker_env = self.stack.process_env(self.worker)
        setup_env = self.stack.env(contexts=(CONTEXT,), broker="admin", service_name="setup")
        self.stack.manage("migrate", "--database", CONTEXT, "--no-input", env=self.worker_env)
        self.stack.manage("migrate", "--database", "default", "--no-input", env=setup_env)
        self.stack.manage("declare_topology", env=setup_env)
        # The comparison: same settings and database role, the admin broker user (its
        # queue is no context's).
        self.celery_env = {**self.stack.env(contexts=(CONTEXT,), broker=CONTEXT, service_name="celery-task"),
                           "BENCH_BROKER_URL": self.admin_url}
        self._declare_celery_queue()
        self.helper(["seed", PRODUCTS])
        self._sql(f"TRUNCATE {', '.join(WRITTEN_TABLES)}")

    def _declare_celery_queue(self) -> None:
        """As the comparison app's task_queues declare it: before the first publish."""
        queue = QUEUES["celery_task"]
        with broker.connect(self.admin_url) as connection:
            channel = connection.channel()
            channel.exchange_declare(queue, "direct", durable=True, auto_delete=False)
            channel.queue_declare(queue, durable=True, auto_delete=False, arguments=broker.QUORUM)
            channel.queue_bind(queue, queue, routing_key=queue)

    # --- shorthands -----------------------------------------------------------------------
    def helper(self, args: list, timeout: float = 600) -> dict:
        return self.procs.call(f"backlog-{args[0]}", [PYTHON, "-m", "bench.consume_support.backlog", *map(str, args)],
                               self.celery_env, timeout)

    def _sql(self, query: str) -> list[tuple]:
        import psycopg

        with psycopg.connect(self.db_url, autocommit=True) as connection:
            cursor = connection.execute(query)
            return cursor.fetchall() if cursor.description else []

    def reset(self, system: str) -> None:
        """A fresh state: nothing the previous run wrote, every product's stock free again."""
        self._sql(f"TRUNCATE {', '.join(WRITTEN_TABLES)}")
        self._sql("UPDATE inventory_product SET reserved = 0, version = 1")
        self._sql("VACUUM ANALYZE inventory_product")
        broker.purge(self.admin_url, QUEUES[system])

    def consumer_argv(self, system: str, label: str) -> tuple[list[str], dict]:
        if system == "waybill":
            argv, env = self.stack.argv(self.worker), self.worker_env
        else:
            argv = [str(Path(PYTHON).parent / "celery"), "-A", "bench.consume_support.celery_app:app", "worker",
                    "-Q", QUEUES["celery_task"], "-n", "celery-task@%h", *CELERY_POOL, "--without-mingle",
                    "--without-gossip", "--without-heartbeat", "--loglevel", "WARNING"]
            env = self.celery_env
        if self.profile == "cprofile":
            out = self.profile_dir / f"{system}-{label}.prof"
            self.profiles[system] = out
            rest = argv[1:] if argv[0] == PYTHON else argv  # a console script (celery) runs as a path
            argv = [PYTHON, "-m", "bench.pipeline_support.profiled", str(out), *rest]
        return argv, env

    def _spy(self, system: str, label: str, pid: int):
        out = self.profile_dir / f"{system}-{label}.pyspy.txt"
        self.profiles[system] = out
        return self.procs.start(f"py-spy-{system}-{label}", [
            str(Path(PYTHON).parent / "py-spy"), "record", "--pid", str(pid), "--output", str(out),
            "--format", "raw", "--rate", "200", "--nonblocking"], dict(os.environ))

    # --- one timed drain --------------------------------------------------------------------
    def drain_once(self, system: str, n: int, *, label: str, expected_rate: float | None = None) -> dict:
        """Publish n messages, then start the consumer and time it from the first processed
        message to the n-th (polling the inbox), the consumer's start-up left out."""
        import psycopg

        self.reset(system)
        published = self.helper(["publish", system, n, self.admin_url, PRODUCTS])
        queued = broker.wait_for_count(self.admin_url, QUEUES[system], n, timeout=60)
        if queued < n:
            raise RuntimeError(f"{system}: {queued} of {n} messages in the queue after publishing")
        # Bounded: ten times what the warm-up's rate says (or 10 messages/s), plus start-up.
        timeout = 120 + n / (expected_rate / 10 if expected_rate else 10)
        argv, env = self.consumer_argv(system, label)
        started = time.monotonic()
        proc = self.procs.start(f"{system}-{label}", argv, env)
        servers = {"postgres": self.pg.pid, "rabbitmq": self.mq.pid}
        try:
            with psycopg.connect(self.db_url, autocommit=True) as db, broker.connect(self.admin_url) as amqp:
                channel = amqp.channel()

                def processed() -> int:
                    return db.execute(INBOX_PROCESSED).fetchone()[0]

                def check(deadline: float) -> None:
                    if proc.poll() is not None:
                        raise RuntimeError(f"{system} consumer exited ({proc.returncode}): see {self.tmp}")
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"{system}: {processed()} of {n} processed within {timeout:.0f} s")

                deadline = started + timeout
                while (first_count := processed()) == 0:
                    check(deadline)
                    time.sleep(POLL_S)
                t_first = time.monotonic()
                spy = self._spy(system, label, proc.pid) if self.profile == "py-spy" else None
                sessions_first = self._sessions(db)
                cpu_first = {"consumer": _cpu_seconds(proc.pid), **{k: _cpu_seconds(v) for k, v in servers.items()}}
                # The broker's ready count is the cheap question while most of the backlog
                # waits (a count of a growing inbox costs PostgreSQL); the inbox's, at the end.
                while channel.queue_declare(QUEUES[system], passive=True).message_count > 0:
                    check(deadline)
                    time.sleep(0.1)
                while (count := processed()) < n:
                    check(deadline)
                    time.sleep(POLL_S)
                t_done = time.monotonic()
                sessions_done = self._sessions(db)
                cpu_done = {"consumer": _cpu_seconds(proc.pid), **{k: _cpu_seconds(v) for k, v in servers.items()}}
                if spy is not None:
                    self.procs.end(spy, signal.SIGINT, timeout=30)  # py-spy writes its file on SIGINT
        finally:
            self.procs.end(proc, signal.SIGTERM, timeout=30)
        measured = count - first_count
        seconds = t_done - t_first
        cpu = {k: cpu_done[k] - cpu_first[k] for k in cpu_done}
        outcome = self.outcome()
        result = {
            "n": n, "measured_messages": measured, "seconds": seconds,
            "messages_per_s": measured / seconds if seconds > 0 else float("nan"),
            "startup_s": round(t_first - started, 2),
            "cpu_ms_per_message_consumer": 1000 * cpu["consumer"] / measured,
            "cpu_ms_per_message_servers": 1000 * (cpu["postgres"] + cpu["rabbitmq"]) / measured,
            "cpu_ms_per_message_postgres": 1000 * cpu["postgres"] / measured,
            "cpu_ms_per_message_rabbitmq": 1000 * cpu["rabbitmq"] / measured,
            "publish_s": round(published["seconds"], 2), "outcome": outcome,
            # Database connections opened during the window (the bench's own: none).
            "db_connections_opened": sessions_done - sessions_first,
        }
        result["cpu_ms_per_message"] = result["cpu_ms_per_message_consumer"] + result["cpu_ms_per_message_servers"]
        expected = {"processed": n, "reserved": n, "rejected": 0, "outbox": 3 * n, "dead_letters": 0}
        if outcome != expected:
            result["warning"] = f"expected {expected}, found {outcome}"
        return result

    @staticmethod
    def _sessions(db) -> int:
        return db.execute("SELECT sessions FROM pg_stat_database WHERE datname = current_database()").fetchone()[0]

    def outcome(self) -> dict:
        """What the drain wrote; the outbox counted for the handler's messages only (the
        worker's scheduler adds its operations report, waybill.outbox_measured)."""
        (processed, reserved, rejected, outbox, dead), = self._sql(
            "SELECT (SELECT count(*) FROM inventory_inboxmessage WHERE status = 'processed'),"
            " (SELECT count(*) FROM inventory_reservation WHERE status = 'reserved'),"
            " (SELECT count(*) FROM inventory_reservation WHERE status = 'rejected'),"
            " (SELECT count(*) FROM inventory_outboxmessage WHERE message_type IN"
            "  ('inventory.stock_reserved', 'inventory.product_updated')),"
            " (SELECT count(*) FROM inventory_deadletter)")
        return {"processed": processed, "reserved": reserved, "rejected": rejected, "outbox": outbox,
                "dead_letters": dead}

    # --- warm-ups, sizes, rounds ----------------------------------------------------------------
    def drains(self) -> dict[str, dict]:
        """Warm each system up, size its runs so one fits a time budget (a slow system
        drains less than the full backlog), then repeat in rounds, one run of each system
        per round, so a load change on the shared machine hits both alike."""
        run = self.run
        backlog = run.scale(50_000, 2_000)
        warm = min(backlog, run.scale(1_000, 200))
        budget = run.scale(20.0, 5.0)  # seconds of measured drain per run
        plans: dict[str, dict] = {}
        for system in SYSTEMS:
            warmups = [self.drain_once(system, warm, label=f"warmup{i}") for i in range(max(1, run.warmups))]
            estimate = warmups[-1]["messages_per_s"]
            n = backlog if backlog / estimate <= budget else max(warm, int(estimate * budget) // 100 * 100)
            plans[system] = {"n": n, "estimate": estimate, "warmup_warnings": [
                w["warning"] for w in warmups if "warning" in w]}
        runs: dict[str, list[dict]] = {system: [] for system in SYSTEMS}
        for i in range(run.repeats):
            for system in SYSTEMS:
                runs[system].append(self.drain_once(system, plans[system]["n"], label=f"run{i}",
                                                    expected_rate=plans[system]["estimate"]))
        results = {}
        for system in SYSTEMS:
            done = runs[system]
            rates = [r["messages_per_s"] for r in done]
            entry = {
                "messages_per_s": statistics.median(rates),
                "messages_per_s_runs": [round(r, 1) for r in rates],
                "messages_per_s_min": min(rates),
                "messages_per_s_max": max(rates),
                "backlog_used": plans[system]["n"],
                "repeats": len(done),
                "run_seconds": [round(r["seconds"], 2) for r in done],
                "startup_s": [r["startup_s"] for r in done],
                "warmup_messages_per_s": plans[system]["estimate"],
                "warnings": plans[system]["warmup_warnings"] + [r["warning"] for r in done if "warning" in r],
                "outcome_last_run": done[-1]["outcome"],
                "db_connections_opened_runs": [r["db_connections_opened"] for r in done],
            }
            for key in ("cpu_ms_per_message", "cpu_ms_per_message_consumer", "cpu_ms_per_message_servers",
                        "cpu_ms_per_message_postgres", "cpu_ms_per_message_rabbitmq"):
                values = [r[key] for r in done]
                entry[key] = statistics.median(values)
                entry[f"{key}_runs"] = [round(v, 3) for v in values]
            results[system] = entry
        return results


def _method(run: Run) -> str:
    return (
        "One private PostgreSQL 15 (the launcher's production settings: fsync and synchronous_commit on, so an acked "
        "message's effects are durable) and one RabbitMQ 3.10 node on loopback, started and stopped by the scenario on "
        "the shared 2-core machine (load averages recorded). inventory's database is provisioned as the launcher does "
        f"(own role, own broker user), migrated, and seeded with {PRODUCTS} products through inventory's "
        "product_create service, stock enough that no reservation is refused. Each run starts from a fresh state "
        "(inbox, outbox, reservations and dead letters truncated, products' reserved counts back to 0, queue purged), "
        "publishes a backlog of N inventory.reserve_stock commands (a new order of two lines on two products each) "
        "into a durable quorum queue, persistent, with publisher confirms (awaited per 500), and only then starts the "
        "consumer process, so the drain is measured, not the publish. waybill = the product's inventory-worker as "
        "services mode runs it (launcher.deployment's worker_command: Celery, config.celery:app, --pool threads "
        "--concurrency 4; launcher.stack.Stack.process_env's environment with WAYBILL_CONSUMERS=inventory, "
        "config.settings.base, its default WAYBILL_CONSUMER_PREFETCH and whatever consumer code the branch holds), "
        "the messages Waybill envelopes on the exchange and routing key waybill.bus.route gives (waybill.commands, "
        "'inventory'); its relay backstop is put off (WAYBILL_RELAY_SWEEP_SECONDS=3600: no relay runs, and publishing "
        "the outbox is the relay scenario's). celery_task = a plain Celery app (bench/consume_support/celery_app.py, "
        "the same Django settings and database role) with one task, acks_late=True, worker_prefetch_multiplier=1, "
        "database connections reused across tasks (CELERY_DB_REUSE_MAX; Celery's Django fixup otherwise closes them "
        "before and after every task, and a new connection per message costs more than its work), JSON, the same "
        "envelope as its one argument, run by `celery worker --pool solo` (one task at a time on one "
        "thread, as Waybill's worker applies its event messages on its one consumer thread; --loglevel WARNING, so no "
        "per-task log lines); per task one transaction.atomic() on inventory's database: an inbox lookup by message "
        "id (dedupe), the inbox row, and inventory's real handler on_reserve_stock (Waybill's worker gives a run of "
        "a batch's messages to that handler's many, stock_reserve_many: one lock of the run's products, one insert of "
        "its reservations, one update of its products; its effects are those of reserving each in turn, "
        "apps/inventory/tests/test_stock.py). Both therefore write per message "
        "an inbox row, a reservation, its two products' stock and a stock_reserved event; of the products' state "
        "documents (product_updated) the task records two per message, Waybill's batch only each product's last "
        "state (checked after every run: "
        "outcome_last_run, warnings; db_connections_opened_runs counts the database connections opened during each "
        "window). TIMING: from the first poll that sees a processed inbox row (the consumer's "
        "start-up, startup_s, left out) to the first that sees N (polls every 20 ms; while messages are still ready "
        "in the queue the broker's count is polled every 100 ms instead of counting the inbox); messages_per_s = "
        "messages processed in that window / its length. CPU over the same window with psutil: "
        "cpu_ms_per_message_consumer = the consumer process (its tree), cpu_ms_per_message_servers = PostgreSQL's "
        "and RabbitMQ's process trees (reaped backends included; the bench's own polls included, alike for both), "
        "cpu_ms_per_message = their sum. The goal waybill_at_least_5x_celery_task compares messages_per_s (median "
        "over the repeats); ratio_cpu_celery_task_to_waybill compares cpu_ms_per_message (the sum). After a warm-up "
        "run of each system (smaller), a system's run size is capped so one run's drain fits a time budget "
        "(backlog_used < backlog says so); the runs go in rounds, one of each system per round; medians, every run "
        "listed."
    )


def run(run: Run, *, profile: str | None = None) -> dict:
    base = run.workdir / "consume"
    shutil.rmtree(base, ignore_errors=True)
    base.mkdir(parents=True)
    started = time.monotonic()
    # The launcher's production server (launcher.up), not the tests' fast one.
    pg = PostgresServer(base / "pg", fast=False, settings={"max_connections": "300"})
    mq = RabbitMQServer(base / "mq")
    bench = None
    profile_dir = None
    if profile:
        profile_dir = base / "prof"
        profile_dir.mkdir()
    try:
        pg.start()
        mq.start()
        bench = _Bench(run, base, pg, mq, profile=profile, profile_dir=profile_dir)
        load_at_start = os.getloadavg()
        began = time.monotonic()
        results: dict = bench.drains()
        drain_seconds = time.monotonic() - began
        load_at_end = os.getloadavg()
        waybill, celery_task = results["waybill"], results["celery_task"]
        ratio = waybill["messages_per_s"] / celery_task["messages_per_s"]
        this_run = (f" This run: {'quick' if run.quick else 'full'} mode, {time.monotonic() - started:.0f} s "
                    f"({drain_seconds:.0f} s of warm-ups and runs); load average (1/5/15 min) "
                    f"{'/'.join(f'{x:.1f}' for x in load_at_start)} at the start and "
                    f"{'/'.join(f'{x:.1f}' for x in load_at_end)} at the end, on {os.cpu_count()} cores shared "
                    "with other work.")
        consume = {
            "backlog": run.scale(50_000, 2_000),
            "context": CONTEXT,
            "message_type": "inventory.reserve_stock",
            **results,
            "ratio_waybill_to_celery_task": ratio,
            "ratio_cpu_celery_task_to_waybill": celery_task["cpu_ms_per_message"] / waybill["cpu_ms_per_message"],
            "goals": {"waybill_at_least_5x_celery_task": {"met": ratio >= 5.0, "ratio": round(ratio, 3)}},
            "load_average": {"start": list(load_at_start), "end": list(load_at_end)},
            "method": _method(run) + this_run,
        }
        if profile:
            consume["profiles"] = {system: str(path) for system, path in bench.profiles.items()}
        return {"consume": consume}
    finally:
        shut_down(bench.procs if bench is not None else None, mq, pg)


def _collapsed_summary(path: Path, *, top: int) -> str:
    """py-spy's raw output (one ``frame;frame;... count`` line per stack): the share of
    samples in which each function is on the stack (inclusive) and at its top (self)."""
    inclusive: dict[str, int] = {}
    own: dict[str, int] = {}
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        n = int(count)
        total += n
        frames = stack.split(";")
        for frame in set(frames):
            inclusive[frame] = inclusive.get(frame, 0) + n
        own[frames[-1]] = own.get(frames[-1], 0) + n
    lines = [f"{total} samples"]
    for title, table in (("on the stack (inclusive)", inclusive), ("at the top (self)", own)):
        lines.append(f"--- {title}")
        for frame, n in sorted(table.items(), key=lambda item: -item[1])[:top]:
            lines.append(f"{100 * n / max(total, 1):5.1f}%  {frame}")
    return "\n".join(lines)


def _profile_main(argv: list[str]) -> int:
    import argparse
    import io
    import pstats

    parser = argparse.ArgumentParser(prog="python -m bench.consume", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", nargs="?", const="cprofile", choices=["cprofile", "py-spy"], required=True,
                        help="how to profile the consumer processes (default cprofile)")
    parser.add_argument("--quick", action="store_true", help="small sizes, two repeats")
    parser.add_argument("--top", type=int, default=35)
    args = parser.parse_args(argv)
    result = run(Run(quick=args.quick), profile=args.profile)["consume"]
    for system in SYSTEMS:
        print(f"{system}: {result[system]['messages_per_s']:.0f} messages/s profiled ({args.profile}), "
              f"{result[system]['cpu_ms_per_message_consumer']:.2f} ms consumer CPU per message")
    for system, path in result.get("profiles", {}).items():
        path = Path(path)
        if not path.exists():
            print(f"\n======== {system}: no profile written ({path}) ========")
            continue
        if args.profile == "py-spy":
            report = _collapsed_summary(path, top=args.top)
        else:
            out = io.StringIO()
            stats = pstats.Stats(str(path), stream=out)
            stats.sort_stats("tottime").print_stats(args.top)
            stats.sort_stats("cumulative").print_stats(args.top)
            report = out.getvalue()
        print(f"\n======== {system} (last run, {path}) ========\n{report}")
    return 0


if __name__ == "__main__":
    sys.exit(_profile_main(sys.argv[1:]))
