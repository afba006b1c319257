"""What an operator may do to the messaging tables; the admin and the operations console
call only these. Each act is recorded in the admin's history by its caller's user
(``waybill.rights.record``): the functions that take ``by`` record it themselves."""

from __future__ import annotations

from django.conf import settings
from django.db import transaction
from django.db.models.functions import Now

from . import contexts, jsonlimits, rights
from .models import DeadLetterBase, InboxMessageBase
from .messages import uuid_or_none
from .outbox import wakeup_event


def outbox_republish(*, context_name: str, row_ids: list[int]) -> int:
    """Queue rows for publishing (again): sent ones, or parked ones that failed too often.
    Consumers' inboxes drop what they already applied."""
    ctx = contexts.get(context_name)
    with transaction.atomic(using=ctx.database):
        count = ctx.outbox.objects.using(ctx.database).filter(id__in=row_ids).update(
            sent_at=None, publish_attempts=0, last_error=""
        )
        transaction.on_commit(wakeup_event(context_name).set, using=ctx.database)
    return count


def outbox_skip(*, context_name: str, row_id: int, reason: str, by) -> bool:
    """Give up an unsent row for good, so that its aggregate's later rows may go: it is
    marked sent and skipped, never published (and in no event history). Only a row that is
    still unsent; ``reason`` is required and recorded with ``by``."""
    if not reason.strip():
        raise ValueError("a skip needs a reason")
    ctx = contexts.get(context_name)
    with transaction.atomic(using=ctx.database):
        rows = ctx.outbox.objects.using(ctx.database)
        row = rows.select_for_update().filter(id=row_id, sent_at__isnull=True).first()
        if row is None:
            return False
        rows.filter(id=row_id).update(sent_at=Now(), skipped_at=Now(), skip_reason=f"{by}: {reason}"[:4000])
        transaction.on_commit(wakeup_event(context_name).set, using=ctx.database)
    rights.record(by, [row], action="skip (never published)", reason=reason,
                  detail=f"{row.message_type} {row.message_id} of {row.aggregate_id}")
    return True


def dead_letters_redrive(*, letters: list[DeadLetterBase], by, reason: str = "") -> int:
    """``dead_letter_replay`` for each of ``letters``, recorded with ``by``; returns how
    many were redriven."""
    redriven = [letter for letter in letters if dead_letter_replay(dead_letter=letter)]
    rights.record(by, redriven, action="redrive", reason=reason)
    return len(redriven)


def dead_letters_discard(*, letters: list[DeadLetterBase], by, reason: str) -> int:
    """Give up open dead letters for good: kept, with who and why, but out of the groups
    and the counts. ``reason`` is required."""
    if not reason.strip():
        raise ValueError("a discard needs a reason")
    discarded = []
    for letter in letters:
        ctx = contexts.for_model(type(letter))
        changed = type(letter).objects.using(ctx.database).filter(
            pk=letter.pk, replayed_at__isnull=True, discarded_at__isnull=True,
        ).update(discarded_at=Now(), discard_reason=f"{by}: {reason}"[:4000])
        if changed:
            discarded.append(letter)
    rights.record(by, discarded, action="discard", reason=reason)
    return len(discarded)


def inbox_retry_now(*, context_name: str, row_ids: list[int]) -> int:
    """Bring scheduled retries forward to now."""
    ctx = contexts.get(context_name)
    return (
        ctx.inbox.objects.using(ctx.database)
        .filter(id__in=row_ids, status=InboxMessageBase.Status.RETRYING)
        .update(next_attempt_at=Now())
    )


def dead_letter_replay(*, dead_letter: DeadLetterBase) -> bool:
    """Give a dead letter a fresh set of tries through the inbox's retry path.

    The envelope is the one read when it died or, if none was (refused unread, e.g. for its
    content type, or stored bare), its bytes when they are an envelope.
    Returns False for a message too broken to have an envelope (nothing to replay), for one
    replayed before, and for one the inbox shows applied or retrying.
    A message that is still invalid simply dead-letters again, with the current reason."""
    envelope = dead_letter.envelope or _envelope_in(bytes(dead_letter.body))
    message_id = uuid_or_none((envelope or {}).get("id"))
    if not envelope or message_id is None or dead_letter.replayed_at or dead_letter.discarded_at:
        return False
    ctx = contexts.for_model(type(dead_letter))
    Status = InboxMessageBase.Status
    with transaction.atomic(using=ctx.database):
        # Claimed first, conditionally: two operators redriving one group at once replay
        # each dead letter once.
        claimed = type(dead_letter).objects.using(ctx.database).filter(
            pk=dead_letter.pk, replayed_at__isnull=True, discarded_at__isnull=True).update(replayed_at=Now())
        if not claimed:
            return False
        inbox = ctx.inbox.objects.using(ctx.database)
        if inbox.filter(message_id=message_id).exclude(status=Status.DEAD).exists():
            transaction.set_rollback(True, using=ctx.database)
            return False  # applied or already retrying: a replay would apply it twice
        inbox.update_or_create(
            message_id=message_id,
            defaults={
                "message_type": str(envelope.get("type", ""))[:120],
                "status": Status.RETRYING,
                "attempts": 0,
                "envelope": envelope,
                "next_attempt_at": Now(),
                "last_error": f"replayed from dead letter {dead_letter.pk}",
            },
        )
    return True


def _envelope_in(body: bytes) -> dict | None:
    try:
        value = jsonlimits.loads(body, max_bytes=settings.WAYBILL_MESSAGE_MAX_BYTES,
                                 max_depth=settings.WAYBILL_MESSAGE_MAX_DEPTH)
    except jsonlimits.JSONRefused:
        return None
    return value if isinstance(value, dict) else None
