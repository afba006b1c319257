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

What fails is told apart: a row that cannot be made into a message (its type is no longer
registered, its envelope is broken, it is over ``WAYBILL_MESSAGE_MAX_BYTES``) or that the
broker refuses (a nack) is that row's failure, recorded on it, and the relay goes on with
the other aggregates; only a lost connection (an exception from the transport, a confirm
that never comes) makes the relay close, back off and reconnect.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass

import amqp
from django.conf import settings
from django.db import close_old_connections, connections, transaction
from django.db.models import BooleanField, Exists, F, OuterRef, Q, TextField
from django.db.models.fields.json import KT, KeyTransform
from django.db.models.expressions import RawSQL
from django.db.models.functions import Cast, Coalesce, Now
from kombu import Connection, Exchange, Producer

from . import bus, metrics
from .backoff import Reconnects
from .contexts import BoundedContext
from .outbox import notify_channel, wakeup_event
from .telemetry import SpanKind, span_for_message
from .wire import storable

log = logging.getLogger(__name__)


class Relay:
    def __init__(self, context: BoundedContext, *, batch_size: int | None = None):
        self.context = context
        self.batch_size = batch_size or settings.WAYBILL_RELAY_BATCH_SIZE
        self._connection: Connection | None = None
        self._producer: Producer | None = None
        self._channel: amqp.Channel | None = None  # py-amqp's, when publishing to RabbitMQ
        self._confirms: _Confirms | None = None
        metrics.outbox_watch(context)  # this process relays it: its backlog is this process's to report

    # --- one pass -------------------------------------------------------------------
    def drain(self) -> int:
        """Publish until no publishable row is left; returns how many were published.

        A row that fails (it cannot be made into a message, or the broker refuses it) is
        not tried again within the same drain: the next one (a commit or the sweep) tries
        it again, so its ``WAYBILL_RELAY_MAX_ATTEMPTS`` tries are spread out, not spent at once."""
        failed_ids: set[int] = set()
        total = 0
        # Each batch starts after the last row the previous one claimed, not at the lowest
        # unsent id again: the rows it marked sent stay in the indexes as dead entries until
        # PostgreSQL vacuums them, and a scan from the bottom would walk them again for every
        # batch. (What made a long backlog slow was another scan, see ``blocked`` below.)
        # What this passes over (a row committed late with a lower id, one another relay
        # held) is the next drain's: a commit during this one wakes the relay again, and
        # the sweep comes anyway.
        after: int | None = 0
        while after is not None:
            published, _, after = self.publish_batch(failed_ids, after_id=after)
            total += published
        return total

    def publish_batch(self, failed_ids: set[int], *, after_id: int = 0) -> tuple[int, int, int | None]:
        """Publish one batch of rows after ``after_id``, leaving out the rows in
        ``failed_ids``; returns how many rows were published, how many failed (added to
        ``failed_ids``) and where the next batch starts: after the last id it claimed, or
        None when it claimed fewer than a batch, so that nothing it could claim was left
        after them. (A drain of a few rows, the usual one, is then one claim, not a second
        that finds nothing. A row committed meanwhile wakes the relay again; rows another
        relay held, or that waited for another relay's, are that relay's or the next drain's.)

        Raises only when the broker connection (or the database) is lost, after recording
        the attempt on the rows it held. A row's own failure is recorded on the row and
        holds back that aggregate's later rows, and nothing else."""
        ctx = self.context
        rows = ctx.outbox.objects.using(ctx.database)
        failures_before = len(failed_ids)
        pending = rows.filter(sent_at__isnull=True)
        candidates = pending.filter(id__gt=after_id)
        # A row that failed in this drain, or too often to be tried again (parked: operators
        # see it in the admin and can publish it again), holds back its own aggregate only.
        # Left out here, whole aggregate and all: claimed and then dropped for commit order,
        # a blocked aggregate's later rows could fill every batch and starve the others.
        # Every such row has failed at least once (publish_attempts > 0), which lets the
        # database answer from the index of failing rows (``outbox_failing``, next to empty):
        # without it, PostgreSQL scanned the whole backlog once per batch, which made a
        # batch dearer the longer the backlog (23 of a claim's 29 ms with 50,000 rows).
        blocked = pending.filter(aggregate_id=OuterRef("aggregate_id"), publish_attempts__gt=0).filter(
            Q(publish_attempts__gte=settings.WAYBILL_RELAY_MAX_ATTEMPTS) | Q(id__in=failed_ids))
        # Whether a row has an earlier unsent row of its aggregate at all: if not (the usual
        # case), it is publishable without the commit-order query.
        earlier = pending.filter(aggregate_id=OuterRef("aggregate_id"), id__lt=OuterRef("id"))
        with transaction.atomic(using=ctx.database):
            # The envelope is published as the database stores it: its text form (jsonb's is
            # valid JSON), never parsed into a dict and dumped again; the two fields the relay
            # reads come out of the database on their own.
            claimed = [_Row(*values) for values in (
                candidates.filter(~Exists(blocked))
                .order_by("id")
                .select_for_update(skip_locked=True)
                .annotate(message_id_text=_uuid_text(connections[ctx.database]),
                          body=Cast("envelope", TextField()),
                          envelope_schema_version=KT("envelope__schema_version"),
                          envelope_traceparent=KeyTransform("traceparent", "envelope"),
                          follows=Exists(earlier))
                .values_list(*_Row.__slots__)[: self.batch_size]
            )]
            if not claimed:
                return 0, 0, None
            after = max(row.id for row in claimed) if len(claimed) >= self.batch_size else None
            sent: list[int] = []
            held_back: set[str] = set()  # aggregates with a failed row in this batch
            error: Exception | None = None

            def failed(row: _Row, reason: object) -> None:
                failed_ids.add(row.id)
                held_back.add(row.aggregate_id)
                self._record_failure(row, reason)

            if followed := {row.aggregate_id for row in claimed if row.follows}:
                checked = {row.id for row in self._in_commit_order(
                    [row for row in claimed if row.aggregate_id in followed])}
                claimed = [row for row in claimed if row.aggregate_id not in followed or row.id in checked]
            for window in _windows(claimed):
                outgoing = []
                for row in window:
                    if row.aggregate_id in held_back:
                        continue  # an earlier row of its aggregate failed: keep commit order
                    try:
                        outgoing.append(_Outgoing.of(row))
                    except Exception as exc:  # noqa: BLE001 - this row's failure, not the relay's
                        failed(row, exc)
                if not outgoing:
                    continue
                confirmed, refused, error = self._publish_window(outgoing)
                sent.extend(confirmed)
                for row in refused:
                    failed(row, error or "the broker refused it")
                if error is not None:
                    break  # the connection is gone: later windows wait for the next pass
            if sent:
                self._mark_sent(sent)
        metrics.published(ctx, len(sent))  # committed: marked sent
        if error is not None:
            # A fresh channel next time: on this one, delivery tags may no longer match the
            # rows (a publish that failed after its tag was counted), or answers may still come.
            self.close()
            raise error
        return len(sent), len(failed_ids) - failures_before, after

    def _record_failure(self, row: _Row, reason: object) -> None:
        attempts = row.publish_attempts + 1
        error = repr(reason) if isinstance(reason, Exception) else str(reason)
        self.context.outbox.objects.using(self.context.database).filter(id=row.id).update(
            publish_attempts=attempts, last_error=storable(error, 2000))
        if attempts >= settings.WAYBILL_RELAY_MAX_ATTEMPTS:
            log.error("relay %s parked %s %s after %d failed attempts (its aggregate %s waits; the admin can "
                      "publish it again): %r", self.context.name, row.message_type, row.message_id, attempts,
                      row.aggregate_id, reason)
        else:
            log.warning("relay %s could not publish %s %s (attempt %d): %r", self.context.name, row.message_type,
                        row.message_id, attempts, reason)

    def _publish_window(self, window: list[_Outgoing]
                        ) -> tuple[list[int], list[_Row], Exception | None]:
        """Publish rows of distinct aggregates; returns the ids the broker confirmed, the
        rows it refused (nacked) or never confirmed, and the error that lost the connection
        (None when the broker answered every publish)."""
        self._ensure_producer()
        if self._confirms is None:  # a transport without confirms takes each publish synchronously
            for index, outgoing in enumerate(window):
                try:
                    self._publish(outgoing)
                except Exception as exc:  # noqa: BLE001 - the caller records it on the row
                    return [o.row.id for o in window[:index]], [outgoing.row], exc
            return [o.row.id for o in window], [], None
        confirms, attempted = self._confirms, []
        try:
            with _one_write(self._channel):
                for outgoing in window:
                    confirms.expect(outgoing.row)
                    attempted.append(outgoing.row)
                    self._publish(outgoing)
            confirms.wait(self._connection, timeout=settings.WAYBILL_RELAY_CONFIRM_TIMEOUT_SECONDS)
        except Exception as exc:  # noqa: BLE001 - a lost connection or a timeout: unconfirmed rows fail
            confirms.abandon()
            acked = confirms.take_acked()
            confirmed = set(acked)
            return acked, [row for row in attempted if row.id not in confirmed], exc
        # A nack is the broker refusing that message (e.g. a full queue that rejects new
        # ones): the row's failure, while the connection is fine.
        return confirms.take_acked(), confirms.take_nacked(), None

    def _mark_sent(self, row_ids: list[int]) -> None:
        # One statement for the batch; database time, so every relay and the admin agree on ages.
        rows = self.context.outbox.objects.using(self.context.database)
        rows.filter(_id_among(connections[self.context.database], row_ids)).update(
            sent_at=Now(), first_sent_at=Coalesce("first_sent_at", Now()))

    def _in_commit_order(self, claimed: list[_Row]) -> list[_Row]:
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

    def _publish(self, outgoing: _Outgoing) -> None:
        row = outgoing.row
        with span_for_message(f"publish {row.message_type}", traceparent=outgoing.traceparent,
                              kind=SpanKind.PRODUCER, **{"messaging.message.id": str(row.message_id)}):
            self._publish_confirmed(outgoing)

    def _publish_confirmed(self, outgoing: _Outgoing) -> None:
        # On RabbitMQ this returns at once; the confirm arrives later (see _Confirms).
        if self._channel is not None:
            # Straight to py-amqp with the message made once: Kombu's Producer.publish
            # builds the same amqp.Message (these properties, priority 0) through several
            # layers per message. Failures surface to run(), which backs off and reconnects.
            self._channel.basic_publish(
                amqp.Message(outgoing.body, content_type=bus.JSON, content_encoding="utf-8", delivery_mode=2,
                             priority=0, message_id=outgoing.row.message_id_text,
                             application_headers={"traceparent": outgoing.traceparent or ""}),
                exchange=outgoing.exchange.name, routing_key=outgoing.routing_key)
            return
        self._ensure_producer().publish(
            outgoing.body,
            exchange=outgoing.exchange,
            routing_key=outgoing.routing_key,
            content_type=bus.JSON,
            content_encoding="utf-8",
            delivery_mode=2,  # persistent
            message_id=str(outgoing.row.message_id),
            headers={"traceparent": outgoing.traceparent or ""},
            retry=False,  # failures surface to run(), which backs off and reconnects
        )

    def _ensure_producer(self) -> Producer:
        if self._producer is None:
            self._connection = bus.connect(confirm_each_publish=False)
            self._connection.ensure_connection(max_retries=bus.retries_for_every_node(self._connection))
            if settings.WAYBILL_BROKER_DECLARE:
                bus.declare(self._connection)
            channel = self._connection.default_channel
            if self._connection.transport.driver_type == "amqp":
                self._confirms, self._channel = _Confirms(channel), channel
            self._producer = Producer(channel)
        return self._producer

    def close(self) -> None:
        if self._connection is not None:
            self._connection.release()
        self._connection = self._producer = self._channel = self._confirms = None

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


