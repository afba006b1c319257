"""The event history: every event and document the platform published, in the order it
was published, kept for a while to be read again (rebuilding a read model, filling a new
one from the past, rewinding a consumer). Nothing in the platform rewrites it.

- **Services mode: a RabbitMQ stream**, ``waybill.history``, bound to ``waybill.events``
  for every routing key, so the broker appends each event and document as it routes it to
  the consumers' queues (a stream is replicated and on disk, and outlives broker
  restarts). Its retention is a RabbitMQ policy (``waybill.historylimits``). It is read
  over AMQP from an offset (``x-stream-offset``).
- **Embedded: each context's outbox is its archive.** Kombu's in-memory transport has no
  streams, so sent events and documents stay in the outbox for as long as the history
  keeps them (``waybill.retention``), and are read in the order they were sent.

Both are read the same way (``history().read(start)``): batches of ``Recorded`` (the
message as published and the position after it) until the reader has caught up; a later
``read`` from the last position goes on from there. A start is ``FIRST``, a position, or a
time. One before what the history still keeps is refused (``HistoryGone``), never served
from a later point as if it were complete.

The history is at least once, as the bus is: a message the relay published twice (it
crashed before it saw the broker's confirm) is in it twice, with one id, and whoever reads
it drops the second, as a consumer's inbox does.
"""

from __future__ import annotations

import contextlib
import heapq
import json
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import connections
from django.utils import timezone
from kombu import Queue

from . import bus, contexts
from .historylimits import STREAM
from .messages import Kind
from .wire import Received

FIRST = "first"
Start = str | dict | datetime  # FIRST, a position from a Recorded, or a time
# The kinds the history keeps: commands go to one owner and are not part of it.
KINDS = (Kind.EVENT.value, Kind.DOCUMENT.value)


class HistoryGone(Exception):
    """A start the history cannot serve any more: what came after it is past retention."""


@dataclass(frozen=True)
class Recorded:
    """One message of the history, as it was published, and the position after it (what
    a reader stores to go on from there)."""

    received: Received
    position: dict[str, Any]


def history():
    """The history of this deployment: the stream, or (embedded) the outboxes' archive."""
    return StreamHistory() if settings.WAYBILL_HISTORY == "stream" else OutboxArchive()


def horizon() -> datetime:
    """The oldest time the history is sure to keep everything from."""
    return timezone.now() - timedelta(seconds=settings.WAYBILL_HISTORY_MAX_AGE_SECONDS)


def _refuse_before_horizon(when: datetime) -> None:
    if when < horizon():
        raise HistoryGone(
            f"cannot rewind to {when.isoformat()}: the history keeps {settings.WAYBILL_HISTORY_MAX_AGE_SECONDS} s "
            f"(WAYBILL_HISTORY_MAX_AGE_SECONDS), so it holds everything only from {horizon().isoformat()}")


class StreamHistory:
    """The history as a RabbitMQ stream. A position is ``{"offset": n}``: the stream's
    offset of the last message read."""

    # A batch is what has arrived when the stream pauses this long (caught up), or
    # WAYBILL_HISTORY_BATCH.
    idle_seconds = 1.0

    def __init__(self, name: str = STREAM):
        self.name = name
        self.batch = settings.WAYBILL_HISTORY_BATCH

    def first_offset(self) -> int | None:
        """The offset of the oldest message the stream still holds (None: it is empty)."""
        for batch in self._consume({"x-stream-offset": FIRST}, batch=1):
            return _offset(batch[0])
        return None

    def size(self) -> int:
        """About how many messages the stream holds (offsets from its first to its last)."""
        first = self.first_offset()
        if first is None:
            return 0
        last = first
        for batch in self._consume({"x-stream-offset": "last"}, batch=self.batch):  # the last chunk
            last = _offset(batch[-1])
        return last - first + 1

    def trimmed(self) -> bool:
        """Whether retention has deleted the stream's first messages (its offsets start at 0)."""
        return bool(self.first_offset())

    def read(self, start: Start = FIRST) -> Iterator[list[Recorded]]:
        trimmed_from = None
        if isinstance(start, datetime):
            _refuse_before_horizon(start)
            offset: Any = start  # an AMQP timestamp: the first chunk published at or after it
            # The size limit may have trimmed the stream after that time, not only the age
            # limit: then the time lands on the stream's first message, and what was
            # published between the two is gone (or there was none: it cannot tell).
            first = self.first_offset()
            trimmed_from = first if first else None
        elif isinstance(start, dict):
            offset = start["offset"] + 1
            first = self.first_offset()
            if first is not None and offset < first:
                raise HistoryGone(f"cannot go on from offset {offset - 1}: the history now starts at offset {first} "
                                  f"(what came before is past its retention)")
        elif start == FIRST:
            offset = FIRST
        else:
            raise ValueError(f"a start is FIRST, a position or a time, not {start!r}")
        for batch in self._consume({"x-stream-offset": offset}, batch=self.batch):
            if trimmed_from is not None and _offset(batch[0]) == trimmed_from:
                raise HistoryGone(f"cannot rewind to {start.isoformat()}: the history was trimmed to its size limit "
                                  f"(WAYBILL_HISTORY_MAX_BYTES) and now starts at offset {trimmed_from}, which may be "
                                  f"after that time")
            trimmed_from = None
            yield [Recorded(Received.from_kombu(message), {"offset": _offset(message)}) for message in batch]

    def _consume(self, arguments: dict, *, batch: int) -> Iterator[list]:
        queue = Queue(self.name, no_declare=True, consumer_arguments=arguments)
        with bus.connect() as connection:
            arrived: list = []
            # A stream takes a prefetch (required) and acks (its credit): neither removes
            # anything from it.
            with connection.Consumer([queue], on_message=arrived.append, prefetch_count=batch):
                while True:
                    with contextlib.suppress(socket.timeout):
                        connection.drain_events(timeout=self.idle_seconds)
                    if not arrived:
                        return  # caught up
                    while len(arrived) < batch:
                        try:
                            connection.drain_events(timeout=0)
                        except socket.timeout:
                            break
                    taken, arrived[:] = arrived[:batch], arrived[batch:]
                    taken[-1].ack(multiple=True)
                    yield taken


