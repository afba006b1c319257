"""Bounded contexts register here so the kernel can move their messages without
importing them: each names its database alias, its outbox, inbox and dead-letter
tables, and the message types it handles.

A context may register a second consumer (a bulkhead: its own queue, inbox and workers)
that shares the context's database and outbox, e.g. orders' ``payments`` consumer, whose
slow calls to a payment provider must not hold up the rest of orders. Such a registration
has ``relay=False``: the main registration publishes the shared outbox."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .messages import Envelope, Message

if TYPE_CHECKING:
    from .inbox import DeadLetterBase, InboxMessageBase
    from .outbox import OutboxMessageBase


@dataclass(frozen=True)
class ExternalCall:
    """A handler whose effect lives outside our database, such as an HTTP call to a
    payment provider. It cannot join the inbox transaction, and must not hold one open
    while it waits, so it comes in two parts:

    - ``call(envelope, message)`` runs outside any transaction. It must be idempotent
      (an idempotency key derived from the message), because a crash before ``record``
      commits brings the message back and the call runs again.
    - ``record(envelope, message, result)`` runs in the inbox transaction with the
      call's result, and records what happened (outbox messages, rows).
    """

    call: Callable[[Envelope, Message], Any]
    record: Callable[[Envelope, Message, Any], None]


# A plain handler runs inside the inbox transaction; an ExternalCall runs in two parts.
Handler = Callable[[Envelope, Message], None] | ExternalCall


@dataclass(frozen=True)
class BoundedContext:
    name: str
    database: str
    outbox: type[OutboxMessageBase]
    inbox: type[InboxMessageBase]
    dead_letters: type[DeadLetterBase]
    # Payload schema -> handler. The schema's type decides the queue bindings.
    handlers: Mapping[type[Message], Handler] = field(default_factory=dict)
    relay: bool = True
    # Retry policy of this consumer, when not the settings' (WAYBILL_RETRY_*).
    retry_max_attempts: int | None = None
    retry_max_seconds: float | None = None
    # Work the runtime (embedded) or beat (services) runs about every second, such as
    # expiring overdue saga steps. Each must be safe to run in several processes at once.
    periodic: tuple[Callable[[], object], ...] = ()
    # Message types this consumer once handled and no longer does. A broker keeps a
    # durable queue's bindings across deployments, so the topology step unbinds these
    # (a message nobody handles would otherwise be dead-lettered on every arrival).
    retired_types: tuple[str, ...] = ()

    def handler_for(self, message_type: str) -> Handler | None:
        for schema, handler in self.handlers.items():
            if schema.message_type == message_type:
                return handler
        return None

    @property
    def consumed_types(self) -> set[str]:
        return {schema.message_type for schema in self.handlers}


_contexts: dict[str, BoundedContext] = {}


def register(context: BoundedContext) -> None:
    _contexts[context.name] = context


def get(name: str) -> BoundedContext:
    return _contexts[name]


def all_contexts() -> list[BoundedContext]:
    return list(_contexts.values())


def for_model(model: type) -> BoundedContext:
    """The registration whose inbox or dead-letter table ``model`` is, or else the one
    that publishes the outbox ``model``."""
    for context in _contexts.values():
        if model in (context.inbox, context.dead_letters):
            return context
    for context in _contexts.values():
        if model is context.outbox and context.relay:
            return context
    raise LookupError(f"{model!r} belongs to no registered context.")

