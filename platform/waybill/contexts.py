"""Bounded contexts register here so the kernel can move their messages without
importing them: each names its database alias, its outbox, inbox and dead-letter
tables, and the message types it handles."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .messages import Envelope, Message

if TYPE_CHECKING:
    from .inbox import DeadLetterBase, InboxMessageBase
    from .outbox import OutboxMessageBase

Handler = Callable[[Envelope, Message], None]


@dataclass(frozen=True)
class BoundedContext:
    name: str
    database: str
    outbox: type[OutboxMessageBase]
    inbox: type[InboxMessageBase]
    dead_letters: type[DeadLetterBase]
    # Payload schema -> handler. The schema's type decides the queue bindings.
    handlers: Mapping[type[Message], Handler] = field(default_factory=dict)

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
    """The context whose outbox, inbox or dead-letter table ``model`` is."""
    for context in _contexts.values():
        if model in (context.outbox, context.inbox, context.dead_letters):
            return context
    raise LookupError(f"{model!r} belongs to no registered context.")