def _offset(message) -> int:
    return int(message.headers["x-stream-offset"])


class OutboxArchive:
    """The history embedded: the sent events and documents of every context's outbox,
    merged in the order they were first sent (``first_sent_at``, which a message published
    again keeps). A position is ``{"sent": {context: [first_sent_at, ids]}, "until": time}``:
    per context, the send time of the last row read and the ids read at that time (a later
    relay batch may be marked sent within the same millisecond), and up to when it had read.

    Each pass reads only what was sent ``settle_seconds`` before it began: a relay's
    transaction stamps its rows before it commits (on PostgreSQL with the time it began), so
    a row stamped just before a later one may become visible after it; it is read on a
    later pass instead of being passed over."""

    def __init__(self):
        self.batch = settings.WAYBILL_HISTORY_BATCH
        self.settle_seconds = settings.WAYBILL_HISTORY_ARCHIVE_SETTLE_SECONDS

    @staticmethod
    def _archived(context: contexts.BoundedContext):
        return context.outbox.objects.using(context.database).filter(kind__in=KINDS, first_sent_at__isnull=False)

    def trimmed(self) -> bool:
        """Whether retention may have deleted some of it: a context's database is older than
        what the history keeps (retention leaves no mark of what it deleted, so this errs on
        the side of saying so)."""
        from django.db.migrations.recorder import MigrationRecorder

        for context in contexts.all_contexts():
            if context.relay:
                first = MigrationRecorder(connections[context.database]).migration_qs.order_by("applied").first()
                if first is not None and first.applied < horizon():
                    return True
        return False

    def size(self) -> int:
        """How many events and documents the archive holds."""
        return sum(self._archived(context).count() for context in contexts.all_contexts() if context.relay)

    def read(self, start: Start = FIRST) -> Iterator[list[Recorded]]:
        owners = [context for context in contexts.all_contexts() if context.relay]
        # None: from the context's first row; else the send time read up to and the ids read at it.
        cursors: dict[str, tuple[datetime, list[int]] | None] = dict.fromkeys((c.name for c in owners), None)
        if isinstance(start, datetime):
            _refuse_before_horizon(start)
            cursors = dict.fromkeys(cursors, (start, []))
        elif isinstance(start, dict):
            for name, (sent_at, ids) in start["sent"].items():
                cursors[name] = (datetime.fromisoformat(sent_at), list(ids))
            # What it had read up to: a quiet context's last row may be older than that.
            _refuse_before_horizon(datetime.fromisoformat(start["until"]))
        elif start != FIRST:
            raise ValueError(f"a start is FIRST, a position or a time, not {start!r}")
        while True:
            until = timezone.now() - timedelta(seconds=self.settle_seconds)
            rows = heapq.merge(*(self._after(context, cursors[context.name], until) for context in owners),
                               key=lambda pair: (pair[1].first_sent_at, pair[0], pair[1].id))
            batch = []
            for name, row in rows:
                previous = cursors[name]
                ids = previous[1] + [row.id] if previous and previous[0] == row.first_sent_at else [row.id]
                cursors[name] = (row.first_sent_at, ids)
                batch.append(Recorded(_received(row), _archive_position(cursors, until)))
                if len(batch) == self.batch:
                    break
            if not batch:
                return
            yield batch

    def _after(self, context: contexts.BoundedContext, cursor, until: datetime):
        """Up to a batch of ``context``'s archive after ``cursor`` and up to ``until``, in order."""
        rows = self._archived(context).filter(first_sent_at__lte=until)
        since = None
        if cursor is not None:
            since, ids = cursor
            rows = rows.exclude(id__in=ids).filter(first_sent_at__gte=_just_before_its_millisecond(since))
        found = [(context.name, row) for row in rows.order_by("first_sent_at", "id")[:self.batch]]
        # Compared again here, exactly: see _just_before_its_millisecond.
        return [(name, row) for name, row in found if since is None or row.first_sent_at >= since]


def _just_before_its_millisecond(when: datetime) -> datetime:
    """A bound that the database compares right with a send time. SQLite keeps datetimes as
    text, and the relay's ``Now()`` there as milliseconds ("...:05.123"), while a bound is
    written with microseconds ("...:05.123000"), which is greater: a row sent in the same
    millisecond as the bound would not be found. Just before the millisecond compares
    right either way; what it lets through too is sifted exactly in Python."""
    return when.replace(microsecond=when.microsecond // 1000 * 1000) - timedelta(microseconds=1)


def _received(row) -> Received:
    return Received.of(json.dumps(row.envelope, separators=(",", ":")), content_type=bus.JSON)


def _archive_position(cursors: dict, until: datetime) -> dict:
    return {"sent": {name: [cursor[0].isoformat(), list(cursor[1])] for name, cursor in cursors.items() if cursor},
            "until": until.isoformat()}
