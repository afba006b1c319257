"""Forgetting what is no longer needed: sent outbox rows and processed inbox rows (and,
embedded, the event history past its age: the outboxes' sent events and documents are it).

A sent outbox row is kept for operators (what left, when) and an inbox row for
deduplication: a duplicate that arrives after its row is gone would be applied again.
Brokers redeliver within minutes to hours (unacked messages, a replayed dead letter is a
new decision by an operator), so the inbox keeps a week by default and the outbox three
days; both are settings. Dead letters and retrying messages are never pruned here: they
wait for an operator or their next try.

``prune`` is a kernel job of the scheduler (``waybill.scheduler``), run every
``PRUNE_EVERY_SECONDS`` where each consumer runs; it deletes in bounded batches, so a large
first prune never holds a long transaction (several processes pruning at once simply
delete disjoint or no rows).
"""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from .contexts import BoundedContext
from .history import KINDS

PRUNE_EVERY_SECONDS = 600.0
BATCH = 5000
MAX_BATCHES = 20  # per prune; the rest waits for the next one

def prune(context: BoundedContext) -> int:
    """Delete ``context``'s processed inbox rows past their retention (and its sent outbox
    rows, if this registration relays the outbox). Returns how many rows were deleted."""
    now = timezone.now()
    inbox = context.inbox.objects.using(context.database).filter(
        status=context.inbox.Status.PROCESSED,
        processed_at__lt=now - timedelta(seconds=settings.WAYBILL_INBOX_RETENTION_SECONDS))
    deleted = _delete_in_batches(inbox)
    if context.relay:  # a bulkhead shares its context's outbox; the main registration prunes it
        outbox = context.outbox.objects.using(context.database)
        sent_before = now - timedelta(seconds=settings.WAYBILL_OUTBOX_RETENTION_SECONDS)
        if settings.WAYBILL_HISTORY == "archive":
            # Its sent events and documents are the history (waybill.history): kept as long
            # as the history is, and never less than the outbox keeps the rest.
            kept_from = min(sent_before, now - timedelta(seconds=settings.WAYBILL_HISTORY_MAX_AGE_SECONDS))
            outbox = outbox.filter(Q(sent_at__lt=sent_before) & ~Q(kind__in=KINDS) | Q(sent_at__lt=kept_from))
        else:
            outbox = outbox.filter(sent_at__lt=sent_before)
        deleted += _delete_in_batches(outbox)
    return deleted


def _delete_in_batches(rows) -> int:
    deleted = 0
    for _ in range(MAX_BATCHES):
        ids = list(rows.values_list("id", flat=True)[:BATCH])
        if not ids:
            break
        deleted += rows.model.objects.using(rows.db).filter(id__in=ids).delete()[0]
    return deleted
