"""A bounded context, declared once: ``apps/<ctx>/manifest.py`` holds one ``Context``.

Everything else that names a context is derived from its manifest: the settings
(``INSTALLED_APPS``, one database alias per context), the database router, the API mounts of
``config/urls.py``, the WebSocket routes of ``config/asgi.py``, the kernel's registrations
(``contexts.register_manifest``: outbox, inbox, dead letters, handlers, periodic jobs), and
the launcher's side: provisioning (databases, roles, broker users and their rights), the
process list, the gateway's routes and the generated ``docker-compose.yml`` and
``nginx.conf``. Adding a context, a bulkhead or a periodic job is an edit of one manifest.

This module imports neither Django nor any context: the launcher reads the manifests
before any settings exist. References to code are ``"module:attribute"`` strings and model
names, resolved only once Django is set up.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

# Where manifests are looked for: every package directly under these has one if it is a
# context. Configuration, so a deployment (or a test) can add contexts from elsewhere.
PACKAGES_VARIABLE = "WAYBILL_CONTEXT_PACKAGES"
DEFAULT_PACKAGES = ("apps",)


@dataclass(frozen=True)
class Consumer:
    """One consumer of the context's messages: a queue (``waybill.<name>``, or N partition
    queues), an inbox and dead-letter table in the context's database, and its handlers."""

    name: str
    # "module:attribute" of the mapping payload schema -> handler.
    handlers: str
    # Models of the context's app.
    inbox: str = "InboxMessage"
    dead_letters: str = "DeadLetter"
    # A bulkhead runs in a worker process of its own (``<context>-<name>-worker``), so its
    # slow handlers (a payment provider's calls) cannot hold up the context's other
    # consumers; the others share the context's worker (``<context>-worker``).
    bulkhead: bool = False
    # Retry policy of this consumer, when not the settings' (WAYBILL_RETRY_*).
    retry_max_attempts: int | None = None
    retry_max_seconds: float | None = None
    # Message types this consumer once handled and no longer does: the topology step
    # unbinds them from its durable queues, which a broker keeps across deployments.
    retired_types: tuple[str, ...] = ()
    # "module:function" for a consumer whose queue binds only some of the types it handles,
    # chosen at run time (webhooks: the types some active endpoint subscribes to), instead
    # of all of them. The kernel calls it as ``function(bind=bind, resync=resync)``; it
    # calls ``bind(types)`` with the types to bind now (the kernel binds every one of them
    # on every partition, then unbinds the consumer's other types) and may record, once
    # ``bind`` returned, that they are bound (what the consumer may then rely on). It calls
    # ``bind`` when what it wants changed, and always when ``resync`` is true. It returns
    # whether it called ``bind``. It runs in the consumer's own process (a kernel job of its
    # scheduler, ``waybill.consumer.ContextConsumer.rebind``), under the consumer's broker
    # user, and in the topology step. Only bindings change: a message of a type no longer
    # bound that was queued already is handled as any other (the handlers decide that).
    bindings: str | None = None
    # With ``bindings``: "module:attribute" of every message type it may ever bind, importable
    # without Django. The launcher lets the consumer's broker user bind its queues to these
    # routing keys alone (RabbitMQ topic permissions), whatever its process asks for.
    bindable: str | None = None
    # "module:attribute" of the consumer's projections (a tuple of ``waybill.api.Projection``):
    # read rows it can rebuild from the event history, blue/green (``manage.py rebuild``).
    # Their handlers must be replay-safe. The models where a replay keeps its position (in
    # the same transaction as its effects) and a rebuild its progress:
    projections: str | None = None
    replay_positions: str = "ReplayPosition"
    rebuilds: str = "Rebuild"

    def __post_init__(self) -> None:
        if self.bindings and not self.bindable:
            raise ValueError(f"consumer {self.name!r} chooses its bindings at run time: name what is bindable")
        if self.bindable and not self.bindings:
            raise ValueError(f"consumer {self.name!r} names what is bindable but no bindings function")


@dataclass(frozen=True)
class Job:
    """Periodic work run by the kernel's scheduler about every ``every`` seconds, in the
    process that runs ``consumer`` (default: the context's first consumer), so a
    bulkhead's work stays in the bulkhead's worker. Each job must be safe to run in
    several processes at once (replicas do)."""

    run: str  # "module:function", called with no arguments
    every: float
    consumer: str | None = None


