"""The relay: publishes committed outbox rows to the broker (invariant 2).

A row is marked sent only after the broker confirmed it (publisher confirms on
RabbitMQ; the in-memory transport takes it synchronously). A crash between publish and
mark publishes the row again on the next pass: delivery is at least once, and inboxes
make the effect exactly once.

Confirms are pipelined: waiting for one confirm per message left the relay idle for
about 84% of a drain (bench/relay's profile). A batch is published in *windows*: the
first unsent row of every aggregate in the batch, then the second of each, and so on; each
window is published without waiting and its confirms awaited together. Holding at most
one unconfirmed message per aggregate is what keeps commit order through failures: when
a message is nacked or its confirm never comes, nothing later of its aggregate has been
sent, so publishing it again can duplicate it (the inbox absorbs that) but never overtake.

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
import socket
import threading
import time
from collections import defaultdict

from django.conf import settings
from django.db import close_old_connections, connections, transaction
from django.db.models.functions import Now
from kombu import Connection, Producer

from . import bus
from .backoff import Reconnects
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
        self._confirms: _Confirms | None = None

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
            sent: list[int] = []
            error: Exception | None = None
            for window in _windows(self._in_commit_order(claimed)):
                confirmed, failed, error = self._publish_window(window)
                sent.extend(confirmed)
                for row in failed:
                    rows.filter(id=row.id).update(
                        publish_attempts=row.publish_attempts + 1, last_error=repr(error)[:2000]
                    )
                if error is not None:
                    break  # later windows hold later rows of the failed aggregates
            if sent:
                self._mark_sent(sent)
        if error is not None:
            # A fresh channel next time: on this one, delivery tags may no longer match the
            # rows (a publish that failed after its tag was counted), or answers may still come.
            self.close()
            raise error
        return len(sent)

    def _publish_window(self, window: list[OutboxMessageBase]
                        ) -> tuple[list[int], list[OutboxMessageBase], Exception | None]:
        """Publish rows of distinct aggregates; returns the ids the broker confirmed, the
        rows it refused or never confirmed, and the error (None when all were confirmed)."""
        self._ensure_producer()
        if self._confirms is None:  # a transport without confirms takes each publish synchronously
            for index, row in enumerate(window):
                try:
                    self._publish(row)
                except Exception as exc:  # noqa: BLE001 - the caller records it on the row
                    return [r.id for r in window[:index]], [row], exc
            return [row.id for row in window], [], None
        confirms, attempted = self._confirms, []
        try:
            for row in window:
                confirms.expect(row)
                attempted.append(row)
                self._publish(row)
            confirms.wait(self._connection, timeout=settings.WAYBILL_RELAY_CONFIRM_TIMEOUT_SECONDS)
        except Exception as exc:  # noqa: BLE001 - a lost connection or a timeout: unconfirmed rows fail
            confirms.abandon()
            acked = confirms.take_acked()
            confirmed = set(acked)
            return acked, [row for row in attempted if row.id not in confirmed], exc
        nacked = confirms.take_nacked()
        acked = confirms.take_acked()
        if nacked:
            return acked, nacked, RuntimeError(f"broker refused {len(nacked)} message(s)")
        return acked, [], None

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
        # On RabbitMQ this returns at once; the confirm arrives later (see _Confirms).
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
            self._connection = bus.connect(confirm_each_publish=False)
            self._connection.ensure_connection(max_retries=1)
            if settings.WAYBILL_BROKER_DECLARE:
                bus.declare(self._connection)
            channel = self._connection.default_channel
            self._confirms = _Confirms(channel) if self._connection.transport.driver_type == "amqp" else None
            self._producer = Producer(channel)
        return self._producer

    def close(self) -> None:
        if self._connection is not None:
            self._connection.release()
        self._connection = self._producer = self._confirms = None

    # --- the long-running loop ----------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        """Drain on every commit that woke us, and sweep every few seconds regardless."""
        wake = wakeup_event(self.context.name)
        reconnects = Reconnects(f"relay {self.context.name}", stop, log)
        try:
            while not stop.is_set():
                wake.clear()  # before draining: a commit during the drain sets it again
                try:
                    close_old_connections()
                    self.drain()
                    reconnects.succeeded()
                except Exception:
                    self.close()
                    reconnects.failed()
                    continue
                wake.wait(settings.WAYBILL_RELAY_SWEEP_SECONDS)
        finally:
            self.close()
            connections.close_all()


def _windows(rows: list[OutboxMessageBase]) -> list[list[OutboxMessageBase]]:
    """Split rows (in commit order) so that each window holds at most one row per
    aggregate, and an aggregate's rows go out one window after another."""
    windows: list[list[OutboxMessageBase]] = []
    seen: defaultdict[str, int] = defaultdict(int)
    for row in rows:
        index = seen[row.aggregate_id]
        seen[row.aggregate_id] += 1
        if index == len(windows):
            windows.append([])
        windows[index].append(row)
    return windows


