"""The relay: publishes committed outbox rows to the broker (invariant 2).

A row is marked sent only after the broker confirmed it (publisher confirms on
RabbitMQ; the in-memory transport takes it synchronously). A crash between publish and
mark publishes the row again on the next pass: delivery is at least once, and inboxes
make the effect exactly once.

Several relays may drain one outbox: each claims rows with ``SELECT ... FOR UPDATE SKIP
LOCKED`` (PostgreSQL; SQLite serialises writers anyway), and a relay publishes a row only
when every earlier unsent row of the same aggregate is in its own batch, so one
aggregate's messages leave in commit order. A row that keeps failing to publish is parked
after ``WAYBILL_RELAY_MAX_ATTEMPTS`` tries (the admin can publish it again), holding back
its own aggregate only.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import defaultdict

from django.conf import settings
from django.db import close_old_connections, connections, transaction
from django.db.models.functions import Now
from kombu import Connection, Producer

from . import bus
from .backoff import backoff_delay
from .contexts import BoundedContext
from .outbox import OutboxMessageBase, notify_channel, wakeup_event
from .telemetry import SpanKind, span_for_message

log = logging.getLogger(__name__)


class Relay:
    def __init__(self, context: BoundedContext, *, batch_size: int | None = None):
        self.context = context
        self.batch_size = batch_size or settings.WAYBILL_RELAY_BATCH_SIZE
        self._connection: Connection | None = None
        self._producer: Producer | None = None

    # --- one pass -------------------------------------------------------------------
    def drain(self) -> int:
        """Publish until no publishable row is left; returns how many were published."""
        total = 0
        while published := self.publish_batch():
            total += published
        return total

    def publish_batch(self) -> int:
        ctx = self.context
        rows = ctx.outbox.objects.using(ctx.database)
        with transaction.atomic(using=ctx.database):
            claimed = list(
                # A row that failed to publish too often is parked (operators see it in the
                # admin and can publish it again); it holds back only its own aggregate.
                rows.filter(sent_at__isnull=True, publish_attempts__lt=settings.WAYBILL_RELAY_MAX_ATTEMPTS)
                .order_by("id")
                .select_for_update(skip_locked=True)[: self.batch_size]
            )
            if not claimed:
                return 0
            publishable = self._in_commit_order(claimed)
            sent: list[int] = []
            error: Exception | None = None
            for row in publishable:
                try:
                    self._publish(row)
                except Exception as exc:  # noqa: BLE001 - recorded on the row, re-raised below
                    error = exc
                    rows.filter(id=row.id).update(
                        publish_attempts=row.publish_attempts + 1, last_error=repr(exc)[:2000]
                    )
                    break
                sent.append(row.id)
            if sent:
                self._mark_sent(sent)
        if error is not None:
            raise error
        return len(sent)

    def _mark_sent(self, row_ids: list[int]) -> None:
        # Database time, so every relay and the admin agree on ages.
        self.context.outbox.objects.using(self.context.database).filter(id__in=row_ids).update(sent_at=Now())

    def _in_commit_order(self, claimed: list[OutboxMessageBase]) -> list[OutboxMessageBase]:
        """Drop rows whose aggregate has an earlier unsent row outside this batch."""
        ctx = self.context
        claimed_ids = {row.id for row in claimed}
        earlier: defaultdict[str, list[int]] = defaultdict(list)
        for aggregate_id, row_id in (
            ctx.outbox.objects.using(ctx.database)
            .filter(
                sent_at__isnull=True,
                aggregate_id__in={row.aggregate_id for row in claimed},
                id__lte=max(claimed_ids),
            )
            .order_by("id")
            .values_list("aggregate_id", "id")
        ):
            earlier[aggregate_id].append(row_id)
        publishable_ids: set[int] = set()
        for ids in earlier.values():
            for row_id in ids:
                if row_id not in claimed_ids:
                    break  # another relay holds an earlier row of this aggregate
                publishable_ids.add(row_id)
        return [row for row in claimed if row.id in publishable_ids]

    def _publish(self, row: OutboxMessageBase) -> None:
        exchange, routing_key = bus.route(row.message_type, row.envelope["schema_version"], row.aggregate_id)
        with span_for_message(f"publish {row.message_type}", traceparent=row.envelope.get("traceparent"),
                              kind=SpanKind.PRODUCER, **{"messaging.message.id": str(row.message_id)}):
            self._publish_confirmed(row, exchange, routing_key)

    def _publish_confirmed(self, row: OutboxMessageBase, exchange, routing_key: str) -> None:
        self._ensure_producer().publish(
            json.dumps(row.envelope),
            exchange=exchange,
            routing_key=routing_key,
            content_type=bus.JSON,
            content_encoding="utf-8",
            delivery_mode=2,  # persistent
            message_id=str(row.message_id),
            headers={"traceparent": row.envelope.get("traceparent") or ""},
            retry=False,  # failures surface to run(), which backs off and reconnects
        )

    def _ensure_producer(self) -> Producer:
        if self._producer is None:
            self._connection = bus.connect()
            self._connection.ensure_connection(max_retries=1)
            if settings.WAYBILL_BROKER_DECLARE:
                bus.declare(self._connection)
            self._producer = Producer(self._connection.default_channel)
        return self._producer

    def close(self) -> None:
        if self._connection is not None:
            self._connection.release()
        self._connection = self._producer = None

    # --- the long-running loop ----------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        """Drain on every commit that woke us, and sweep every few seconds regardless."""
        wake = wakeup_event(self.context.name)
        failures = 0
        try:
            while not stop.is_set():
                wake.clear()  # before draining: a commit during the drain sets it again
                try:
                    close_old_connections()
                    self.drain()
                    failures = 0
                except Exception:
                    failures += 1
                    delay = backoff_delay(failures, base=0.5, cap=30.0)
                    log.exception("relay %s failed; retrying in %.1fs", self.context.name, delay)
                    self.close()
                    stop.wait(delay)
                    continue
                wake.wait(settings.WAYBILL_RELAY_SWEEP_SECONDS)
        finally:
            self.close()
            connections.close_all()


def listen_for_commits(context: BoundedContext, stop: threading.Event) -> None:
    """Wake this process's relay when another process commits outbox rows (PostgreSQL
    LISTEN/NOTIFY). Elsewhere the relay relies on in-process wake-ups and its sweep."""
    database = connections[context.database]
    if database.vendor != "postgresql":
        return
    import psycopg

    wake = wakeup_event(context.name)
    failures = 0
    while not stop.is_set():
        try:
            with psycopg.connect(**database.get_connection_params(), autocommit=True) as listener:
                listener.execute(f"LISTEN {notify_channel(context.name)}")
                failures = 0
                wake.set()  # rows may have been committed while we were not listening
                while not stop.is_set():
                    for _ in listener.notifies(timeout=1.0):
                        wake.set()
        except Exception:
            failures += 1
            delay = backoff_delay(failures, base=0.5, cap=30.0)
            log.exception("outbox listener %s failed; retrying in %.1fs", context.name, delay)
            stop.wait(delay)
