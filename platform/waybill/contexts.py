"""The kernel's registry of consumers, so it can move a context's messages without
importing the context: each registration names its database alias, its outbox, inbox and
dead-letter tables, the message types it handles and its periodic jobs.

Registrations are made from the contexts' manifests (``waybill.manifest``) once Django is
set up: one per consumer that a manifest declares. A context's second consumer (a
bulkhead: its own queue, inbox and workers, e.g. orders' ``payments``, whose slow calls to
a payment provider must not hold up the rest of orders) shares the context's database and
outbox; it has ``relay=False``: the first registration publishes the shared outbox."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from . import manifest as manifests
from .messages import Envelope, Kind, Message, missing_steps

if TYPE_CHECKING:
    from django.db.models import Model

    from .models import DeadLetterBase, InboxMessageBase, OutboxMessageBase, RebuildBase, ReplayPositionBase


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


@dataclass(frozen=True)
class BatchItem:
    """One message of a run given to ``Batched.many``. What a service records on its
    behalf (outbox messages, so that they carry its correlation and trace) is recorded
    inside ``with item.handling():``."""

    envelope: Envelope
    message: Message
    handling: Callable[[], AbstractContextManager[None]]


@dataclass(frozen=True)
class Batched:
    """A plain handler that can also apply a run of its messages at once, in a few
    statements for all of them instead of a few for each (the statements, not the Python
    around them, were most of what a message cost the consumer).

    - ``one(envelope, message)`` is the handler as usual. It applies a lone message, a
      retry, a redrive, and every message of a run that ``many`` failed on.
    - ``many(items)`` applies ``items`` (``BatchItem``, in the order they came, two or
      more in a row in one batch) with the same effects as calling ``one`` for each in
      turn. It runs in a savepoint of its own; if it raises, the kernel rolls that back
      and applies the run's messages with ``one``, each in its own savepoint, so that
      only the failing one takes the retry path.
    """

    one: Callable[[Envelope, Message], None]
    many: Callable[[list[BatchItem]], None]
    # Whether it may run on replay (see ``replay_safe``).
    replay_safe: bool = False

    def __call__(self, envelope: Envelope, message: Message) -> None:
        self.one(envelope, message)


@dataclass(frozen=True)
class Projection:
    """Read rows a consumer builds from messages, which a rebuild can build again from the
    event history into fresh tables and switch to (``waybill.rebuild``): the message types
    it projects (their handlers must be replay-safe) and every model it writes. The models
    are switched whole, so they are its own: no other projection writes them."""

    name: str
    types: tuple[type[Message], ...]
    models: tuple[type[Model], ...]


# A plain handler (or a Batched one) runs inside the inbox transaction; an ExternalCall
# runs in two parts.
Handler = Callable[[Envelope, Message], None] | Batched | ExternalCall


def replay_safe(handler: Callable[[Envelope, Message], None]) -> Callable[[Envelope, Message], None]:
    """Say that a plain handler may run on replay (``Batched(..., replay_safe=True)`` says it
    of a batched one). It promises two things, which the kernel cannot see for itself:

    - its effects are rows of its own context only, written in the transaction it runs in
      (no HTTP call, no push, no message: the kernel refuses outbox records while replaying,
      see ``waybill.replay``);
    - applying a message it has applied before changes nothing (it keeps the message's id or
      the aggregate's version with what it wrote), since a rebuild and the live consumer may
      both apply one message to the same rows.

    The kernel replays the history only into handlers that said so; an ExternalCall never
    may."""
    handler.replay_safe = True  # type: ignore[attr-defined]
    return handler


def may_replay(handler: Handler) -> bool:
    return not isinstance(handler, ExternalCall) and getattr(handler, "replay_safe", False) is True


@dataclass(frozen=True)
class PeriodicJob:
    """Work the scheduler runs about every ``every`` seconds where the consumer runs."""

    run: Callable[[], object]
    every: float

    @property
    def name(self) -> str:
        return f"{self.run.__module__}.{self.run.__qualname__}"


@dataclass(frozen=True)
class BoundedContext:
    name: str
    database: str
    outbox: type[OutboxMessageBase]
    inbox: type[InboxMessageBase]
    dead_letters: type[DeadLetterBase]
    # Payload schema -> handler. The schema's type decides the queue bindings (all of them,
    # or those ``bindings`` chooses among them); a message of any of these types is handled.
    handlers: Mapping[type[Message], Handler] = field(default_factory=dict)
    relay: bool = True
    # Retry policy of this consumer, when not the settings' (WAYBILL_RETRY_*).
    retry_max_attempts: int | None = None
    retry_max_seconds: float | None = None
    # Work run where this consumer runs, such as expiring overdue saga steps. Each must be
    # safe to run in several processes at once.
    periodic: tuple[PeriodicJob, ...] = ()
    # Message types this consumer once handled and no longer does. A broker keeps a
    # durable queue's bindings across deployments, so the topology step unbinds these
    # (a message nobody handles would otherwise be dead-lettered on every arrival).
    retired_types: tuple[str, ...] = ()
    # When set, the queue's event bindings are chosen at run time by this function (see
    # ``manifest.Consumer.bindings``), not bound for every consumed type.
    bindings: Callable[..., bool] | None = None
    # What a rebuild may replay into (with ``manifest.Consumer.projections``), by name, and
    # where a replay keeps its position and a rebuild its progress; None without projections.
    projections: Mapping[str, Projection] = field(default_factory=dict)
    replay_positions: type[ReplayPositionBase] | None = None
    rebuilds: type[RebuildBase] | None = None

    def handler_for(self, message_type: str) -> tuple[Handler, int] | None:
        """The handler of ``message_type`` and the version of it that the handler reads
        (its schema's): a message of another version is converted to that one first."""
        for schema, handler in self.handlers.items():
            if schema.message_type == message_type:
                return handler, schema.schema_version
        return None

    @property
    def consumed_types(self) -> set[str]:
        return {schema.message_type for schema in self.handlers}

    @property
    def consumed_events(self) -> set[str]:
        """The events and documents among ``consumed_types``: what the queue binds on the
        events exchange (commands come on the commands exchange, under its own name)."""
        return {schema.message_type for schema in self.handlers if schema.kind is not Kind.COMMAND}


_contexts: dict[str, BoundedContext] = {}


def register(context: BoundedContext) -> None:
    _contexts[context.name] = context


def register_manifest(declared: manifests.Context) -> list[BoundedContext]:
    """One registration per consumer the manifest declares (a context with no consumer
    still gets one, for its relay): models looked up in the context's app, handlers and
    jobs resolved from their references."""
    from django.apps import apps  # only once Django is set up; the manifest needs none

    def model(name: str):
        return apps.get_model(declared.name, name)

    outbox = model(declared.outbox)
    registrations = []
    for index, consumer in enumerate(declared.consumers or (None,)):
        registration = BoundedContext(
            name=consumer.name if consumer else declared.name,
            database=declared.database,
            outbox=outbox,
            inbox=model(consumer.inbox if consumer else manifests.Consumer.inbox),
            dead_letters=model(consumer.dead_letters if consumer else manifests.Consumer.dead_letters),
            handlers=manifests.resolve(consumer.handlers) if consumer else {},
            relay=index == 0,
            retry_max_attempts=consumer.retry_max_attempts if consumer else None,
            retry_max_seconds=consumer.retry_max_seconds if consumer else None,
            periodic=tuple(PeriodicJob(manifests.resolve(job.run), job.every)
                           for job in (declared.jobs_of(consumer) if consumer else ())),
            retired_types=consumer.retired_types if consumer else (),
            bindings=manifests.resolve(consumer.bindings) if consumer and consumer.bindings else None,
            **(_replaying_parts(consumer, model) if consumer and consumer.projections else {}),
        )
        _check_versions(registration)
        register(registration)
        registrations.append(registration)
    return registrations


def _replaying_parts(consumer: manifests.Consumer, model: Callable[[str], Any]) -> dict:
    projections = manifests.resolve(consumer.projections)
    return {"projections": {projection.name: projection for projection in projections},
            "replay_positions": model(consumer.replay_positions), "rebuilds": model(consumer.rebuilds)}


def _check_versions(context: BoundedContext) -> None:
    """At start-up, not at the first message: each handler reads one version of its type,
    and every other registered version of that type has its steps to it."""
    from django.core.exceptions import ImproperlyConfigured

    by_type: dict[str, list[int]] = {}
    for schema in context.handlers:
        by_type.setdefault(schema.message_type, []).append(schema.schema_version)
    problems = [f"{message_type} is handled at versions {versions}: a handler reads one"
                for message_type, versions in by_type.items() if len(versions) > 1]
    problems += [problem for schema in context.handlers
                 for problem in missing_steps(schema.message_type, schema.schema_version)]
    if problems:
        raise ImproperlyConfigured(f"{context.name} cannot read every version of what it handles: "
                                   + "; ".join(problems))


def get(name: str) -> BoundedContext:
    return _contexts[name]


def all_contexts() -> list[BoundedContext]:
    return list(_contexts.values())


def for_model(model: type) -> BoundedContext:
    """The registration whose inbox, dead-letter, replay-position or rebuild table ``model``
    is, or else the one that publishes the outbox ``model``."""
    for context in _contexts.values():
        if model in (context.inbox, context.dead_letters, context.replay_positions, context.rebuilds):
            return context
    for context in _contexts.values():
        if model is context.outbox and context.relay:
            return context
    raise LookupError(f"{model!r} belongs to no registered context.")

