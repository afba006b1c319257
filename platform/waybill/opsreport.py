"""Operations report: each context with a relay tells the others, every few seconds, how
its outbox and dead letters look, as a state document on the bus.

Those figures live in the context's own database, which nobody else may read; the
operations dashboard (readmodels) projects these documents instead. The report is
recorded like any other message (outbox row in a transaction on the context's database,
published by its relay), so a context whose relay is stuck shows it: its reports stop
arriving, and its last one grows old on the dashboard.

``outbox_report`` is a kernel job of the scheduler (``waybill.scheduler``), run every
``REPORT_SECONDS`` in every process that hosts the context's main consumer; across
processes it coalesces through the last report in the outbox itself (under an advisory
lock on PostgreSQL), so several workers of one context still report about once per
``REPORT_SECONDS``.

Under a supervisor (services mode on one machine), the same report also says which of
the context's processes keep crashing (``ProcessesSupervised``): the dashboard shows a
relay that the supervisor gave up on although readmodels cannot see the supervisor.
"""

from __future__ import annotations

import logging
import zlib
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Count, Min
from django.utils import timezone

from . import contexts, supervisor
from .messages import Kind, Message, message
from .outbox import outbox_record

log = logging.getLogger(__name__)
REPORT_SECONDS = 5.0


@message("waybill.outbox_measured", kind=Kind.DOCUMENT)
class OutboxMeasured(Message):
    """State document: one context's outbox backlog and dead letters, as measured at
    ``measured_at``. ``oldest_pending_age_s`` is None when nothing is pending; ``parked``
    rows failed to publish too often and wait for an operator; ``dead_letters`` counts
    the not-yet-replayed dead letters of every consumer sharing the context's database."""

    context: str
    pending: int
    oldest_pending_age_s: float | None
    parked: int
    dead_letters: int
    measured_at: datetime


@message("waybill.processes_supervised", kind=Kind.DOCUMENT)
class ProcessesSupervised(Message):
    """State document: one context's processes that its supervisor reports as crashing,
    name -> "BACKOFF" (failing to start, retried with backoff), "FATAL" (given up on) or
    "CRASH_LOOP" (crashes again and again, restarted each time), as seen at
    ``measured_at``; empty when every one runs. Sent only by supervised processes."""

    context: str
    crashing: dict[str, str]
    measured_at: datetime



def aggregate_id(context_name: str) -> str:
    return f"outbox.{context_name}"


def processes_aggregate_id(context_name: str) -> str:
    return f"processes.{context_name}"


def outbox_report(context: contexts.BoundedContext, *, force: bool = False) -> OutboxMeasured | None:
    """Measure ``context``'s outbox and record an ``OutboxMeasured`` document, unless one
    was recorded less than ``REPORT_SECONDS`` ago (by this or another process). Returns
    the report, or None when it was not due. ``force`` skips that check (tests)."""
    if not context.relay:
        return None  # shares the outbox of a registration that reports it
    if not force and _reported_recently(context):
        return None  # the common case, with every process of a context reporting: no call below
    crashing = _crashing(context)  # asked before the transaction: keep the lock short
    db = context.database
    with transaction.atomic(using=db):
        connection = transaction.get_connection(db)
        if connection.vendor == "postgresql" and not force:
            with connection.cursor() as cursor:
                # Held to the end of this transaction: two workers sweeping at once would
                # otherwise both find no recent report and both record one.
                cursor.execute("SELECT pg_try_advisory_xact_lock(%s)",
                               [zlib.crc32(aggregate_id(context.name).encode())])
                if not cursor.fetchone()[0]:
                    return None
        if not force and _reported_recently(context):  # again, now that it is ours to do
            return None
        now = timezone.now()
        report = _measure(context, now)
        # Reports of one context are ordered by time; readers keep the newest.
        version = int(now.timestamp() * 1000)
        outbox_record(context=context.name, message=report, aggregate_id=aggregate_id(context.name),
                      aggregate_version=version)
        if crashing is not None:
            outbox_record(context=context.name, aggregate_id=processes_aggregate_id(context.name),
                          aggregate_version=version,
                          message=ProcessesSupervised(context=context.name, crashing=crashing, measured_at=now))
    return report


def _reported_recently(context: contexts.BoundedContext) -> bool:
    recent = timezone.now() - timedelta(seconds=REPORT_SECONDS * 0.9)
    # The newest report through the (aggregate_id, id) index, not a scan of the outbox.
    last = (context.outbox.objects.using(context.database).filter(aggregate_id=aggregate_id(context.name))
            .order_by("-id").values_list("created_at", flat=True).first())
    return last is not None and last > recent


def _crashing(context: contexts.BoundedContext) -> dict[str, str] | None:
    """What the supervisor says of the context's processes; None when unsupervised or when
    it does not answer (the dashboard then keeps its last word, which grows old)."""
    if not supervisor.supervised():
        return None
    try:
        return supervisor.crashing([context.name])
    except supervisor.SupervisorUnavailable:
        log.warning("operations report: the supervisor did not answer", exc_info=True)
        return None


@dataclass(frozen=True)
class OutboxFigures:
    """How one context's outbox and dead letters look at one moment: what the operations
    report sends and the Prometheus metrics of the process that relays it show
    (``waybill.metrics``), measured in one place. ``dead_letters``: not-yet-replayed dead
    letters per consumer sharing the context's database."""

    pending: int
    oldest_pending_age_s: float | None
    parked: int
    dead_letters: dict[str, int]
    dead_letters_total: int  # each table once, however many consumers share it


def outbox_figures(context: contexts.BoundedContext, now: datetime) -> OutboxFigures:
    """Counts through the outbox's indexes (unsent rows are the head of ``outbox_pending``)
    and the dead-letter tables, which stay small: cheap enough to ask at every scrape."""
    db = context.database
    unsent = context.outbox.objects.using(db).filter(sent_at__isnull=True)
    max_attempts = settings.WAYBILL_RELAY_MAX_ATTEMPTS
    figures = unsent.filter(publish_attempts__lt=max_attempts).aggregate(
        oldest=Min("created_at"), pending=Count("id"))
    oldest = figures["oldest"]
    # Once per table: a table two registrations shared would otherwise count twice.
    counted: dict[type, int] = {}
    dead_letters = {}
    for consumer in contexts.all_contexts():
        if consumer.database == db:
            model = consumer.dead_letters
            if model not in counted:
                counted[model] = model.objects.using(db).filter(
                    replayed_at__isnull=True, discarded_at__isnull=True).count()
            dead_letters[consumer.name] = counted[model]
    return OutboxFigures(
        pending=figures["pending"],
        oldest_pending_age_s=round(max((now - oldest).total_seconds(), 0.0), 3) if oldest else None,
        parked=unsent.filter(publish_attempts__gte=max_attempts).count(),
        dead_letters=dead_letters,
        dead_letters_total=sum(counted.values()),
    )


def _measure(context: contexts.BoundedContext, now: datetime) -> OutboxMeasured:
    figures = outbox_figures(context, now)
    return OutboxMeasured(
        context=context.name,
        pending=figures.pending,
        oldest_pending_age_s=figures.oldest_pending_age_s,
        parked=figures.parked,
        dead_letters=figures.dead_letters_total,
        measured_at=now,
    )
