"""The consumer: takes a context's messages off its queue and applies them exactly once.

Messages come in batches (up to ``WAYBILL_CONSUMER_BATCH_SIZE``, whatever has arrived:
a lone message is not kept waiting). Per message: refuse what cannot be read (dead
letter, ack, next); otherwise run its handler inside a savepoint of the batch's one
transaction, write the batch's inbox rows together, commit once, then ack them all. A
handler that raises rolls back its own savepoint only and is retried from the inbox with
exponential backoff and jitter; ``PermanentFailure`` or the last try sends it to the dead
letters. Nothing here blocks the messages behind a bad one. If the batch's transaction
itself fails (a concurrent delivery's inbox row, a deadlock, the database gone), nothing
of it committed and each of its messages is applied again alone, one transaction each.
A crash before the commit leaves the whole batch unacked: the broker delivers it again
and the inbox drops what had been applied.

Whatever a message is, it is one message's failure, never the consumer's: a dead letter
keeps its exact bytes (``waybill.wire``), and any exception outside the handler (in
decoding, validating or storing it) dead-letters it too, with the bare minimum if the
full record cannot be stored, or as a last resort rejects it to the broker's dead-letter
exchange. The one exception is the database not answering: then the consumer holds the
message and waits with backoff until it does.
"""

from __future__ import annotations

import contextlib
import enum
import functools
import json
import logging
import os
import socket
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import (
    IntegrityError, InterfaceError, OperationalError, close_old_connections, connections, transaction,
)
from django.db.transaction import TransactionManagementError
from django.utils import timezone
from kombu.message import Message as KombuMessage

from . import bus, metrics
from .backoff import Reconnects, backoff_delay
from .batchend import batch_end
from .contexts import Batched, BatchItem, BoundedContext, ExternalCall, Handler
from .failures import Failure
from .models import InboxMessageBase
from .messages import Envelope, Message, MessageRefused, parse, read_as, uuid_or_none
from .outbox import handling
from .telemetry import SpanKind, StatusCode, span_entered, span_for_message, span_started
from .wire import Received, preview, storable

log = logging.getLogger(__name__)
Status = InboxMessageBase.Status


class Outcome(enum.StrEnum):
    APPLIED = "applied"
    DUPLICATE = "duplicate"
    RETRY_SCHEDULED = "retry scheduled"
    DEAD_LETTERED = "dead-lettered"
    # Not even a minimal dead letter could be stored: the broker dead-letters it instead
    # (rejected to ``waybill.dead``).
    UNSTORABLE = "unstorable"
    # The consumer is stopping while it waited for its database: not acked, so the broker
    # delivers the message again.
    DEFERRED = "deferred"


class PermanentFailure(Exception):
    """Raised by a handler for a message that no retry can fix."""


@dataclass(frozen=True)
class _Ready:
    """A message that was read, is valid and has a handler: ready to be applied."""

    received: Received
    envelope: Envelope
    payload: Message
    handler: Handler


def _runs(items: list[tuple[int, _Ready]]) -> Iterator[list[tuple[int, _Ready]]]:
    """``items`` cut into runs in their order: consecutive messages of one ``Batched``
    handler together, every other message alone."""
    run: list[tuple[int, _Ready]] = []
    for entry in items:
        handler = entry[1].handler
        if run and not (isinstance(handler, Batched) and handler is run[-1][1].handler):
            yield run
            run = []
        run.append(entry)
    if run:
        yield run


class _BatchAborted(Exception):
    """The batch's transaction cannot commit (a savepoint could not be rolled back)."""


# The encodings a JSON body may declare: none, UTF-8, or Kombu's "binary" for bytes
# published with a content type; the body must be UTF-8 JSON in every case.
_JSON_ENCODINGS = {"", "utf-8", "utf8", "binary"}


