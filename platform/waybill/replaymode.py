"""Whether this code runs inside a replay of the history (``waybill.replay``), where side
effects are off by construction: the kernel's own (an outbox record, a channel push) call
``refuse_while_replaying``, and a context's live-only work (the read side's change log) asks
``replaying()``. Apart from ``waybill.replay`` so that the outbox and the pushes, which it
builds on, can import it."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar

_replaying: ContextVar[bool] = ContextVar("waybill_replaying", default=False)


class SideEffectWhileReplaying(RuntimeError):
    """A replayed handler tried to do what must never happen twice (record a message, push)."""


def replaying() -> bool:
    """Whether this code runs inside a replay's handlers: a side effect must not happen."""
    return _replaying.get()


def refuse_while_replaying(what: str) -> None:
    """For the kernel's side effects: raise if a replayed handler asks for ``what``."""
    if _replaying.get():
        raise SideEffectWhileReplaying(f"{what} while replaying the history: a replay-safe handler does not do that")


@contextlib.contextmanager
def side_effects_off() -> Iterator[None]:
    token = _replaying.set(True)
    try:
        yield
    finally:
        _replaying.reset(token)
