"""Transactional outbox: a message is a row written in the same transaction as the
state change it describes, so both commit or neither does (invariant 1). The relay
publishes committed rows; see ``relay``."""

from __future__ import annotations

import contextlib
import threading
import uuid
from collections import defaultdict
from collections.abc import Iterator
from contextvars import ContextVar

from django.db import transaction
from django.utils import timezone

from . import contexts
from .batchend import gathered_at_batch_end
from .messages import Envelope, Kind, Message
from .replaymode import refuse_while_replaying
from .telemetry import current_traceparent


class OutboxOutsideTransaction(RuntimeError):
    """Recording a message outside a transaction would let it commit without its change."""


# The message being handled right now, so messages it causes inherit its correlation.
_handling: ContextVar[Envelope | None] = ContextVar("waybill_handling", default=None)


@contextlib.contextmanager
def handling(envelope: Envelope) -> Iterator[None]:
    token = _handling.set(envelope)
    try:
        yield
    finally:
        _handling.reset(token)


# The flow that what is recorded outside any handler belongs to (an HTTP request, a
# command run): every message it records shares one correlation id, so the console traces
# an order's placed event and its saga's first command as one flow. Outside one, each root
# message starts a flow of its own.
_correlation: ContextVar[uuid.UUID | None] = ContextVar("waybill_correlation", default=None)


@contextlib.contextmanager
def correlated(correlation_id: uuid.UUID | None = None) -> Iterator[uuid.UUID]:
    """Messages recorded inside (outside a handler) share one correlation id, a fresh one
    unless given."""
    correlation_id = correlation_id or uuid.uuid4()
    token = _correlation.set(correlation_id)
    try:
        yield correlation_id
    finally:
        _correlation.reset(token)


def correlation_middleware(get_response):
    """One correlation id per HTTP request, for the messages it records, given back in the
    ``X-Correlation-ID`` response header so that a client (or an operator) can quote it."""

    def middleware(request):
        with correlated() as correlation_id:
            response = get_response(request)
        response["X-Correlation-ID"] = str(correlation_id)
        return response

    return middleware


# Relays sleep on these; a commit that wrote outbox rows wakes its context's relay at
# once, so the happy path has no polling delay.
_wakeups: defaultdict[str, threading.Event] = defaultdict(threading.Event)


def wakeup_event(context_name: str) -> threading.Event:
    return _wakeups[context_name]


def outbox_record(
    *, context: str, message: Message, aggregate_id: str, aggregate_version: int
) -> Envelope:
    """Write ``message`` to ``context``'s outbox inside the caller's transaction.

    Raises ``OutboxOutsideTransaction`` unless a transaction is open on the context's
    database."""
    refuse_while_replaying(f"recording {message.message_type} in {context}'s outbox")
    ctx = contexts.get(context)
    if not transaction.get_connection(ctx.database).in_atomic_block:
        raise OutboxOutsideTransaction(
            f"{message.message_type} must be recorded inside transaction.atomic(using={ctx.database!r})."
        )
    cause = _handling.get()
    envelope = Envelope(
        id=uuid.uuid4(),
        type=message.message_type,
        schema_version=message.schema_version,
        aggregate_id=str(aggregate_id),
        aggregate_version=aggregate_version,
        occurred_at=timezone.now(),
        correlation_id=cause.correlation_id if cause else (_correlation.get() or uuid.uuid4()),
        causation_id=cause.id if cause else None,
        traceparent=current_traceparent() or (cause.traceparent if cause else None),
        payload=message.model_dump(mode="json"),
    )
    row = ctx.outbox(
        message_id=envelope.id,
        message_type=envelope.type,
        kind=message.kind.value,
        aggregate_id=envelope.aggregate_id,
        aggregate_version=aggregate_version,
        envelope=envelope.model_dump(mode="json"),
    )
    # In a consumer's batch, its messages are inserted together at the batch's end (in the
    # order recorded, so in commit order) and wake the relays once; at once otherwise.
    gathered_at_batch_end(_outbox_write, context, row)
    return envelope


def _outbox_write(context: str, rows: list) -> None:
    ctx = contexts.get(context)
    ctx.outbox.objects.using(ctx.database).bulk_create(_latest_documents(rows))
    connection = transaction.get_connection(ctx.database)
    if connection.vendor == "postgresql":
        # Transactional: PostgreSQL delivers it on commit (and merges repeats), waking
        # relays in other processes; see relay.listen_for_commits.
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_notify(%s, '')", [notify_channel(context)])
    transaction.on_commit(_wakeups[context].set, using=ctx.database)


def _latest_documents(rows: list) -> list:
    """``rows`` without the documents that a later row of the same batch supersedes.

    A document is the whole current state of its entity, and consumers apply one only if
    it is newer than what they hold, so of the versions one batch records (a product's
    stock after each of fifty reservations) only the last needs to travel. Only a run of
    the same document (type and schema version) with no other message of the aggregate in
    between is folded: no message of an aggregate ever moves past another."""
    superseded: set[int] = set()
    run: dict[str, dict[tuple[str, int], int]] = {}  # aggregate -> its current run's documents
    for index, row in enumerate(rows):
        if row.kind != Kind.DOCUMENT:
            run.pop(row.aggregate_id, None)  # a message in between ends the run
            continue
        documents = run.setdefault(row.aggregate_id, {})
        same = (row.message_type, row.envelope["schema_version"])
        if same in documents:
            superseded.add(documents[same])
        documents[same] = index
    return [row for index, row in enumerate(rows) if index not in superseded]


def notify_channel(context_name: str) -> str:
    return f"waybill_outbox_{context_name}"
