"""What an operator may do to the messaging tables; the admin calls only these."""

from __future__ import annotations

from django.conf import settings
from django.db import transaction
from django.db.models.functions import Now

from . import contexts, jsonlimits
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
    if not envelope or message_id is None or dead_letter.replayed_at:
        return False
    ctx = contexts.for_model(type(dead_letter))
    Status = InboxMessageBase.Status
    with transaction.atomic(using=ctx.database):
        inbox = ctx.inbox.objects.using(ctx.database)
        if inbox.filter(message_id=message_id).exclude(status=Status.DEAD).exists():
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
        type(dead_letter).objects.using(ctx.database).filter(pk=dead_letter.pk).update(replayed_at=Now())
    return True


def _envelope_in(body: bytes) -> dict | None:
    try:
        value = jsonlimits.loads(body, max_bytes=settings.WAYBILL_MESSAGE_MAX_BYTES,
                                 max_depth=settings.WAYBILL_MESSAGE_MAX_DEPTH)
    except jsonlimits.JSONRefused:
        return None
    return value if isinstance(value, dict) else None