class _Row:
    """A claimed outbox row: what the relay needs of it, no model instance. ``body`` is the
    stored envelope's text; schema version (as text) and traceparent (as its JSON value, so
    a traceparent that is not a string shows) were read from it by the database; None when
    the envelope lacks them or is not an object."""

    __slots__ = ("id", "message_id_text", "message_type", "aggregate_id", "publish_attempts", "body",
                 "envelope_schema_version", "envelope_traceparent", "follows")

    def __init__(self, id, message_id_text, message_type, aggregate_id, publish_attempts, body,  # noqa: A002
                 envelope_schema_version, envelope_traceparent, follows):
        self.id, self.message_id_text, self.message_type = id, str(message_id_text), message_type
        self.aggregate_id, self.publish_attempts, self.body = aggregate_id, publish_attempts, body
        self.envelope_schema_version, self.envelope_traceparent = envelope_schema_version, envelope_traceparent
        self.follows = follows  # an earlier row of its aggregate is unsent (here or elsewhere)

    @property
    def message_id(self) -> str:
        return self.message_id_text


@dataclass(frozen=True, slots=True)
class _Outgoing:
    """A row made into the message the broker gets: everything that can go wrong with one
    row's content goes wrong here, before anything is sent, as that row's failure."""

    row: _Row
    exchange: Exchange
    routing_key: str
    body: bytes
    traceparent: str | None

    @classmethod
    def of(cls, row: _Row) -> _Outgoing:
        if row.envelope_schema_version is None:
            raise ValueError("its envelope has no schema_version")
        exchange, routing_key = bus.route(row.message_type, int(row.envelope_schema_version), row.aggregate_id)
        text = row.body
        if "NaN" in text or "Infinity" in text:
            # Not JSON, yet a JSON column on SQLite stores them; rarely there, so only then parsed.
            json.loads(text, parse_constant=_refuse_constant)
        body = text.encode()
        if len(body) > settings.WAYBILL_MESSAGE_MAX_BYTES:
            raise ValueError(f"message of {len(body)} bytes is over WAYBILL_MESSAGE_MAX_BYTES "
                             f"({settings.WAYBILL_MESSAGE_MAX_BYTES}): every consumer would refuse it")
        traceparent = row.envelope_traceparent
        if not isinstance(traceparent, str) or len(traceparent) > 255:
            traceparent = None  # a header the broker would refuse, or not one at all: trace lost, message kept
        return cls(row, exchange, routing_key, body, traceparent)


