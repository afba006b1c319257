"""The kernel's scheduler: the one home of periodic work. Consumers only consume.

What it runs, for each consumer a process hosts:

- the kernel's own jobs, declared once below (``KERNEL_JOBS``): the consumer's due inbox
  retries, the pruning of its old inbox and outbox rows, its context's outbox report for
  the operations dashboard, for a consumer whose bindings are chosen at run time its
  queue's bindings (``ContextConsumer.rebind``) and, in services mode, the relay's backstop;
- the jobs its context's manifest declares for that consumer (``manifest.Job``: saga
  deadlines, the dashboard, the change log's pruning, webhook sends), so a bulkhead's
  jobs run where the bulkhead runs.

Who drives it: one scheduler thread per hosted consumer (a slow job of one, such as
sending webhooks or draining a backlog, cannot hold up another's, such as orders' saga
deadlines): ``runtime.start_consumers`` starts them beside their consumers, called
embedded by the runtime and in services mode by the worker bootstep of each Celery worker,
for the consumers that worker hosts (``WAYBILL_CONSUMERS``). Either way it runs only while its consumer is
connected to the bus: orders' saga clock reads a long gap between runs as an outage
during which no deadline may pass (``apps/orders/saga.py``).

An interval means "about every N seconds in this process". Several processes run the same
jobs (replicas, a bulkhead beside its context), so every job must be safe to run in
several at once, and one that should happen about once for all of them (the outbox report,
the dashboard) coalesces through its database, never through this process's memory.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from django.conf import settings
from django.db import close_old_connections, connections

from . import opsreport, retention
from .consumer import ContextConsumer
from .relay import Relay

log = logging.getLogger(__name__)

# How often a driver asks the scheduler what is due: the shortest interval worth keeping.
TICK_SECONDS = 0.25
# A job that takes longer than its interval, and at least this long, is logged: it delays
# every job behind it in the same scheduler.
OVERRUN_SECONDS = 1.0


@dataclass(frozen=True)
class Job:
    """One piece of periodic work, ready to run: ``run()`` about every ``every`` seconds."""

    name: str
    run: Callable[[], object]
    every: float


class Scheduler:
    """Runs each of its jobs when due, one after another. A job is due at the first tick
    and then ``every`` seconds after its last start; one that fails is logged with its
    traceback and simply comes due again, and never keeps the others from running."""

    def __init__(self, jobs: Iterable[Job], *, name: str = "", clock: Callable[[], float] = time.monotonic):
        self.jobs = tuple(jobs)
        self.name = name
        self._clock = clock
        # By position, not name: two jobs may share a function (and so a name).
        self._due = [clock()] * len(self.jobs)

    def run_due(self) -> list[Job]:
        """Run every job whose time has come; returns those it ran (failed ones too)."""
        ran = []
        for index, job in enumerate(self.jobs):
            started = self._clock()
            if started < self._due[index]:
                continue
            self._due[index] = started + job.every
            ran.append(job)
            try:
                job.run()
            except Exception:  # noqa: BLE001 - one job's failure is logged, never the others'
                log.exception("%s: scheduled job %s failed", self.name, job.name)
            took = self._clock() - started
            if took > max(job.every, OVERRUN_SECONDS):
                log.warning("%s: scheduled job %s took %.1f s, longer than its interval of %.1f s",
                            self.name, job.name, took, job.every)
        return ran

    def seconds_to_next(self) -> float:
        """How long until the next job is due (0 if one is due now)."""
        if not self.jobs:
            return TICK_SECONDS
        return max(min(self._due) - self._clock(), 0.0)

    def run(self, stop: threading.Event, connected: threading.Event | None = None) -> None:
        """Tick until ``stop``, while ``connected`` is set (its consumer is on the bus)."""
        try:
            while not stop.is_set():
                if connected is None or connected.is_set():
                    # A long-lived thread must notice a database connection that died or
                    # outlived CONN_MAX_AGE, as Django does between requests.
                    close_old_connections()
                    self.run_due()
                stop.wait(min(self.seconds_to_next(), TICK_SECONDS))
        finally:
            connections.close_all()


# --- the kernel's own periodic work, declared once -------------------------------------------

def _relay_backstop(consumer: ContextConsumer) -> int:
    """Publish whatever the relay process left behind (a missed wake-up, the relay down).
    Safe beside the relay: rows are claimed with SKIP LOCKED."""
    relay = Relay(consumer.context)
    try:
        return relay.drain()
    finally:
        relay.close()


@dataclass(frozen=True)
class KernelJob:
    """Periodic work the kernel does for every hosted consumer."""

    name: str
    run: Callable[[ContextConsumer], object]
    # Seconds, or the name of the setting that holds them.
    every: float | str
    # Only for the registration that relays its context's outbox (a bulkhead shares it):
    # work on the outbox is done once per context, by its main consumer.
    outbox: bool = False
    # Only where no relay thread runs beside the consumer (the services mode's workers);
    # embedded, the relay thread sweeps itself.
    backstop: bool = False
    # Only for a consumer whose bindings are chosen at run time (``manifest.Consumer.bindings``).
    bindings: bool = False

    def interval(self) -> float:
        return float(getattr(settings, self.every)) if isinstance(self.every, str) else self.every


KERNEL_JOBS = (
    # A retry is a re-consumption: the consumer runs it; when is the scheduler's business.
    KernelJob("inbox retries", ContextConsumer.retry_due, every=TICK_SECONDS),
    KernelJob("outbox report", lambda consumer: opsreport.outbox_report(consumer.context),
              every=opsreport.REPORT_SECONDS, outbox=True),
    KernelJob("retention", lambda consumer: retention.prune(consumer.context), every=retention.PRUNE_EVERY_SECONDS),
    KernelJob("relay backstop", _relay_backstop, every="WAYBILL_RELAY_SWEEP_SECONDS", outbox=True, backstop=True),
    # Each tick, so a change made in this process is bound at once; rebind() itself asks
    # the context only every WAYBILL_BINDINGS_SECONDS otherwise.
    KernelJob("bindings", ContextConsumer.rebind, every=TICK_SECONDS, bindings=True),
)


def jobs_for(consumer: ContextConsumer, *, relay_backstop: bool) -> list[Job]:
    """Everything periodic that runs where ``consumer`` runs: the kernel's jobs, then its
    context's from the manifest (``BoundedContext.periodic``)."""
    context = consumer.context
    jobs = [
        Job(f"{context.name} {job.name}", lambda job=job: job.run(consumer), job.interval())
        for job in KERNEL_JOBS
        if (context.relay or not job.outbox) and (relay_backstop or not job.backstop)
        and (context.bindings is not None or not job.bindings)
    ]
    jobs += [Job(f"{context.name} {job.name}", job.run, job.every) for job in context.periodic]
    return jobs


def scheduler_for(consumer: ContextConsumer, *, relay_backstop: bool,
                  clock: Callable[[], float] = time.monotonic) -> Scheduler:
    return Scheduler(jobs_for(consumer, relay_backstop=relay_backstop), name=consumer.context.name, clock=clock)
