"""The published language's grammar: message schemas, the registry and the envelope.

Every message on the bus is a JSON envelope (never pickle) whose ``payload`` validates
against the schema registered for its ``type`` and ``schema_version``. Anything else is
refused with a reason (``MessageRefused``) so the consumer can dead-letter it and move on.
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from . import jsonlimits


class Kind(enum.StrEnum):
    EVENT = "event"  # something that happened, with the values that changed
    COMMAND = "command"  # a request to one owner, which may refuse it
    DOCUMENT = "document"  # the whole current state of an entity


class Message(BaseModel):
    """Base of every payload schema. Register subclasses with ``@message(...)``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    message_type: ClassVar[str]
    schema_version: ClassVar[int]
    kind: ClassVar[Kind]


@dataclass(frozen=True)
class MessageSpec:
    type: str
    schema_version: int
    kind: Kind
    schema: type[Message]
    # For a command: the consumer that carries it out, when not the owner's main one
    # (e.g. orders' payments consumer, a bulkhead of its own).
    consumer: str | None = None

    @property
    def owner(self) -> str:
        """The context that publishes events and documents of this type, or owns the command."""
        return self.type.split(".", 1)[0]


_registry: dict[tuple[str, int], MessageSpec] = {}


def message(type: str, *, version: int = 1, kind: Kind = Kind.EVENT, consumer: str | None = None) -> Callable:
    """Class decorator registering a payload schema under ``type`` and ``version``."""
    if "." not in type:
        raise ValueError(f"Message type {type!r} must be '<context>.<name>'.")
    if consumer and kind is not Kind.COMMAND:
        raise ValueError("Only a command goes to one consumer; events and documents go to all that bind them.")

    def register(cls: type[Message]) -> type[Message]:
        key = (type, version)
        existing = _registry.get(key)
        if existing is not None and existing.schema is not cls:
            raise ValueError(f"{type} v{version} is already registered to {existing.schema!r}.")
        cls.message_type, cls.schema_version, cls.kind = type, version, kind
        _registry[key] = MessageSpec(type=type, schema_version=version, kind=kind, schema=cls, consumer=consumer)
        return cls

    return register


def spec_for(type: str, version: int) -> MessageSpec:
    try:
        return _registry[(type, version)]
    except KeyError:
        known = sorted(v for (t, v) in _registry if t == type)
        if not known:
            raise MessageRefused(f"unknown message type {type!r}") from None
        raise MessageRefused(
            f"unsupported schema version {version} of {type!r} (known: {known})"
        ) from None


class Envelope(BaseModel):
    """The fields every message carries (see ARCHITECTURE.md)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: uuid.UUID
    type: str = Field(min_length=3)
    schema_version: int = Field(ge=1)
    aggregate_id: str = Field(min_length=1)
    aggregate_version: int = Field(ge=0)
    occurred_at: datetime
    correlation_id: uuid.UUID
    causation_id: uuid.UUID | None = None
    traceparent: str | None = None
    payload: dict[str, Any]

    def to_json(self) -> str:
        return self.model_dump_json()


def uuid_or_none(value: Any) -> uuid.UUID | None:
    """``value`` as a message id, if it is one (from a message that may be anything)."""
    if value is None:
        return None
    try:
        return uuid.UUID(str(value))
    except ValueError:
        return None


class MessageRefused(Exception):
    """A message that can never be processed: malformed, unknown, or invalid.

    ``envelope``: the message as a JSON object when it decoded as one (within the limits,
    so it is safe to store), for the dead letter to show what it could read."""

    def __init__(self, reason: str, *, envelope: dict[str, Any] | None = None):
        super().__init__(reason)
        self.reason = reason
        self.envelope = envelope


def _first_errors(error: ValidationError, limit: int = 3) -> str:
    parts = []
    for item in error.errors()[:limit]:
        where = ".".join(str(p) for p in item["loc"]) or "(root)"
        parts.append(f"{where}: {item['msg']}")
    return "; ".join(parts)


def parse(body: bytes | str, *, max_bytes: int | None = None,
          max_depth: int = jsonlimits.DEFAULT_MAX_DEPTH) -> tuple[Envelope, Message]:
    """Decode and validate a message from the wire, or raise ``MessageRefused``.

    JSON goes through the bounded decoder (``jsonlimits``): a body over ``max_bytes``,
    nested deeper than ``max_depth``, or holding what a database cannot store is refused
    with the reason, like any other malformed message."""
    try:
        raw = jsonlimits.loads(body, max_bytes=max_bytes, max_depth=max_depth)
    except jsonlimits.JSONRefused as exc:
        raise MessageRefused(exc.reason) from None
    if not isinstance(raw, dict):
        raise MessageRefused("malformed envelope: expected a JSON object")
    try:
        envelope = Envelope.model_validate(raw)
    except ValidationError as exc:
        raise MessageRefused(f"invalid envelope: {_first_errors(exc)}", envelope=raw) from None
    try:
        spec = spec_for(envelope.type, envelope.schema_version)
    except MessageRefused as exc:
        raise MessageRefused(exc.reason, envelope=raw) from None
    try:
        payload = spec.schema.model_validate(envelope.payload)
    except ValidationError as exc:
        raise MessageRefused(
            f"invalid payload for {envelope.type} v{envelope.schema_version}: {_first_errors(exc)}", envelope=raw
        ) from None
    return envelope, payload
