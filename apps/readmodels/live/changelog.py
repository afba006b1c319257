"""The change log: every read-model change, numbered per stream, so that a client which
lost its connection (or a push: Channels delivers at most once) can say the last position
it saw and be sent exactly what it missed.

A *stream* is what one client may follow: ``catalog``, ``stock`` and ``dashboard`` are
shared, ``orders.customer.<id>`` holds one customer's orders. ``change_record`` is the one
call a projection makes for a row it changed: inside the projection's transaction it
numbers and records the change, and once that transaction commits it pushes it to the
stream's channel group (``change_push``), where the sockets (``sockets.py``, ``sse.py``)
that follow the stream receive it. Readers use ``changes_since``: it answers a ``Gap``
when the log cannot fill the gap, and the client then takes a fresh snapshot instead.

This module knows nothing of the sockets: they import it, never the other way round.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, models, transaction
from django.utils import timezone

from waybill.api import gathered_at_batch_end, group_send, replaying

from ..models import Change, Stream

DB = "readmodels"
log = logging.getLogger(__name__)

CATALOG = "catalog"
STOCK = "stock"
DASHBOARD = "dashboard"


def customer_stream(customer_id: int) -> str:
    return f"orders.customer.{customer_id}"


@dataclass(frozen=True)
class Gap:
    """``changes_since`` cannot fill the gap from the log: send a snapshot at ``position``."""

    position: int


def stream_group(stream: str) -> str:
    """The channel group of a change-log stream (stream names are valid group names)."""
    return f"stream.{stream}"


def change_record(*, stream: str, kind: str, key: str, version: int, document: dict) -> Change | None:
    """Number and record one change on ``stream`` and push it to the stream's followers
    once the transaction commits: the one call for a changed read row. Must run inside the
    projection's transaction on the read-model database (a change rolled back is never
    pushed; a channel-layer failure is logged, never undoes the commit).

    Within a consumer's batch, a stream's changes are recorded together at the batch's end
    (``gathered_at_batch_end``): one position bump and one insert for them all, and a row
    changed by several of the batch's messages once, with its last version and document (a
    client applies documents by version, so the versions in between are nothing it needs).
    Returns the change when it is recorded at once (outside a batch), None when it waits."""
    connection = transaction.get_connection(DB)
    if not connection.in_atomic_block:
        raise RuntimeError("change_record must run inside the projection's transaction")
    if replaying():
        # A rebuild's rows are nobody's live view yet: the change log is what clients are
        # pushed and resume from, so nothing is recorded (and nothing pushed) from a replay.
        return None
    recorded = gathered_at_batch_end(_changes_write, stream, (kind, key, version, document))
    return recorded[0] if recorded else None


def _changes_write(stream: str, changes: list[tuple[str, str, int, dict]]) -> list[Change]:
    latest = {(kind, key): (version, document) for kind, key, version, document in changes}  # first place, last value
    last = _advance(stream, by=len(latest))
    now = timezone.now()
    rows = Change.objects.using(DB).bulk_create(
        Change(stream=stream, position=position, kind=kind, key=key, version=version, document=document,
               recorded_at=now)
        for position, ((kind, key), (version, document)) in enumerate(latest.items(), last - len(latest) + 1)
    )
    pushed = [change_as_message(row) for row in rows]

    def push() -> None:
        # committed_at: wall-clock time right after the commit, so a client can measure
        # commit-to-receipt latency (the benchmarks do).
        committed_at = time.time()
        for change in pushed:
            try:
                change_push(stream=stream, change={**change, "committed_at": committed_at})
            except Exception:  # noqa: BLE001 - one push lost (clients resume from the log), not the rest
                log.exception("could not push change %s#%s", stream, change["position"])

    transaction.on_commit(push, using=DB)
    return rows


def change_push(*, stream: str, change: dict) -> None:
    """Push one recorded change (``change_as_message``) to the stream's channel group."""
    group_send(stream_group(stream), {"type": "change.pushed", "change": change})


def _advance(stream: str, *, by: int = 1) -> int:
    """Move the stream's position on by ``by`` and return the new one; the UPDATE's row
    lock orders concurrent projections."""
    streams = Stream.objects.using(DB)
    connection = transaction.get_connection(DB)
    table, position, name = (connection.ops.quote_name(n) for n in (
        Stream._meta.db_table, Stream._meta.get_field("position").column, Stream._meta.get_field("name").column))
    for _ in range(2):
        # One statement, not an UPDATE and a SELECT (QuerySet.update cannot return the
        # new value): PostgreSQL and SQLite (3.35+) both know RETURNING.
        with connection.cursor() as cursor:
            cursor.execute(f"UPDATE {table} SET {position} = {position} + %s WHERE {name} = %s RETURNING {position}",
                           [by, stream])
            if (advanced := cursor.fetchone()) is not None:
                return advanced[0]
        try:
            with transaction.atomic(using=DB):
                streams.create(name=stream, position=by)
            return by
        except IntegrityError:
            continue  # another projection created the stream meanwhile: bump it
    raise RuntimeError(f"could not advance stream {stream}")


def stream_position(stream: str) -> int:
    """The last position recorded on ``stream`` (0 when nothing has been)."""
    return Stream.objects.using(DB).filter(name=stream).values_list("position", flat=True).first() or 0


def changes_since(*, stream: str, position: int, key: str | None = None,
                  limit: int | None = None) -> list[dict] | Gap:
    """The changes after ``position`` on ``stream`` (only ``key``'s, if given), oldest first.

    A ``Gap`` when they cannot all be sent: the log no longer holds the change right
    after ``position``, there are more than ``limit`` of them, or ``position`` is ahead of
    the stream (the client saw a log since reset, e.g. a rebuilt database)."""
    limit = limit or settings.WAYBILL_CHANGES_RESUME_LIMIT
    current = stream_position(stream)
    if position > current:
        return Gap(current)
    if position == current:
        return []
    rows = list(Change.objects.using(DB).filter(stream=stream, position__gt=position)
                .order_by("position")[: limit + 1])
    # Consecutive or nothing: pruning goes by wall-clock time, which several writers may
    # disagree on, so a hole in the middle is as possible as one at the start.
    if not rows or len(rows) > limit or any(row.position != position + 1 + n for n, row in enumerate(rows)):
        return Gap(current)
    return [change_as_message(row) for row in rows if key is None or row.key == key]


def change_as_message(change: Change) -> dict:
    """The wire form of a change, the same over WebSocket, SSE and in tests."""
    return {
        "stream": change.stream, "position": change.position, "kind": change.kind,
        "key": change.key, "version": change.version, "data": change.document,
    }


def changes_prune(*, older_than: timedelta | None = None) -> int:
    """Forget changes older than the retention (``WAYBILL_CHANGES_RETENTION_SECONDS``);
    clients further behind get a snapshot. Keeps each stream's latest change, so its
    position stays known. Returns how many were deleted."""
    older_than = older_than or timedelta(seconds=settings.WAYBILL_CHANGES_RETENTION_SECONDS)
    cutoff = timezone.now() - older_than
    latest = Stream.objects.using(DB).filter(name=models.OuterRef("stream")).values("position")[:1]
    deleted, _ = (Change.objects.using(DB).filter(recorded_at__lt=cutoff)
                  .exclude(position=models.Subquery(latest)).delete())
    return deleted
