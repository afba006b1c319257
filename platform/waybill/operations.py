"""What an operator may do to the messaging tables; the admin and the operations console
call only these. Each act is recorded in the admin's history by its caller's user
(``waybill.rights.audit_record``): the functions that take ``by`` record it themselves."""

from __future__ import annotations

import enum

from django.conf import settings
from django.db import IntegrityError, transaction
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
    """Give up a parked row for good, so that its aggregate's other rows may go: it is
    marked sent and skipped, never published (and in no event history). Only a row still
    parked: one the relay may be publishing is not the operator's to skip. (A row parked
    after lost confirms may have reached the broker after all; republish such a row, since
    consumers drop duplicates.) ``reason`` is required and recorded with ``by``."""
    if not reason.strip():
        raise ValueError("a skip needs a reason")
    ctx = contexts.get(context_name)
    with transaction.atomic(using=ctx.database):
        rows = ctx.outbox.objects.using(ctx.database)
        row = rows.select_for_update().filter(
            id=row_id, sent_at__isnull=True, publish_attempts__gte=settings.WAYBILL_RELAY_MAX_ATTEMPTS).first()
        if row is None:
            return False
        rows.filter(id=row_id).update(sent_at=Now(), skipped_at=Now(), skip_reason=f"{by}: {reason}"[:4000])
        transaction.on_commit(wakeup_event(context_name).set, using=ctx.database)
    rights.audit_record(by, [row], action="skip (never published)", reason=reason,
                  detail=f"{row.message_type} {row.message_id} of {row.aggregate_id}")
    return True


def dead_letters_redrive(*, letters: list[DeadLetterBase], by, reason: str = "") -> dict[Redrive, int]:
    """``dead_letter_replay`` for each of ``letters`` in the order given, each recorded with
    ``by`` and what came of it; returns how many came to each outcome."""
    outcomes: dict[Redrive, list[DeadLetterBase]] = {outcome: [] for outcome in Redrive}
    for letter in letters:
        outcomes[dead_letter_replay(dead_letter=letter)].append(letter)
    rights.audit_record(by, outcomes[Redrive.REDRIVEN], action="redrive", reason=reason)
    rights.audit_record(by, outcomes[Redrive.ALREADY_HANDLED], action="redrive: closed, already handled",
                        reason=reason)
    return {outcome: len(done) for outcome, done in outcomes.items()}


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
    rights.audit_record(by, discarded, action="discard", reason=reason)
    return len(discarded)


def inbox_retry_now(*, context_name: str, row_ids: list[int]) -> int:
    """Bring scheduled retries forward to now."""
    ctx = contexts.get(context_name)
    return (
        ctx.inbox.objects.using(ctx.database)
        .filter(id__in=row_ids, status=InboxMessageBase.Status.RETRYING)
        .update(next_attempt_at=Now())
    )


class Redrive(enum.StrEnum):
    REDRIVEN = "redriven"  # fresh tries through the inbox
    ALREADY_HANDLED = "already handled"  # its consumer applied it (or is retrying it): closed
    NOT_REDRIVABLE = "not redrivable"  # no envelope to redrive, or redriven or discarded before


def dead_letter_replay(*, dead_letter: DeadLetterBase) -> Redrive:
    """Give a dead letter a fresh set of tries through the inbox's retry path, which reads
    it as any delivery is read (upcasters included).

    The envelope is the one read when it died or, if none was (refused unread, e.g. for its
    content type, or stored bare), its bytes when they are an envelope. A message too
    broken to have an envelope, or a dead letter redriven or discarded before, is not
    redrivable. One its consumer has applied meanwhile (a redelivery, a republish) is
    closed as already handled and never applied twice. A message that is still invalid
    simply dead-letters again, with the current reason."""
    envelope = dead_letter.envelope or _envelope_in(bytes(dead_letter.body))
    message_id = uuid_or_none((envelope or {}).get("id"))
    if not envelope or message_id is None or dead_letter.replayed_at or dead_letter.discarded_at:
        return Redrive.NOT_REDRIVABLE
    ctx = contexts.for_model(type(dead_letter))
    Status = InboxMessageBase.Status
    db = ctx.database
    with transaction.atomic(using=db):
        # Claimed first, conditionally: two operators redriving one group at once redrive
        # each dead letter once.
        claimed = type(dead_letter).objects.using(db).filter(
            pk=dead_letter.pk, replayed_at__isnull=True, discarded_at__isnull=True).update(replayed_at=Now())
        if not claimed:
            return Redrive.NOT_REDRIVABLE
        inbox = ctx.inbox.objects.using(db)
        fresh = {"message_type": str(envelope.get("type", ""))[:120], "status": Status.RETRYING, "attempts": 0,
                 "envelope": envelope, "next_attempt_at": Now(),
                 "last_error": f"redriven from dead letter {dead_letter.pk}"}
        # Locked: a delivery of the same message being applied now commits its row first.
        row = inbox.select_for_update().filter(message_id=message_id).first()
        if row is not None:
            if row.status != Status.DEAD:
                return Redrive.ALREADY_HANDLED  # applied, or retrying: a redrive would apply it twice
            inbox.filter(pk=row.pk, status=Status.DEAD).update(**fresh)
            return Redrive.REDRIVEN
        try:
            with transaction.atomic(using=db):  # a savepoint: the claim stays if this loses
                inbox.create(message_id=message_id, **fresh)
        except IntegrityError:
            return Redrive.ALREADY_HANDLED  # a delivery of it was applied meanwhile, and won
    return Redrive.REDRIVEN


def _envelope_in(body: bytes) -> dict | None:
    try:
        value = jsonlimits.loads(body, max_bytes=settings.WAYBILL_MESSAGE_MAX_BYTES,
                                 max_depth=settings.WAYBILL_MESSAGE_MAX_DEPTH)
    except jsonlimits.JSONRefused:
        return None
    return value if isinstance(value, dict) else None
