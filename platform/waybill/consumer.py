"""The consumer: takes a context's messages off its queue and applies them exactly once.

Per message: refuse what cannot be read (dead letter, ack, next); otherwise run the
handler and write the inbox row in one transaction, then ack. A handler that raises is
retried from the inbox with exponential backoff and jitter; ``PermanentFailure`` or the
last try sends it to the dead letters. Nothing here blocks the messages behind a bad one.
"""

from __future__ import annotations

import enum
import json
import logging
import os
import socket
import threading
import time
import uuid
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, close_old_connections, connections, transaction
from django.utils import timezone
from kombu.message import Message as KombuMessage

from . import bus, opsreport, retention
from .backoff import Reconnects, backoff_delay
from .contexts import BoundedContext, ExternalCall, Handler
from .inbox import InboxMessageBase
from .messages import Envelope, Message, MessageRefused, parse
from .outbox import handling
from .telemetry import SpanKind, span_for_message

log = logging.getLogger(__name__)
Status = InboxMessageBase.Status


class Outcome(enum.StrEnum):
    APPLIED = "applied"
    DUPLICATE = "duplicate"
    RETRY_SCHEDULED = "retry scheduled"
    DEAD_LETTERED = "dead-lettered"


class PermanentFailure(Exception):
    """Raised by a handler for a message that no retry can fix."""