@contextlib.contextmanager
def _one_write(channel) -> Iterator[None]:
    """The frames py-amqp writes meanwhile on ``channel``'s connection, sent to the socket
    together: at the end, or whenever ``_WRITE_GATHER_BYTES`` have gathered.

    py-amqp writes every publish with a ``sendall`` of its own, and has no option to
    gather them: a window of 500 publishes was 500 system calls here and as many small
    reads for RabbitMQ. Gathered, the relay's CPU per message fell by about a quarter
    (100 to 75 us) and RabbitMQ's by about a third (102 to 66 us), draining 50,000 rows
    twice each way on this 2-core machine on 2026-12-01. py-amqp's transport calls
    ``self._write`` for every write; if a py-amqp release stops doing so, this writes as
    before."""
    transport = getattr(getattr(channel, "connection", None), "transport", None)
    if transport is None or not callable(getattr(transport, "_write", None)):
        yield
        return
    gathered = bytearray()  # a copy of each piece: py-amqp hands over a view of a buffer it reuses
    send = transport._write

    def flush() -> None:
        if gathered:
            transport._write = send
            try:
                # Through the transport's own write, which marks it disconnected if this fails.
                transport.write(bytes(gathered))
            finally:
                gathered.clear()
                transport._write = gather

    def gather(data) -> None:
        gathered.extend(data)
        if len(gathered) >= _WRITE_GATHER_BYTES:
            flush()

    transport._write = gather
    try:
        yield
        flush()  # what failed to go out (a lost connection) fails the window: its rows are unconfirmed
    finally:
        transport._write = send


