"""The published language's grammar: message schemas, the registry and the envelope.

Every message on the bus is a JSON envelope (never pickle) whose ``payload`` validates
against the schema registered for its ``type`` and ``schema_version``. Anything else is
refused with a reason (``MessageRefused``) so the consumer can dead-letter it and move on.
"""

from __future__ import annotations

import copy
import enum
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError

from . import jsonlimits


class Kind(enum.StrEnum):
    EVENT = "event"  # something that happened, with the values that changed
    COMMAND = "command"  # a request to one owner, which may refuse it
    DOCUMENT = "document"  # the whole current state of an entity


class Message(BaseModel):
    """Base of every payload schema. Register subclasses with ``@message(...)``.

    A reader ignores fields it does not know: a producer may add an optional field to a
    version (``contractlock``) while consumers on older code still read that version."""

    model_config = ConfigDict(extra="ignore", frozen=True)

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
        known = versions_of(type)
        if not known:
            raise MessageRefused(f"unknown message type {type!r}") from None
        raise MessageRefused(
            f"unsupported schema version {version} of {type!r} (known: {known})"
        ) from None


def versions_of(type: str) -> list[int]:
    """The versions of ``type`` registered here, oldest first."""
    return sorted(v for (t, v) in _registry if t == type)


def registered_specs() -> list[MessageSpec]:
    """Every registered message, by type and version."""
    return [_registry[key] for key in sorted(_registry)]


# --- evolution: one step between adjacent versions of a type ------------------------------

# A step takes a payload, as JSON, of one version to the next one up (an upcaster) or
# down (a downcaster, for a consumer still on the older version). Pure functions: no
# clock, no database, no settings, so a message of the history reads the same forever.
Step = Callable[[dict[str, Any]], dict[str, Any]]
_steps: dict[tuple[str, int, int], Step] = {}  # (type, from version, to version) -> step


def upcaster(type: str, *, from_version: int) -> Callable[[Step], Step]:
    """Register ``step`` taking ``type``'s payload from ``from_version`` to the next."""
    return _step(type, from_version, from_version + 1)


def downcaster(type: str, *, from_version: int) -> Callable[[Step], Step]:
    """Register ``step`` taking ``type``'s payload from ``from_version`` to the one before
    (what a consumer that still reads only the older version is given)."""
    if from_version < 2:
        raise ValueError("There is no version before 1 to downcast to.")
    return _step(type, from_version, from_version - 1)


def _step(type: str, source: int, target: int) -> Callable[[Step], Step]:
    def register(step: Step) -> Step:
        existing = _steps.get((type, source, target))
        if existing is not None and existing is not step:
            raise ValueError(f"{type} v{source} -> v{target} already has a step: {existing!r}.")
        _steps[(type, source, target)] = step
        return step

    return register


def missing_steps(type: str, version: int) -> list[str]:
    """What a reader of ``version`` of ``type`` lacks to read every registered version of
    it: one line per missing step (empty when each has its way)."""
    known = versions_of(type)
    if version not in known:
        return [f"{type} v{version} is not registered (known: {known})"]
    return [f"{type} v{source} -> v{target}: no {'upcaster' if target > source else 'downcaster'}"
            for other in known if other != version
            for source, target in _path(other, version) if (type, source, target) not in _steps]


def _path(source: int, target: int) -> list[tuple[int, int]]:
    direction = 1 if target > source else -1
    return [(v, v + direction) for v in range(source, target, direction)]


def read_as(envelope: Envelope, version: int) -> tuple[Envelope, Message]:
    """``envelope``'s message as ``version`` of its type, step by step through the
    registered upcasters or downcasters; the envelope says ``version`` and carries the
    converted payload (its id and everything else unchanged). Refused when a step is
    missing, or when what the steps made is not a valid ``version``."""
    # A copy: a step that changed what it was given would change the message as published.
    payload = copy.deepcopy(envelope.payload)
    for source, target in _path(envelope.schema_version, version):
        step = _steps.get((envelope.type, source, target))
        if step is None:
            raise MessageRefused(f"{envelope.type} v{envelope.schema_version} cannot be read as v{version}: "
                                 f"no step from v{source} to v{target}")
        try:
            payload = step(payload)
        except Exception as error:  # noqa: BLE001 - a step that cannot convert this message refuses it
            raise MessageRefused(f"{envelope.type} v{source} -> v{target} failed: {type(error).__name__}: {error}") \
                from None
    spec = spec_for(envelope.type, version)
    try:
        message = spec.schema.model_validate(payload)
    except ValidationError as exc:
        raise MessageRefused(f"{envelope.type} v{envelope.schema_version} read as v{version} is invalid: "
                             f"{_first_errors(exc)}") from None
    converted = envelope.model_copy(update={"schema_version": version, "payload": message.model_dump(mode="json")})
    converted._published = envelope.as_published
    return converted, message


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
    # Set when this envelope is another one read as another version (``read_as``).
    _published: Envelope | None = PrivateAttr(default=None)

    def to_json(self) -> str:
        return self.model_dump_json()

    @property
    def as_published(self) -> Envelope:
        """The envelope as its producer published it: what inboxes and dead letters keep,
        so that nothing a conversion step dropped is lost to a later reader."""
        return self._published or self


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
