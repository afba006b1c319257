"""Work a handler leaves for the end of its batch: done once per key, just before the
batch's transaction commits.

A consumer applies a batch of messages in one transaction (``consumer``). When several of
them change the same thing (one order's events, one product's documents), a handler can
say what it would write for that thing under a key (``at_batch_end``); the last value
given for a key wins, and its ``write`` runs once, inside the transaction, after the last
message of the batch (say, an order's document recorded once per batch, not once per
event of the order in it). Or it gathers items under a key (``gathered_at_batch_end``),
all written at once: the outbox inserts a batch's messages in one statement and wakes its
relay once; the read side's change log records a stream's changes in one insert, each
changed row once.

What is left here follows the savepoints it was left in, as rows written there would: a
value left inside a savepoint that rolls back (a failed message's, or a handler's own
inner ``atomic`` that failed) is not written, and for a key the last value still standing
wins. Outside a consumer's batch (an API request, a periodic job, a test calling a
service) there is no batch to wait for: ``write`` runs at once.

Writes run grouped by ``write`` (in the order each was first used) and, within one, in the
order of their keys, so two batches that touch the same rows lock them in the same order.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Hashable, Iterator
from contextvars import ContextVar
from typing import Any

from django.db import transaction

Write = Callable[[Hashable, Any], Any]


class BatchEnd:
    """What the current batch's handlers left, by write and key."""

    def __init__(self, using: str) -> None:
        self.using = using
        # write -> key -> [(marker, value)], and whether the write takes every value.
        self._pending: dict[Write, dict[Hashable, list[tuple[Callable[[], None], Any]]]] = {}
        self._gathers: dict[Write, bool] = {}

    def leave(self, write: Write, key: Hashable, value: Any, *, gather: bool) -> None:
        if self._gathers.setdefault(write, gather) is not gather:
            raise ValueError(f"{write!r} is used both to gather and to keep the last value")

        def marker() -> None:
            """Does nothing at the commit: it is there to be dropped with its savepoint."""

        # Django drops the commit hooks registered inside a savepoint that rolls back, and
        # only those: the marker's presence says whether the value's savepoint survived.
        transaction.on_commit(marker, using=self.using)
        self._pending.setdefault(write, {}).setdefault(key, []).append((marker, value))

    def run(self) -> None:
        """Do the pending writes (inside the batch's transaction, before it commits)."""
        pending, self._pending = self._pending, {}
        # run_on_commit holds (savepoint ids, hook, robust) for every hook still standing.
        standing = {hook for _, hook, _ in transaction.get_connection(self.using).run_on_commit}
        for write, by_key in pending.items():
            for key in sorted(by_key, key=repr):
                values = [value for marker, value in by_key[key] if marker in standing]
                if values:
                    write(key, values if self._gathers[write] else values[-1])


_current: ContextVar[BatchEnd | None] = ContextVar("waybill_batch_end", default=None)


@contextlib.contextmanager
def batch_end(*, using: str) -> Iterator[BatchEnd]:
    """Open a batch on database ``using`` for the handlers run inside (within a transaction
    on it); the caller runs ``.run()`` before its commit."""
    end = BatchEnd(using)
    token = _current.set(end)
    try:
        yield end
    finally:
        _current.reset(token)


def at_batch_end(write: Write, key: Hashable, value: Any) -> Any:
    """``write(key, value)`` once, at the end of the current batch, with the last value
    left for ``key``; at once when no batch is being applied, returning what it returns."""
    end = _current.get()
    if end is None:
        return write(key, value)
    end.leave(write, key, value, gather=False)
    return None


def gathered_at_batch_end(write: Write, key: Hashable, item: Any) -> Any:
    """``write(key, items)`` once, at the end of the current batch, with every item given
    for ``key`` in order (e.g. rows inserted in one statement); at once, with ``[item]``,
    when no batch is being applied, returning what it returns."""
    end = _current.get()
    if end is None:
        return write(key, [item])
    end.leave(write, key, item, gather=True)
    return None