class ContextConsumer:
    """Applies one context's messages. Nothing a message holds makes it raise: each
    message ends applied, a duplicate, scheduled for retry or dead-lettered, and acked;
    only a lost broker connection leaves it (for whoever runs it to reconnect), and
    while the database does not answer it waits, holding the message, until it does."""

    retry_lease_seconds = 60.0
    # Tries of a message whose handling lost its database connection while the database
    # answers again: a broken connection, not the message (see _as_one_message).
    connection_error_tries = 3

    def __init__(self, context: BoundedContext, partition: int = 0):
        self.context = context
        self.partition = partition  # the queue run() consumes; on_message serves any
        # Set to give up waiting for the database (shutdown): the message is not acked.
        self.stop = threading.Event()
        # Set while run() is on the bus: the scheduler runs this consumer's periodic work
        # only then (see waybill.scheduler).
        self.connected = threading.Event()
        # rebind()'s own broker connection (it runs on the scheduler's thread, and a Kombu
        # connection is not shared between threads) and when it is next due.
        self._bindings_connection = None
        self._bindings_due = self._bindings_resync_due = 0.0

    @property
    def _inbox(self):
        return self.context.inbox.objects.using(self.context.database)

    # --- one message ----------------------------------------------------------------
    def on_message(self, message: KombuMessage) -> Outcome:
        return self.on_messages([message])[0]

    def on_messages(self, messages: list[KombuMessage]) -> list[Outcome]:
        """Handle a batch as it came off the queue, then ack (or reject) each message."""
        # A long-lived consumer must notice a database connection that died or outlived
        # CONN_MAX_AGE, as Django does between requests. Failing to close one is no
        # reason to fail the messages: handling them finds out.
        with contextlib.suppress(Exception):
            close_old_connections()

        def settled(index: int, outcome: Outcome) -> None:
            # Called once the outcome is committed, so each message is acked as soon as it
            # can be: a refused one's dead letter is not stored twice if the process dies
            # before the batch commits. A failing ack is a lost broker connection, for the
            # caller to reconnect; the messages come again and the inbox drops them.
            if outcome is Outcome.UNSTORABLE:
                messages[index].reject(requeue=False)  # to the queue's dead-letter exchange, waybill.dead
            elif outcome is not Outcome.DEFERRED:
                messages[index].ack()

        return self.handle_batch([Received.from_kombu(message) for message in messages], settled=settled)

    def receive(self, body: bytes | str, *, content_type: str | None, routing_key: str = "") -> Outcome:
        """Handle one message given by its parts (as ``on_message`` does with a Kombu one)."""
        return self.handle(Received.of(body, content_type=content_type, routing_key=routing_key))

    def handle(self, received: Received) -> Outcome:
        """Never raises: see the class docstring."""
        return self.handle_batch([received])[0]

    def handle_batch(self, batch: list[Received], *,
                     settled: Callable[[int, Outcome], None] | None = None) -> list[Outcome]:
        """An outcome per message, in order. Never raises: see the class docstring.

        Each message is read first, on its own: a refused one is dead-lettered there
        (``_handle``). The rest are applied in the order they came, so one aggregate's
        messages stay in order within and across batches: together, in one transaction,
        up to an external call, which holds no transaction open and so goes alone.
        ``settled(index, outcome)`` is called for each message once its outcome is
        committed."""
        outcomes: list[Outcome | None] = [None] * len(batch)
        ready: list[tuple[int, _Ready]] = []
        # Each message's type for the metrics, once it was read (refused ones stay unread).
        types = [metrics.UNREAD_TYPE] * len(batch)

        def outcome_is(index: int, outcome: Outcome) -> None:
            outcomes[index] = outcome
            metrics.consumed(self.context, types[index], outcome)
            if settled is not None:
                settled(index, outcome)

        def apply_ready() -> None:
            for (index, _), outcome in zip(ready, self._apply_batch([item for _, item in ready]), strict=True):
                outcome_is(index, outcome)
            ready.clear()

        for index, received in enumerate(batch):
            result = self._as_one_message(
                lambda received=received: self._handle(received),
                unhandled=self._unhandled(received),
            )
            if not isinstance(result, _Ready):
                outcome_is(index, result)
                continue
            types[index] = result.envelope.type
            if isinstance(result.handler, ExternalCall):
                apply_ready()  # what came before it first
                # Even while stopping: given back unacked, it would be lost on the in-memory
                # transport, whose clean stop counts on every taken message being handled.
                outcome_is(index, self._one_at_a_time(result))
            else:
                ready.append((index, result))
        if ready:
            apply_ready()
        return outcomes  # type: ignore[return-value] - every slot is filled above

    def _one_at_a_time(self, item: _Ready) -> Outcome:
        return self._as_one_message(
            lambda: self._attempt(item.envelope, item.payload, item.handler),
            unhandled=self._unhandled(item.received),
        )

    def _unhandled(self, received: Received) -> Callable[[Exception], Outcome]:
        """What ``_as_one_message`` does with a message that failed outside its handler."""
        return lambda error: self._dead_letter_minimal(received, f"could not be handled: {_describe(error)}")

    def _as_one_message(self, handle: Callable[[], Outcome | _Ready], *,
                        unhandled: Callable[[Exception], Outcome]) -> Outcome | _Ready:
        """Run ``handle``; an exception is the message's own failure, given to ``unhandled``,
        unless the database does not answer: then wait for it with backoff (a requeue
        would count against the queue's delivery limit) and handle the message again."""
        reconnects = None  # made on the first failure: the common message never needs it
        connection_errors = 0
        while True:
            try:
                return handle()
            except Exception as error:  # noqa: BLE001 - see the docstring
                reconnects = reconnects or Reconnects(
                    f"consumer {self.context.name}: database {self.context.database}", self.stop, log)
                answers = self._database_answers()
                # A connection that broke and is back by now (a terminated backend, a
                # failover, a proxy's reset) is no fault of the message: try it again, a
                # few times, before blaming it (an error that repeats is the message's).
                if answers and isinstance(error, (OperationalError, InterfaceError)) \
                        and connection_errors < self.connection_error_tries:
                    connection_errors += 1
                    reconnects.failed()
                elif answers:
                    log.exception("%s: a message failed outside its handler", self.context.name)
                    return unhandled(error)
                while not answers and not self.stop.is_set():
                    reconnects.failed()  # logs the error, waits
                    answers = self._database_answers()
            if self.stop.is_set():
                return Outcome.DEFERRED

    def _database_answers(self) -> bool:
        connection = connections[self.context.database]
        try:
            if connection.connection is not None and not connection.is_usable():
                connection.close()
            with connection.cursor() as cursor:
                cursor.execute("SELECT 1")
            return True
        except Exception:  # noqa: BLE001 - whatever it is, the database is not answering
            with contextlib.suppress(Exception):
                connection.close()
            return False

    def _handle(self, received: Received) -> Outcome:
        encoding = received.content_encoding.lower()
        if received.content_type != bus.JSON:
            # JSON only on the bus: never hand another serializer (pickle) a byte.
            return self._dead_letter(
                received, f"refused content type {received.content_type!r}: only {bus.JSON} is accepted")
        if encoding not in _JSON_ENCODINGS:
            return self._dead_letter(
                received, f"refused content encoding {received.content_encoding!r}: only UTF-8 JSON is accepted")
        try:
            envelope, payload, handler = self._read(received.body)
        except MessageRefused as refused:
            return self._dead_letter(received, refused.reason, envelope=refused.envelope)
        if handler is None:
            return self._dead_letter(received, f"{self.context.name} has no handler for {envelope.type!r}",
                                     envelope=envelope.model_dump(mode="json"))
        return _Ready(received, envelope, payload, handler)

    def _read(self, body: bytes | str) -> tuple[Envelope, Message, Handler | None]:
        return read_message(self.context, body)

    def _attempt(self, envelope: Envelope, payload: Message, handler: Handler) -> Outcome:
        with self._span(envelope):
            return self._apply_once(envelope, payload, handler)

    def _span(self, envelope: Envelope):
        return span_for_message(**self._span_of(envelope))

    def _span_of(self, envelope: Envelope) -> dict:
        """A message's consume span, as ``span_for_message`` and ``span_started`` take it."""
        return {"name": f"consume {envelope.type}", "traceparent": envelope.traceparent, "kind": SpanKind.CONSUMER,
                "messaging.message.id": str(envelope.id), "waybill.context": self.context.name}

    def _apply_batch(self, batch: list[_Ready]) -> list[Outcome]:
        """Apply ``batch`` in one transaction, each message in a savepoint of its own,
        and commit once. A handler that raises rolls back its own savepoint and then takes
        the retry path, after the commit. If the transaction fails as a whole, nothing of
        it committed: each message is applied again alone (``_apply_once``)."""
        try:
            outcomes, failed = self._apply_together(batch)
        except Exception as error:  # noqa: BLE001 - the batch's failure; each message is tried alone
            # An IntegrityError is most often a concurrent delivery's inbox row: expected.
            log.log(logging.INFO if isinstance(error, IntegrityError) else logging.WARNING,
                    "%s: a batch of %d failed as a whole (%r); applying its messages one at a time",
                    self.context.name, len(batch), error)
            return [self._one_at_a_time(item) for item in batch]
        for index, (item, error) in failed.items():
            outcomes[index] = self._as_one_message(
                lambda item=item, error=error: self._failed_attempt(item.envelope, error),
                unhandled=self._unhandled(item.received),
            )
        return outcomes

    def _apply_together(self, batch: list[_Ready]) -> tuple[list[Outcome], dict[int, tuple[_Ready, Exception]]]:
        db = self.context.database
        outcomes: list[Outcome] = [Outcome.APPLIED] * len(batch)
        failed: dict[int, tuple[_Ready, Exception]] = {}
        with transaction.atomic(using=db), batch_end(using=db) as end:
            connection = transaction.get_connection(db)
            existing = {
                row.message_id: row
                for row in self._inbox.select_for_update().filter(message_id__in={i.envelope.id for i in batch})
            }
            fresh: list[tuple[int, _Ready]] = []
            seen: set = set()
            for index, item in enumerate(batch):
                row = existing.get(item.envelope.id)
                if item.envelope.id in seen or (row is not None and row.status != Status.RETRYING):
                    outcomes[index] = Outcome.DUPLICATE  # applied before, or earlier in this batch
                    continue
                seen.add(item.envelope.id)
                fresh.append((index, item))
            applied: list[_Ready] = []
            for run in _runs(fresh):
                if len(run) > 1 and self._applied_together(run, connection):
                    applied.extend(item for _, item in run)
                    continue
                for index, item in run:
                    try:
                        with metrics.handler_timed(self.context.name, item.envelope.type), \
                                self._handling(item.envelope), self._savepoint(connection, item.envelope.type):
                            item.handler(item.envelope, item.payload)
                    except _BatchAborted:
                        raise
                    except Exception as error:  # noqa: BLE001 - the handler's failure: retried after the commit
                        failed[index] = (item, error)
                        continue
                    applied.append(item)
            new_rows, retried_rows = [], []
            for item in applied:
                row = existing.get(item.envelope.id)
                if row is None:
                    new_rows.append(self._processed(self._new_inbox_row(item.envelope)))
                else:
                    retried_rows.append(self._processed(row))
            # Once per key for the whole batch (e.g. one change per read document); what a
            # failed message left went with its savepoint.
            end.run()
            # One statement for the batch's new rows (a duplicate id that a concurrent
            # delivery wrote meanwhile fails it all: then each message goes alone).
            self._inbox.bulk_create(new_rows)
            for row in retried_rows:
                row.save(using=db)
        return outcomes, failed

    def _applied_together(self, run: list[tuple[int, _Ready]], connection) -> bool:
        """Whether a ``Batched`` handler's ``many`` applied ``run``; if not, nothing of
        it stays and its messages are for ``one``, each in a savepoint of its own."""
        handler = run[0][1].handler
        # One consume span per message, open for the whole run (its database work is
        # shared), entered while the message's own part runs.
        spans = [span_started(**self._span_of(item.envelope)) for _, item in run]
        items = [BatchItem(item.envelope, item.payload,
                           handling=functools.partial(self._entered, span, item.envelope))
                 for span, (_, item) in zip(spans, run, strict=True)]
        try:
            # One time for the run, shared equally among its messages: their statements are
            # shared, so no message's own part can be told apart.
            with metrics.handler_timed(self.context.name, *(item.envelope.type for item in items)), \
                    self._savepoint(connection, items[0].envelope.type):
                handler.many(items)
        except Exception as error:  # noqa: BLE001 - each message is applied alone next, unless aborted
            for span in filter(None, spans):
                span.record_exception(error)
                span.set_status(StatusCode.ERROR, f"the run failed together: {type(error).__name__}")
            if isinstance(error, _BatchAborted):
                raise
            # An IntegrityError is most often a concurrent write of the same row: expected. Anything
            # else is likely the handler's own bug, which takes every run to one at a time.
            log.log(logging.INFO if isinstance(error, IntegrityError) else logging.WARNING,
                    "%s: a run of %d messages (%s) failed together (%r); applying them one at a time",
                    self.context.name, len(run), ", ".join(sorted({item.envelope.type for item in items})), error)
            return False
        finally:
            for span in filter(None, spans):
                span.end()
        return True

    @contextlib.contextmanager
    def _entered(self, span, envelope: Envelope) -> Iterator[None]:
        with span_entered(span), handling(envelope):
            yield

    @contextlib.contextmanager
    def _savepoint(self, connection, message_type: str) -> Iterator[None]:
        """A savepoint for what a handler does, which raises what the handler raised, and
        ``_BatchAborted`` if the transaction cannot go on after it."""
        try:
            with transaction.atomic(using=self.context.database):
                yield
                if connection.needs_rollback:
                    # It caught a database error of its own and returned: its savepoint
                    # would roll back silently and it would pass as applied.
                    raise TransactionManagementError(f"{message_type} handler returned after a database error it caught")
        except Exception as error:
            if connection.needs_rollback:
                # Its savepoint could not be rolled back: the whole transaction would roll
                # back silently, the others' effects with it.
                raise _BatchAborted(f"{type(error).__name__}: {error}") from error
            raise

    @contextlib.contextmanager
    def _handling(self, envelope: Envelope) -> Iterator[None]:
        """While a handler works on ``envelope``: its consume span, and the cause of what
        it records (``outbox.handling``)."""
        with self._span(envelope), handling(envelope):
            yield

    def _failed_attempt(self, envelope: Envelope, error: Exception) -> Outcome:
        """The retry path for a handler's exception, as ``_apply_once`` takes it."""
        if isinstance(error, PermanentFailure):
            return self._failed(envelope, f"permanent failure: {error}", permanent=True, exception=error)
        if isinstance(error, IntegrityError):
            return self._failed(envelope, "IntegrityError in handler", permanent=False, exception=error)
        log.warning("%s: %s %s failed: %r", self.context.name, envelope.type, envelope.id, error)
        return self._failed(envelope, f"{type(error).__name__}: {error}", permanent=False, exception=error)

    def _new_inbox_row(self, envelope: Envelope) -> InboxMessageBase:
        # As published: a retry reads it again, converting it again to what its handler reads.
        return self.context.inbox(message_id=envelope.id, message_type=envelope.type,
                                  envelope=envelope.as_published.model_dump(mode="json"))

    def _processed(self, row: InboxMessageBase) -> InboxMessageBase:
        row.status = Status.PROCESSED
        row.attempts += 1
        row.processed_at = timezone.now()
        row.processed_by = f"{socket.gethostname()}:{os.getpid()}:{threading.current_thread().name}"
        row.next_attempt_at = None
        row.last_error = ""
        return row

    def _apply_once(self, envelope: Envelope, payload: Message, handler: Handler) -> Outcome:
        db = self.context.database
        # An external call and its record are one message's handling: observed once.
        clock = metrics.HandlerClock(self.context.name, envelope.type)
        try:
            if isinstance(handler, ExternalCall):
                if self._inbox.filter(message_id=envelope.id).exclude(status=Status.RETRYING).exists():
                    return Outcome.DUPLICATE
                with handling(envelope), clock.running():
                    result = handler.call(envelope, payload)  # outside any transaction
                apply = lambda: handler.record(envelope, payload, result)  # noqa: E731
            else:
                apply = lambda: handler(envelope, payload)  # noqa: E731
            with transaction.atomic(using=db):
                row = self._inbox.select_for_update().filter(message_id=envelope.id).first()
                if row is not None and row.status != Status.RETRYING:
                    return Outcome.DUPLICATE
                with batch_end(using=db) as end, handling(envelope):
                    with clock.running():
                        apply()
                    end.run()
                self._processed(row or self._new_inbox_row(envelope)).save(using=db)
        except Exception as exc:  # noqa: BLE001 - any handler error is retried, then dead-lettered
            if isinstance(exc, IntegrityError) and \
                    self._inbox.filter(message_id=envelope.id, status=Status.PROCESSED).exists():
                return Outcome.DUPLICATE  # a concurrent delivery of the same message won
            return self._failed_attempt(envelope, exc)
        finally:
            clock.observe()
        return Outcome.APPLIED

    def _failed(self, envelope: Envelope, error: str, *, permanent: bool,
                exception: BaseException | None = None) -> Outcome:
        db = self.context.database
        error = storable(error, 4000)
        with transaction.atomic(using=db):
            row = self._inbox.select_for_update().filter(message_id=envelope.id).first()
            if row is not None and row.status != Status.RETRYING:
                # Already applied (the failure came after the commit, e.g. from an on_commit
                # hook) or already dead: never reopen it, or the handler would run twice.
                log.error("%s: %s %s failed after it was recorded: %s", self.context.name,
                          envelope.type, envelope.id, error)
                return Outcome.DUPLICATE if row.status == Status.PROCESSED else Outcome.DEAD_LETTERED
            row = row or self._new_inbox_row(envelope)
            row.attempts += 1
            row.last_error = error
            max_attempts = self.context.retry_max_attempts or settings.WAYBILL_RETRY_MAX_ATTEMPTS
            if permanent or row.attempts >= max_attempts:
                row.status = Status.DEAD
                row.next_attempt_at = None
                row.save(using=db)
                # What arrived was acked at the first failure: the envelope is what is kept,
                # as published (not as read: a later reader may take what a step dropped).
                published = envelope.as_published
                return self._dead_letter(
                    Received.of(published.to_json(), content_type=bus.JSON),
                    error if permanent else f"gave up after {row.attempts} attempts: {error}",
                    envelope=published.model_dump(mode="json"), attempts=row.attempts, exception=exception,
                )
            delay = backoff_delay(
                row.attempts,
                base=settings.WAYBILL_RETRY_BASE_SECONDS,
                cap=self.context.retry_max_seconds or settings.WAYBILL_RETRY_MAX_SECONDS,
            )
            row.status = Status.RETRYING
            row.next_attempt_at = timezone.now() + timedelta(seconds=delay)
            row.save(using=db)
        return Outcome.RETRY_SCHEDULED

    def _dead_letter(self, received: Received, reason: str, *, envelope: dict | None = None,
                     attempts: int = 1, exception: BaseException | None = None) -> Outcome:
        """Store the message as a dead letter, with everything known about it (the handler's
        exception too, when one gave it up). Raises if even that cannot be stored;
        ``_as_one_message`` then falls back to the minimum."""
        known = envelope or {}
        message_type = storable(str(known.get("type", "")), 120)
        self.context.dead_letters.objects.using(self.context.database).create(
            message_id=uuid_or_none(known.get("id")),
            message_type=message_type,
            reason=storable(reason, 4000),
            **_cause_fields(reason, message_type, exception),
            attempts=attempts,
            **_body_fields(received),
            content_type=received.content_type,
            content_encoding=received.content_encoding,
            headers=received.headers,
            envelope=envelope,
            routing_key=received.routing_key,
        )
        log.warning("%s dead-lettered a message: %s", self.context.name, storable(reason, 300))
        return Outcome.DEAD_LETTERED

    def _dead_letter_minimal(self, received: Received, reason: str) -> Outcome:
        """The last record of a message whose full dead letter failed: its bytes and the
        reason, nothing parsed from it. Never raises: if even this fails, the message goes
        to the broker's dead-letter exchange (``Outcome.UNSTORABLE``)."""
        try:
            self.context.dead_letters.objects.using(self.context.database).create(
                reason=storable(reason, 4000), **_cause_fields(reason, "", None), **_body_fields(received))
        except Exception:  # noqa: BLE001 - the broker keeps it instead
            log.critical("%s could not store a dead letter (%s); rejecting the message to %s. Its start: %s",
                         self.context.name, storable(reason, 300), bus.DEAD.name,
                         preview(received.body, 300), exc_info=True)
            return Outcome.UNSTORABLE
        log.error("%s dead-lettered a message with the bare minimum: %s", self.context.name, storable(reason, 300))
        return Outcome.DEAD_LETTERED

    # --- retries from the inbox -----------------------------------------------------------
    def retry_due(self) -> int:
        """Run every retry whose time has come, through the same path as a delivery:
        nothing a row holds makes this raise. Returns how many were tried."""
        now = timezone.now()
        due = list(
            self._inbox.filter(status=Status.RETRYING, next_attempt_at__lte=now).order_by("next_attempt_at")[:100]
        )
        for row in due:
            # Claim it first: several workers sweep the same inbox, and only one may move
            # the row's next try past now. A lease, not a lock: if this process dies
            # mid-try, the row comes due again when the lease runs out.
            claimed = self._inbox.filter(pk=row.pk, status=Status.RETRYING, next_attempt_at__lte=now).update(
                next_attempt_at=now + timedelta(seconds=self.retry_lease_seconds)
            )
            if not claimed:
                continue
            received = Received.of(json.dumps(row.envelope, default=repr), content_type=bus.JSON)
            outcome = self._as_one_message(
                lambda row=row, received=received: self._retry(row, received),
                unhandled=lambda error, row=row, received=received: self._retry_unhandled(row, received, error),
            )
            # An inbox row of a type no longer handled counts as unread, as on the bus.
            handled = self.context.handler_for(row.message_type) is not None
            metrics.consumed(self.context, row.message_type if handled else metrics.UNREAD_TYPE, outcome)
        return len(due)

    def _retry(self, row: InboxMessageBase, received: Received) -> Outcome:
        try:
            envelope, payload, handler = self._read(received.body)
        except MessageRefused as refused:
            # The schema it needs is gone (or a replayed dead letter is still invalid).
            with transaction.atomic(using=self.context.database):
                self._inbox.filter(pk=row.pk).update(status=Status.DEAD, last_error=storable(refused.reason, 4000))
                return self._dead_letter(received, refused.reason, envelope=refused.envelope)
        if handler is None:
            return self._failed(envelope, f"{self.context.name} has no handler for {envelope.type!r}", permanent=True)
        return self._attempt(envelope, payload, handler)

    def _retry_unhandled(self, row: InboxMessageBase, received: Received, error: Exception) -> Outcome:
        reason = f"could not be retried: {_describe(error)}"
        try:
            # Dead, so its retries stop coming back to it once the claim's lease runs out.
            self._inbox.filter(pk=row.pk).update(status=Status.DEAD, next_attempt_at=None,
                                                 last_error=storable(reason, 4000))
        except Exception:  # noqa: BLE001 - the dead letter below still records it
            log.exception("%s: could not mark inbox row %s dead", self.context.name, row.pk)
        return self._dead_letter_minimal(received, reason)

    # --- bindings chosen at run time -------------------------------------------------------
    def rebind(self) -> bool:
        """For a consumer whose manifest names a ``bindings`` function: make its queue's
        bindings what the function wants now. A kernel job of the consumer's scheduler, so
        it runs in the consumer's own process, under the consumer's broker user (which may
        bind exactly its own queues: ``launcher.provision``); the processes that change what
        should be bound (a web process, the admin) never touch the broker for it.

        It asks every WAYBILL_BINDINGS_SECONDS (a change made in another process), at once
        after ``bus.bindings_changed`` in this one, and binds everything afresh on a new
        connection and every WAYBILL_BINDINGS_RESYNC_SECONDS (bindings lost or changed
        behind its back). Returns whether it bound. A failure raises (the scheduler logs it)
        and is retried at the next tick on a new connection."""
        if self.context.bindings is None:
            return False
        now = time.monotonic()
        wakeup = bus.bindings_wakeup(self.context.name)
        if not wakeup.is_set() and now < self._bindings_due:
            return False
        wakeup.clear()
        resync = self._bindings_connection is None or now >= self._bindings_resync_due
        try:
            if self._bindings_connection is None:
                connection = self._bindings_connection = bus.connect()
                connection.ensure_connection(max_retries=bus.retries_for_every_node(connection))
            bound = bus.rebind(self._bindings_connection.default_channel, self.context, resync=resync)
        except Exception:
            self.close()
            raise
        self._bindings_due = now + settings.WAYBILL_BINDINGS_SECONDS
        if resync:
            self._bindings_resync_due = now + settings.WAYBILL_BINDINGS_RESYNC_SECONDS
        return bound

    def close(self) -> None:
        """Let go of what rebind() holds (its broker connection)."""
        connection, self._bindings_connection = self._bindings_connection, None
        if connection is not None:
            with contextlib.suppress(Exception):
                connection.release()

    # --- the long-running loop ----------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        """Consume this consumer's partition queue in batches until ``stop``; reconnect
        with backoff whenever the broker connection is lost."""
        self.stop = stop
        reconnects = Reconnects(f"consumer {self.context.name}", stop, log)
        # Never more than the broker lets it hold unacked: it would wait for a message
        # the broker does not send until some are acked.
        batch_size = max(1, min(settings.WAYBILL_CONSUMER_BATCH_SIZE, settings.WAYBILL_CONSUMER_PREFETCH))
        try:
            while not stop.is_set():
                try:
                    with bus.consuming() as connection:
                        arrived: list[KombuMessage] = []
                        with connection.Consumer(
                            [bus.context_queue(self.context, self.partition)],
                            on_message=arrived.append,
                            accept=[bus.JSON],
                            prefetch_count=settings.WAYBILL_CONSUMER_PREFETCH,
                        ):
                            reconnects.succeeded()
                            self.connected.set()
                            while not stop.is_set():
                                # A dead connection is noticed within two heartbeats (the
                                # saga clock must not run on while nothing can arrive).
                                connection.heartbeat_check()
                                _take_batch(connection, arrived, batch_size)
                                if arrived:
                                    batch = arrived[:]
                                    arrived.clear()
                                    self.on_messages(batch)
                except Exception:
                    self.connected.clear()
                    reconnects.failed()
        finally:
            self.connected.clear()
            connections.close_all()


def read_message(context: BoundedContext, body: bytes | str) -> tuple[Envelope, Message, Handler | None]:
    """The message parsed and, if ``context``'s handler reads another version of its type,
    converted to that one (``read_as``); its handler, None if it has none. Raises
    ``MessageRefused``. The one read path of a message, from the bus or from the history."""
    envelope, payload = parse(body, max_bytes=settings.WAYBILL_MESSAGE_MAX_BYTES,
                              max_depth=settings.WAYBILL_MESSAGE_MAX_DEPTH)
    found = context.handler_for(envelope.type)
    if found is None:
        return envelope, payload, None
    handler, version = found
    if envelope.schema_version != version:
        try:
            envelope, payload = read_as(envelope, version)
        except MessageRefused as refused:
            raise MessageRefused(refused.reason, envelope=envelope.model_dump(mode="json")) from None
    return envelope, payload, handler


def _take_batch(connection, arrived: list, size: int, *, idle_seconds: float = 0.25) -> None:
    """Wait up to ``idle_seconds`` for a message, then take what has already arrived (and
    what comes within ``WAYBILL_CONSUMER_BATCH_WAIT_SECONDS``) until ``size`` are in
    ``arrived``. A message that comes alone goes alone, at once."""
    try:
        connection.drain_events(timeout=idle_seconds)
    except socket.timeout:
        return
    deadline = time.monotonic() + settings.WAYBILL_CONSUMER_BATCH_WAIT_SECONDS
    while len(arrived) < size:
        try:
            connection.drain_events(timeout=max(0.0, deadline - time.monotonic()))
        except socket.timeout:
            return


def _body_fields(received: Received) -> dict:
    """A dead letter's body: the exact bytes, their size and the bounded preview people read."""
    return {"body": received.body, "body_size": len(received.body),
            "preview": preview(received.body, settings.WAYBILL_MESSAGE_PREVIEW_BYTES)}


def _cause_fields(reason: str, message_type: str, exception: BaseException | None) -> dict:
    """A dead letter's cause, grouped (``waybill.failures``), with the traceback of the
    exception that gave it up when there was one."""
    failure = Failure.of(reason, error=exception)
    trace = "".join(traceback.format_exception(exception)) if exception is not None else ""
    return {"reason_kind": failure.kind, "error_type": failure.error_type[:200],
            "fingerprint": failure.fingerprint(message_type), "traceback": storable(trace, 16000)}


def _describe(error: Exception) -> str:
    try:
        return storable(f"{type(error).__name__}: {error}", 2000)
    except Exception:  # noqa: BLE001 - an exception whose str() fails
        return type(error).__name__