@dataclass(frozen=True)
class Context:
    name: str
    # The Python package of the context (set by ``discover``).
    package: str = ""
    # Its database alias (``WAYBILL_<ALIAS>_DATABASE_URL``); the context's name by default.
    database: str = ""
    title: str = ""
    # URL prefix under /api/v1/ -> urls module. The gateway sends each prefix here.
    api: Mapping[str, str] = field(default_factory=dict)
    # "module:attribute" of Channels URL patterns served under /ws/.
    websockets: str = ""
    # Its micro-frontend under /static/<name>/, served by its own web process.
    static: bool = True
    consumers: tuple[Consumer, ...] = ()
    jobs: tuple[Job, ...] = ()
    # The outbox model; its relay publishes it. Every context has one (it is how a context
    # speaks), even one that has nothing to say yet.
    outbox: str = "OutboxMessage"
    # Environment variables its processes read besides everyone's (orders: the payment
    # provider's address and key).
    variables: tuple[str, ...] = ()
    # Management commands of the context, run once every database is migrated, in a process
    # that has every database configured (embedded: ``migrateall``; services mode: the
    # setup step): data that moves between contexts' databases, which no migration can do
    # (each context's migrations run with its own database and role alone). Each must be
    # idempotent: they run on every deployment.
    after_migrate: tuple[str, ...] = ()
    # "module:attribute" of its Prometheus collectors (a tuple of prometheus_client custom
    # collectors: ``describe()`` and ``collect()``), measured at scrape time in every
    # process that hosts the context (``waybill.metrics``): orders' sagas by state, say.
    metrics: str = ""
    # How many of each of its processes services mode runs, by the process's name without
    # the context's ("web", "worker", "payments-worker", "relay", "translator"); one of each
    # unless said here or in ``WAYBILL_REPLICAS`` (launcher.deployment). Web replicas share
    # the gateway's traffic; worker replicas compete for their queues (a partition queue
    # has one active consumer, the others stand by); relays share the outbox.
    replicas: Mapping[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "api", MappingProxyType(dict(self.api)))
        object.__setattr__(self, "replicas", MappingProxyType(dict(self.replicas)))
        for role, count in self.replicas.items():
            if not (isinstance(count, int) and count >= 1):
                raise ValueError(f"context {self.name!r}: replicas of {role!r} must be a whole number >= 1, not {count!r}")
        if not self.database:
            object.__setattr__(self, "database", self.name)
        if not self.title:
            object.__setattr__(self, "title", self.name.capitalize())
        names = [consumer.name for consumer in self.consumers]
        if len(set(names)) != len(names):
            raise ValueError(f"context {self.name!r} declares a consumer twice: {names}")
        if names and names[0] != self.name:
            # The first consumer's registration is the context's: its outbox is found by
            # the context's name (outbox_record(context=...)).
            raise ValueError(f"context {self.name!r}: its first consumer must be named {self.name!r}, not {names[0]!r}")
        if self.jobs and not self.consumers:
            raise ValueError(f"context {self.name!r} has jobs but no consumer: jobs run where a consumer runs")
        for job in self.jobs:
            if job.consumer is not None and job.consumer not in names:
                raise ValueError(f"job {job.run} of {self.name!r} names no consumer of it: {job.consumer!r}")
        if unknown := sorted(set(self.replicas) - set(self.roles)):
            raise ValueError(f"context {self.name!r} has replicas of processes it does not run: {unknown} "
                             f"(it runs {list(self.roles)})")

    # --- what the platform derives -------------------------------------------------------
    @property
    def app(self) -> str:
        """The Django app (INSTALLED_APPS entry); its label is the context's name."""
        return self.package

    @property
    def main_consumer(self) -> Consumer | None:
        return self.consumers[0] if self.consumers else None

    def worker_of(self, consumer: Consumer) -> str:
        """The services-mode process that runs ``consumer``."""
        return f"{self.name}-{consumer.name}-worker" if consumer.bulkhead else f"{self.name}-worker"

    @property
    def workers(self) -> dict[str, tuple[Consumer, ...]]:
        """Worker process -> the consumers it runs."""
        result: dict[str, tuple[Consumer, ...]] = {}
        for consumer in self.consumers:
            result[self.worker_of(consumer)] = (*result.get(self.worker_of(consumer), ()), consumer)
        return result

    def jobs_of(self, consumer: Consumer) -> tuple[Job, ...]:
        main = self.main_consumer
        return tuple(job for job in self.jobs
                     if (job.consumer or (main.name if main else None)) == consumer.name)

    @property
    def routes(self) -> tuple[str, ...]:
        """The path prefixes the gateway sends to this context's web process."""
        return (
            *(f"/api/v1/{prefix}" for prefix in self.api),
            *(("/ws/",) if self.websockets else ()),
            *((f"/static/{self.name}/",) if self.static else ()),
        )

    @property
    def serves_web(self) -> bool:
        return bool(self.routes)

    @property
    def roles(self) -> tuple[str, ...]:
        """Its services-mode processes, by name without the context's (what ``replicas`` keys)."""
        prefix = f"{self.name}-"
        return (*(("web",) if self.serves_web else ()), *(w.removeprefix(prefix) for w in self.workers),
                "relay", "translator")