# Enough publishes for a write to carry many of them, few enough to bound what is held.
_WRITE_GATHER_BYTES = 256 * 1024


def _uuid_text(connection):
    """The message id as its text: PostgreSQL's uuid text form is the canonical one, which
    spares making a UUID per row to print it; SQLite keeps 32 hex digits, so there the
    column comes as a UUID."""
    return Cast("message_id", TextField()) if connection.vendor == "postgresql" else F("message_id")


def _id_among(connection, ids: list[int]) -> Q | RawSQL:
    """``id IN ids``; on PostgreSQL as ``id = ANY(array)``, one parameter instead of a batch
    of them for the client to quote and the server to parse."""
    if connection.vendor == "postgresql":
        return RawSQL('"id" = ANY(%s)', (list(ids),), output_field=BooleanField())
    return Q(id__in=ids)


def _refuse_constant(name: str):
    raise ValueError(f"its envelope holds {name}, which is not JSON")


def _windows(rows: list[_Row]) -> list[list[_Row]]:
    """Split rows (in commit order) so that each window holds at most one row per
    aggregate, and an aggregate's rows go out one window after another."""
    windows: list[list[_Row]] = []
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
        self._pending: dict[int, _Row] = {}
        self._acked: list[_Row] = []
        self._nacked: list[_Row] = []

    def expect(self, row: _Row) -> None:
        self._last_tag += 1
        self._pending[self._last_tag] = row

    def _settle(self, delivery_tag: int, multiple: bool, into: list[_Row]) -> None:
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

    def take_nacked(self) -> list[_Row]:
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
