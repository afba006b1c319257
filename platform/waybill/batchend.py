"""Work a handler leaves for the end of its batch: done once per key, just before the
batch's transaction commits.

A consumer applies a batch of messages in one transaction (``consumer``). When several of
them change the same thing (one order's events, one product's documents), a handler can
say what it would write for that thing under a key (``at_batch_end``); the last value
given for a key wins, and its ``write`` runs once, inside the transaction, after the last
message of the batch. The read side uses it for its change log: an order's document is
recorded and pushed once per batch, not once per event of the order in it. Or it gathers
items under a key (``gathered_at_batch_end``), all written at once: the outbox inserts a
batch's messages in one statement and wakes its relay once.

A message whose handler fails takes back what it left here, as its savepoint takes back
its rows (the consumer marks before each message and restores on failure). Outside a
consumer's batch (an API request, a periodic job, a test calling a service) there is no
batch to wait for: ``write`` runs at once.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Hashable, Iterator
from contextvars import ContextVar
from typing import Any

Write = Callable[[Hashable, Any], Any]


class BatchEnd:
    """What the current batch's handlers left, in the order they last touched each key."""

    def __init__(self) -> None:
        self._pending: dict[tuple[Write, Hashable], Any] = {}

    def leave(self, write: Write, key: Hashable, value: Any) -> None:
        self._pending.pop((write, key), None)  # moved to the end: the latest order of writes
        self._pending[(write, key)] = value

    def gather(self, write: Write, key: Hashable, item: Any) -> None:
        gathered = self._pending.pop((write, key), None) or _Gathered()
        self._pending[(write, key)] = _Gathered([*gathered, item])  # a new list: marks keep theirs

    def mark(self) -> dict:
        return dict(self._pending)

    def restore(self, mark: dict) -> None:
        self._pending = dict(mark)

    def run(self) -> None:
        """Do the pending writes (inside the batch's transaction, before it commits)."""
        pending, self._pending = self._pending, {}
        for (write, key), value in pending.items():
            write(key, value)


class _Gathered(list):
    """The items ``gathered_at_batch_end`` collected for one key, in order."""


_current: ContextVar[BatchEnd | None] = ContextVar("waybill_batch_end", default=None)


@contextlib.contextmanager
def batch_end() -> Iterator[BatchEnd]:
    """Open a batch for the handlers run inside; the caller runs ``.run()`` before its commit."""
    end = BatchEnd()
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
    end.leave(write, key, value)
    return None


def gathered_at_batch_end(write: Write, key: Hashable, item: Any) -> Any:
    """``write(key, items)`` once, at the end of the current batch, with every item given
    for ``key`` in order (e.g. rows inserted in one statement); at once, with ``[item]``,
    when no batch is being applied, returning what it returns."""
    end = _current.get()
    if end is None:
        return write(key, [item])
    end.gather(write, key, item)
    return None