def packages() -> tuple[str, ...]:
    value = os.environ.get(PACKAGES_VARIABLE, "")
    return tuple(p.strip() for p in value.split(",") if p.strip()) or DEFAULT_PACKAGES


def discover(where: tuple[str, ...] | None = None) -> dict[str, Context]:
    """Every context of the platform, by name, in name order: each package directly under
    ``where`` (``WAYBILL_CONTEXT_PACKAGES``, default ``apps``) that has a ``manifest``."""
    found: dict[str, Context] = {}
    for root in where or packages():
        for module in pkgutil.iter_modules(importlib.import_module(root).__path__):
            if not module.ispkg:
                continue
            package = f"{root}.{module.name}"
            try:
                manifest = importlib.import_module(f"{package}.manifest")
            except ModuleNotFoundError as missing:
                if missing.name == f"{package}.manifest":
                    continue  # a package that is not a context
                raise
            context: Context = manifest.CONTEXT
            if context.name != module.name:
                raise ValueError(f"{package}.manifest declares {context.name!r}: a context is named for its package")
            if context.name in found:
                raise ValueError(f"two packages declare the context {context.name!r}")
            object.__setattr__(context, "package", package)
            found[context.name] = context
    _refuse_clashes(found.values())
    return dict(sorted(found.items()))


def _refuse_clashes(declared) -> None:
    """A consumer name is a queue and a registration, a route goes to one web process:
    two contexts may not claim the same one (the second would silently win)."""
    owners: dict[str, str] = {}
    for context in declared:
        for claim in (*(f"consumer {c.name!r}" for c in context.consumers),
                      *(f"route {route}" for route in context.routes)):
            if claim in owners:
                raise ValueError(f"{claim} is declared by both {owners[claim]!r} and {context.name!r}")
            owners[claim] = context.name


def parse_lagging(entries: Iterable[str]) -> dict[str, dict[str, int]]:
    """``WAYBILL_LAGGING``'s entries (``<consumer>:<type>@<version>``, e.g.
    ``inventory:orders.order_cancelled@1``: a consumer whose deployed code reads that type at
    that version, older than its producer's; ``waybill.translator``) as consumer -> {type:
    version}. Here, without Django: the launcher reads it too, for the translators it runs."""
    result: dict[str, dict[str, int]] = {}
    for entry in (entry.strip() for entry in entries):
        if not entry:
            continue
        consumer, _, pinned = entry.partition(":")
        message_type, _, version = pinned.rpartition("@")
        if not (consumer and message_type and version.isdigit() and int(version) >= 1):
            raise ValueError(f"entry {entry!r}: expected <consumer>:<type>@<version>")
        result.setdefault(consumer, {})[message_type] = int(version)
    return result


def resolve(reference: str):
    """The object a ``"module:attribute"`` reference names (once Django is set up)."""
    module, _, attribute = reference.partition(":")
    return getattr(importlib.import_module(module), attribute)