class ContextConsumer:
    retry_sweep_seconds = 0.25
    retry_lease_seconds = 60.0

    def __init__(self, context: BoundedContext, partition: int = 0):
        self.context = context
        self.partition = partition  # the queue run() consumes; on_message serves any
        self._next_retry_sweep = 0.0

    @property
    def _inbox(self):
        return self.context.inbox.objects.using(self.context.database)

    # --- one message ----------------------------------------------------------------
    def on_message(self, message: KombuMessage) -> Outcome:
        # A long-lived consumer (the Celery bootstep above all) must notice a database
        # connection that died or outlived CONN_MAX_AGE, as Django does between requests.
        close_old_connections()
        outcome = self.receive(
            message.body,
            content_type=message.content_type,
            routing_key=message.delivery_info.get("routing_key", ""),
        )
        message.ack()  # only now: the outcome above is committed
        return outcome

    def receive(self, body: bytes | str, *, content_type: str, routing_key: str = "") -> Outcome:
        if content_type != bus.JSON:
            # JSON only on the bus: never hand another serializer (pickle) a byte.
            return self._dead_letter(
                body, f"refused content type {content_type!r}: only {bus.JSON} is accepted",
                routing_key=routing_key,
            )
        try:
            envelope, payload = parse(body)
        except MessageRefused as refused:
            return self._dead_letter(body, refused.reason, routing_key=routing_key)
        handler = self.context.handler_for(envelope.type)
        if handler is None:
            return self._dead_letter(
                body, f"{self.context.name} has no handler for {envelope.type!r}",
                envelope=envelope, routing_key=routing_key,
            )
        return self._attempt(envelope, payload, handler)

    def _attempt(self, envelope: Envelope, payload: Message, handler: Handler) -> Outcome:
        with span_for_message(
            f"consume {envelope.type}", traceparent=envelope.traceparent, kind=SpanKind.CONSUMER,
            **{"messaging.message.id": str(envelope.id), "waybill.context": self.context.name},
        ):
            return self._apply_once(envelope, payload, handler)

    def _apply_once(self, envelope: Envelope, payload: Message, handler: Handler) -> Outcome:
        db = self.context.database
        try:
            if isinstance(handler, ExternalCall):
                if self._inbox.filter(message_id=envelope.id).exclude(status=Status.RETRYING).exists():
                    return Outcome.DUPLICATE
                with handling(envelope):
                    result = handler.call(envelope, payload)  # outside any transaction
                apply = lambda: handler.record(envelope, payload, result)  # noqa: E731
            else:
                apply = lambda: handler(envelope, payload)  # noqa: E731
            with transaction.atomic(using=db):
                row = self._inbox.select_for_update().filter(message_id=envelope.id).first()
                if row is not None and row.status != Status.RETRYING:
                    return Outcome.DUPLICATE
                if row is None:
                    row = self.context.inbox(
                        message_id=envelope.id,
                        message_type=envelope.type,
                        envelope=envelope.model_dump(mode="json"),
                    )
                with handling(envelope):
                    apply()
                row.status = Status.PROCESSED
                row.attempts += 1
                row.processed_at = timezone.now()
                row.processed_by = f"{socket.gethostname()}:{os.getpid()}:{threading.current_thread().name}"
                row.next_attempt_at = None
                row.last_error = ""
                row.save(using=db)
        except IntegrityError:
            if self._inbox.filter(message_id=envelope.id, status=Status.PROCESSED).exists():
                return Outcome.DUPLICATE  # a concurrent delivery of the same message won
            return self._failed(envelope, "IntegrityError in handler", permanent=False)
        except PermanentFailure as exc:
            return self._failed(envelope, f"permanent failure: {exc}", permanent=True)
        except Exception as exc:  # noqa: BLE001 - any handler error is retried, then dead-lettered
            log.warning("%s: %s %s failed: %r", self.context.name, envelope.type, envelope.id, exc)
            return self._failed(envelope, f"{type(exc).__name__}: {exc}", permanent=False)
        return Outcome.APPLIED

    def _failed(self, envelope: Envelope, error: str, *, permanent: bool) -> Outcome:
        db = self.context.database
        with transaction.atomic(using=db):
            row = self._inbox.select_for_update().filter(message_id=envelope.id).first()
            if row is not None and row.status != Status.RETRYING:
                # Already applied (the failure came after the commit, e.g. from an on_commit
                # hook) or already dead: never reopen it, or the handler would run twice.
                log.error("%s: %s %s failed after it was recorded: %s", self.context.name,
                          envelope.type, envelope.id, error)
                return Outcome.DUPLICATE if row.status == Status.PROCESSED else Outcome.DEAD_LETTERED
            if row is None:
                row = self.context.inbox(
                    message_id=envelope.id,
                    message_type=envelope.type,
                    envelope=envelope.model_dump(mode="json"),
                )
            row.attempts += 1
            row.last_error = error[:4000]
            max_attempts = self.context.retry_max_attempts or settings.WAYBILL_RETRY_MAX_ATTEMPTS
            if permanent or row.attempts >= max_attempts:
                row.status = Status.DEAD
                row.next_attempt_at = None
                row.save(using=db)
                self.context.dead_letters.objects.using(db).create(
                    message_id=envelope.id,
                    message_type=envelope.type,
                    reason=error if permanent else f"gave up after {row.attempts} attempts: {error}",
                    attempts=row.attempts,
                    body=envelope.to_json(),
                    envelope=envelope.model_dump(mode="json"),
                )
                return Outcome.DEAD_LETTERED
            delay = backoff_delay(
                row.attempts,
                base=settings.WAYBILL_RETRY_BASE_SECONDS,
                cap=self.context.retry_max_seconds or settings.WAYBILL_RETRY_MAX_SECONDS,
            )
            row.status = Status.RETRYING
            row.next_attempt_at = timezone.now() + timedelta(seconds=delay)
            row.save(using=db)
        return Outcome.RETRY_SCHEDULED

    def _dead_letter(
        self, body: bytes | str, reason: str, *, envelope: Envelope | None = None, routing_key: str = ""
    ) -> Outcome:
        text = body.decode("utf-8", errors="replace") if isinstance(body, bytes) else body
        raw_envelope = envelope.model_dump(mode="json") if envelope else _json_object_or_none(text)
        known = raw_envelope or {}
        self.context.dead_letters.objects.using(self.context.database).create(
            message_id=_uuid_or_none(known.get("id")),
            message_type=str(known.get("type", ""))[:120],
            reason=reason[:4000],
            attempts=1,
            body=text,
            envelope=raw_envelope,
            routing_key=routing_key,
        )
        log.warning("%s dead-lettered a message: %s", self.context.name, reason)
        return Outcome.DEAD_LETTERED

    # --- retries from the inbox -----------------------------------------------------------
    def retry_due(self) -> int:
        """Run every retry whose time has come; returns how many were tried."""
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
            body = json.dumps(row.envelope)
            try:
                envelope, payload = parse(body)
            except MessageRefused as refused:
                # The schema it needs is gone (or a replayed dead letter is still invalid).
                with transaction.atomic(using=self.context.database):
                    self._inbox.filter(pk=row.pk).update(status=Status.DEAD, last_error=refused.reason)
                    self._dead_letter(body, refused.reason)
                continue
            handler = self.context.handler_for(envelope.type)
            if handler is None:
                self._failed(envelope, f"{self.context.name} has no handler for {envelope.type!r}", permanent=True)
                continue
            self._attempt(envelope, payload, handler)
        return len(due)

    def _maybe_sweep(self) -> None:
        now = time.monotonic()
        if now >= self._next_retry_sweep:
            self._next_retry_sweep = now + self.retry_sweep_seconds
            self.sweep()

    def sweep(self) -> None:
        """Due retries, then the context's periodic work (e.g. overdue saga steps), then
        its outbox report for the operations dashboard (rate-limited, see opsreport) and
        the pruning of old outbox and inbox rows (see retention)."""
        self.retry_due()
        for job in (*self.context.periodic, self._outbox_report, self._prune):
            try:
                job()
            except Exception:
                log.exception("%s: periodic %s failed", self.context.name, getattr(job, "__name__", job))

    def _outbox_report(self) -> None:
        opsreport.outbox_report(self.context)

    def _prune(self) -> None:
        retention.prune_due(self.context)

    # --- the long-running loop ----------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        reconnects = Reconnects(f"consumer {self.context.name}", stop, log)
        try:
            while not stop.is_set():
                try:
                    with bus.connect() as connection:
                        connection.ensure_connection(max_retries=3)
                        if settings.WAYBILL_BROKER_DECLARE:
                            bus.declare(connection)
                        with connection.Consumer(
                            [bus.context_queue(self.context, self.partition)],
                            on_message=self.on_message,
                            accept=[bus.JSON],
                            prefetch_count=settings.WAYBILL_CONSUMER_PREFETCH,
                        ):
                            reconnects.succeeded()
                            while not stop.is_set():
                                close_old_connections()
                                try:
                                    connection.drain_events(timeout=0.25)
                                except socket.timeout:
                                    pass
                                if self.partition == 0:
                                    # One sweeper per consumer: the partitions share one inbox
                                    # and one set of periodic jobs.
                                    self._maybe_sweep()
                except Exception:
                    reconnects.failed()
        finally:
            connections.close_all()


def _json_object_or_none(text: str) -> dict | None:
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _uuid_or_none(value) -> uuid.UUID | None:
    try:
        return uuid.UUID(str(value))
    except ValueError:
        return None