class _Confirms:
    """Publisher confirms on one py-amqp channel, awaited many at a time.

    Kombu's ``confirm_publish`` transport option makes every publish wait for its own
    confirm, and Kombu has no API for pipelined confirms; py-amqp has the parts (the
    ``confirm_select`` method and the channel's ``basic_ack``/``basic_nack`` event
    callbacks), so this wires them up. Delivery tags count publishes on the channel from 1,
    and an ack or nack with ``multiple`` covers every tag up to its own."""

    def __init__(self, channel):
        channel.confirm_select()
        channel.events["basic_ack"].add(self._on_ack)
        channel.events["basic_nack"].add(self._on_nack)
        self._last_tag = 0
        self._pending: dict[int, OutboxMessageBase] = {}
        self._acked: list[OutboxMessageBase] = []
        self._nacked: list[OutboxMessageBase] = []

    def expect(self, row: OutboxMessageBase) -> None:
        self._last_tag += 1
        self._pending[self._last_tag] = row

    def _settle(self, delivery_tag: int, multiple: bool, into: list[OutboxMessageBase]) -> None:
        tags = [tag for tag in self._pending if tag <= delivery_tag] if multiple else [delivery_tag]
        for tag in tags:
            if (row := self._pending.pop(tag, None)) is not None:
                into.append(row)

    def _on_ack(self, delivery_tag: int, multiple: bool) -> None:
        self._settle(delivery_tag, multiple, self._acked)

    def _on_nack(self, delivery_tag: int, multiple: bool) -> None:
        self._settle(delivery_tag, multiple, self._nacked)

    def wait(self, connection: Connection, *, timeout: float) -> None:
        """Read the broker's answers until every expected publish is acked or nacked."""
        deadline = time.monotonic() + timeout
        while self._pending:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no publisher confirm for {len(self._pending)} message(s) in {timeout:.0f}s")
            try:
                connection.drain_events(timeout=remaining)
            except socket.timeout:
                continue  # the loop condition decides

    def take_acked(self) -> list[int]:
        ids, self._acked = [row.id for row in self._acked], []
        return ids

    def take_nacked(self) -> list[OutboxMessageBase]:
        rows, self._nacked = self._nacked, []
        return rows

    def abandon(self) -> None:
        """Forget what was not confirmed; ``publish_batch`` then closes the channel, so
        those tags can never be answered on it."""
        self._pending.clear()


def listen_for_commits(context: BoundedContext, stop: threading.Event) -> None:
    """Wake this process's relay when another process commits outbox rows (PostgreSQL
    LISTEN/NOTIFY). Elsewhere the relay relies on in-process wake-ups and its sweep."""
    database = connections[context.database]
    if database.vendor != "postgresql":
        return
    import psycopg

    wake = wakeup_event(context.name)
    reconnects = Reconnects(f"outbox listener {context.name}", stop, log)
    while not stop.is_set():
        try:
            with psycopg.connect(**database.get_connection_params(), autocommit=True) as listener:
                listener.execute(f"LISTEN {notify_channel(context.name)}")
                reconnects.succeeded()
                wake.set()  # rows may have been committed while we were not listening
                while not stop.is_set():
                    for _ in listener.notifies(timeout=1.0):
                        wake.set()
        except Exception:
            reconnects.failed()
