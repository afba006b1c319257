"""The runtime: relays, consumers and schedulers of the hosted contexts as threads of
one process.

Embedded, ``manage.py runplatform`` runs both beside the ASGI server. In services mode
``manage.py runrelay`` runs the relays alone (consumers and their schedulers live in the
Celery worker).

Kombu's in-memory transport keeps queued messages in this process only. Two things
make that honest:
- a clean stop stops the relays first and lets the consumers empty the queues, so
  whatever is left waits in the outboxes, which are durable;
- after an unclean stop (kill, crash) the start re-queues every row sent during the run
  that died: those may have been in the lost queues, and the inboxes drop the ones that
  were already applied.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from datetime import datetime, timedelta
from pathlib import Path

from django.conf import settings
from django.utils import timezone

from . import bus, contexts
from .consumer import ContextConsumer
from .outbox import wakeup_event
from .relay import Relay, listen_for_commits
from .scheduler import scheduler_for
from .translator import Translator

log = logging.getLogger(__name__)


class Runtime:
    def __init__(self, registrations: list[contexts.BoundedContext], *, consumers: bool = True):
        self.contexts = registrations
        self.run_consumers = consumers
        self._relays_stop = threading.Event()
        self._consumers_stop = threading.Event()
        self._relays: list[threading.Thread] = []
        self._consumers: list[threading.Thread] = []

    def start(self) -> None:
        if _in_memory_broker():
            self._recover_lost_broker_state()
        for ctx in self.contexts:
            if ctx.relay:
                self._relays.append(_started(f"relay-{ctx.name}", Relay(ctx).run, self._relays_stop))
                self._relays.append(_started(f"listener-{ctx.name}", listen_for_commits, ctx, self._relays_stop))
            if self.run_consumers and ctx.handlers:
                # No relay backstop: the relay thread sweeps itself.
                self._consumers += start_consumers(ctx, self._consumers_stop, relay_backstop=False)
                self._consumers += start_translators(ctx, self._consumers_stop)
        log.info("runtime started for %s (consumers: %s)", ", ".join(c.name for c in self.contexts),
                 "yes" if self.run_consumers else "no")

    def stop(self, timeout: float = 10.0) -> None:
        self._relays_stop.set()
        for ctx in self.contexts:
            if ctx.relay:
                wakeup_event(ctx.name).set()
        for thread in self._relays:
            thread.join(timeout)
        drained = self._wait_for_empty_queues(deadline=time.monotonic() + timeout)
        self._consumers_stop.set()
        for thread in self._consumers:
            thread.join(timeout)
        if _in_memory_broker():
            # Clean only if nothing can have been lost: every context ran here (otherwise
            # messages for the others had no queue in this process) and the queues are empty.
            everything = {c.name for c in self.contexts} == {c.name for c in contexts.all_contexts()}
            _write_epoch(started_at=self._started_at, clean=drained and everything and self.run_consumers)
        log.info("runtime stopped")

    def _wait_for_empty_queues(self, *, deadline: float) -> bool:
        with bus.connect() as connection:
            channel = connection.default_channel
            while time.monotonic() < deadline:
                waiting = sum(
                    queue(channel).queue_declare(passive=True).message_count
                    for ctx in self.contexts
                    if ctx.handlers and self.run_consumers
                    for queue in (*bus.context_queues(ctx), *translator_queues(ctx))
                )
                if not waiting:
                    return True
                time.sleep(0.05)
            log.warning("stopping with messages still queued; they are re-queued at the next start")
            return False

    def _recover_lost_broker_state(self) -> None:
        previous = _read_epoch()
        self._started_at = timezone.now()
        if previous and not previous["clean"]:
            # A second early: sent_at is the database's clock, at millisecond precision.
            # Re-queuing a few extra is harmless, the inboxes drop what they already applied.
            since = datetime.fromisoformat(previous["started_at"]) - timedelta(seconds=1)
            for ctx in self.contexts:
                if not ctx.relay:
                    continue  # shares the outbox of a registration that does relay
                count = ctx.outbox.objects.using(ctx.database).filter(sent_at__gte=since).update(sent_at=None)
                if count:
                    log.warning(
                        "%s: previous run stopped uncleanly; re-queued %d messages sent since %s",
                        ctx.name, count, since.isoformat(),
                    )
        _write_epoch(started_at=self._started_at, clean=False)


def start_consumers(ctx: contexts.BoundedContext, stop: threading.Event, *,
                    relay_backstop: bool) -> list[threading.Thread]:
    """Start ``ctx``'s consumer, a thread per partition (a slow consumer such as payments
    cannot hold up the others, and partitions apply in parallel), each with its own broker
    connection that it reconnects itself, and its scheduler. Embedded, the runtime calls
    this; in services mode, the worker (``waybill.worker``)."""
    threads = []
    for partition in bus.partitions():
        consumer = ContextConsumer(ctx, partition)
        threads.append(_started(f"consumer-{bus.queue_name(ctx.name, partition)}", consumer.run, stop))
        if partition == 0:
            # One scheduler per consumer, not per partition: the partitions share one inbox
            # and one set of jobs. It runs while partition 0 is on the bus.
            threads.append(_started(f"scheduler-{ctx.name}", _schedule, consumer, stop, relay_backstop))
    return threads


def start_translators(ctx: contexts.BoundedContext, stop: threading.Event) -> list[threading.Thread]:
    """If ``ctx``'s code lags (``WAYBILL_LAGGING``), its translator: a thread per partition."""
    if ctx.name not in bus.lagging():
        return []
    return [_started(f"translator-{bus.queue_name(ctx.name, partition)}", Translator(ctx, partition).run, stop)
            for partition in bus.partitions()]


def translator_queues(ctx: contexts.BoundedContext) -> list:
    """``ctx``'s translator queues if it lags: a clean stop waits for them to empty too."""
    return [bus.translator_queue(ctx, partition) for partition in bus.partitions()] \
        if ctx.name in bus.lagging() else []


def _schedule(consumer: ContextConsumer, stop: threading.Event, relay_backstop: bool) -> None:
    try:
        scheduler_for(consumer, relay_backstop=relay_backstop).run(stop, consumer.connected)
    finally:
        consumer.close()  # what its jobs held (the rebind job's broker connection)


def _started(name: str, target, *args) -> threading.Thread:
    thread = threading.Thread(target=target, args=args, name=name, daemon=True)
    thread.start()
    return thread


def _in_memory_broker() -> bool:
    return settings.WAYBILL_BROKER_URL.startswith("memory://")


def _epoch_path() -> Path:
    return Path(settings.DATA_DIR) / "embedded-broker.json"


def _read_epoch() -> dict | None:
    try:
        return json.loads(_epoch_path().read_text())
    except (FileNotFoundError, ValueError):
        return None


def _write_epoch(*, started_at: datetime, clean: bool) -> None:
    _epoch_path().write_text(json.dumps({"started_at": started_at.isoformat(), "clean": clean}))
