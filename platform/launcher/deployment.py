"""The services deployment, derived from the contexts' manifests (``apps/<ctx>/manifest.py``,
see ``waybill.manifest``): which processes run, with which command and which environment
variables. ``make up`` (``launcher.up``) starts exactly these, and a test holds
``docker-compose.yml`` to the same commands and variables.

Per context: ``web`` (its API and micro-frontend, uvicorn), ``worker`` (Celery: its event
consumers and the kernel's scheduler for them) and ``relay`` (its outbox relay, woken by
LISTEN/NOTIFY). A bulkhead consumer (orders' ``payments``, whose slow provider calls cannot
starve the rest) gets a worker of its own, ``<context>-<consumer>-worker``. Besides them:
``<context>-translator`` for a context whose consumer lags (``WAYBILL_LAGGING``, see
``waybill.translator``), ``shell-web`` (the shell page, sign-in, admin, API docs: every context's models, each
through its own database role), ``payment-sandbox`` (the external payment provider
stand-in, no context's) and the gateway.

Any of them but the sandbox may run several times: replicas, counted by the context's
manifest (``Context.replicas``) or by ``WAYBILL_REPLICAS`` (``orders-web=2,inventory-worker=3``),
which wins. Replica 1 keeps the plain name; replica k is ``<name>-k``. Compose runs the
same count of one service (``deploy.replicas``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

from waybill import manifest

MANIFESTS = manifest.discover()
CONTEXTS = tuple(MANIFESTS)
# The database aliases: the identity store's (auth, sessions, admin), then each context's.
DATABASES = ("default", *dict.fromkeys(m.database for m in MANIFESTS.values()))

# Where the gateway sends each path prefix (each manifest's API, WebSocket and static
# mounts); anything else goes to the shell. Each context serves its own micro-frontend
# (``apps/<ctx>/static/<ctx>/``, WhiteNoise in its web process), so a context ships its UI
# with its API; the shell's page only composes them.
ROUTES = {route: context.name for context in MANIFESTS.values() for route in context.routes}

# The environment every Waybill process reads (see config/settings); a service gets
# its own values of these.
COMMON_VARIABLES = (
    "DJANGO_SETTINGS_MODULE",
    "PYTHONPATH",
    "WAYBILL_SECRET_KEY",
    "WAYBILL_ALLOWED_HOSTS",
    "WAYBILL_CONTEXTS",
    "WAYBILL_DEFAULT_DATABASE_URL",
    "WAYBILL_BROKER_URL",
    "WAYBILL_BROKER_DECLARE",
    "WAYBILL_REDIS_URL",
    "WAYBILL_SERVICE_NAME",
    "WAYBILL_OTEL_EXPORTER",
    "WAYBILL_TRUSTED_PROXIES",
)


# Where a supervised process finds its supervisor's control interface (launcher.supervision):
# /readyz and the operations report name the processes of its context that keep crashing.
# Not in COMMON_VARIABLES: under compose, Docker restarts the containers and there is none.
SUPERVISOR_VARIABLE = "WAYBILL_SUPERVISOR_URL"


# RabbitMQ's management API with the admin account (config/settings/bus.py): the shell's
# alone, for the operations console's queue figures. No context process gets it: with it,
# a context could read and purge every other context's queues.
MANAGEMENT_VARIABLE = "WAYBILL_BROKER_MANAGEMENT_URL"
# Where a process serves its Prometheus metrics, unauthenticated (waybill.metrics): the
# launcher gives every Waybill process (not the sandbox) a loopback port of its own.
METRICS_VARIABLE = "WAYBILL_METRICS_ADDR"


# Replica counts by process name, beside the manifests' (see the module's docstring): read
# by the launcher, not by the processes.
REPLICAS_VARIABLE = "WAYBILL_REPLICAS"


def parse_replicas(value: str) -> dict[str, int]:
    """``WAYBILL_REPLICAS``'s value -> {process name: count}; a clear error for anything else."""
    counts = {}
    for item in filter(None, (part.strip() for part in value.split(","))):
        name, equals, count = item.partition("=")
        if not equals or not count.strip().isdigit() or int(count) < 1:
            raise ValueError(f"{REPLICAS_VARIABLE}: {item!r} is not <process>=<count of at least 1>")
        counts[name.strip()] = int(count)
    return counts


def database_variable(alias: str) -> str:
    return f"WAYBILL_{alias.upper()}_DATABASE_URL"


@dataclass(frozen=True)
class Process:
    name: str
    context: str | None  # None: the shell or the sandbox, which belong to no one context
    kind: str  # web | worker | relay | translator | sandbox
    command: tuple[str, ...]
    variables: tuple[str, ...] = field(default=())
    # Variables whose value is part of the process's identity, the same everywhere.
    fixed: tuple[tuple[str, str], ...] = field(default=())
    # Which of its service's ``replicas`` this one is (1..replicas).
    replica: int = 1
    replicas: int = 1

    @property
    def service(self) -> str:
        """The name every replica shares (compose's service, the gateway's upstream)."""
        return self.name.removesuffix(f"-{self.replica}") if self.replica > 1 else self.name

    @property
    def is_web(self) -> bool:
        return self.kind == "web"

    @property
    def listens(self) -> bool:
        return self.kind in ("web", "sandbox")

    @property
    def ready_path(self) -> str:
        return "/readyz" if self.is_web else "/healthz"


# The default of WAYBILL_WS_MAX_FRAME_BYTES (config/settings/limits.py, which the web process
# checks again per frame; tests/test_compose.py holds the two equal). The launcher runs
# before any settings are loaded, so it cannot read them.
WS_MAX_FRAME_BYTES = 64 * 1024


def web_command(host: str, port: str) -> tuple[str, ...]:
    return ("python", "-m", "uvicorn", "config.asgi:application", "--host", host, "--port", port,
            "--no-access-log", "--proxy-headers", "--forwarded-allow-ips", "*", "--ws-max-size", str(WS_MAX_FRAME_BYTES))


def worker_command(context: str, node: str) -> tuple[str, ...]:
    return ("celery", "-A", "config.celery:app", "worker", "-Q", f"waybill.tasks.{context}", "-n", f"{node}@%h",
            "--pool", "threads", "--concurrency", "4", "--without-mingle", "--without-gossip",
            "--without-heartbeat", "--loglevel", "INFO")


# Consumers whose code lags behind their producers' (config/settings/bus.py): a translator
# process runs for each one's context, and the topology step feeds them through it.
LAGGING_VARIABLE = "WAYBILL_LAGGING"


def lagging_contexts(lagging: str) -> set[str]:
    """The contexts whose consumers ``lagging`` (``WAYBILL_LAGGING``'s value) lists."""
    named = set(manifest.parse_lagging(lagging.split(",")))
    owners = {consumer.name: context.name for context in MANIFESTS.values() for consumer in context.consumers}
    if unknown := named - owners.keys():
        raise ValueError(f"{LAGGING_VARIABLE} names consumers no context declares: {sorted(unknown)}")
    return {owners[name] for name in named}


def processes(*, host: str = "127.0.0.1", port_of: dict[str, str] | None = None, lagging: str = "",
              replicas: str = "") -> list[Process]:
    """Every process of the deployment, each replica its own. ``port_of`` maps a listening
    process's name to its port (the launcher picks free ports on loopback; compose uses 8000
    in every container); ``lagging``: the value of ``WAYBILL_LAGGING``, if any consumer lags;
    ``replicas``: that of ``WAYBILL_REPLICAS``."""
    port_of = port_of or {}
    translated = lagging_contexts(lagging)
    # Each service: its process, the count its manifest declares, and its command for a
    # replica's name and number (a web replica listens on its own port, a worker replica is a
    # Celery node of its own).
    services: list[tuple[Process, int, Callable[[str, int], tuple[str, ...]]]] = []

    def web(name: str, replica: int) -> tuple[str, ...]:
        return web_command(host, port_of.get(name, "8000"))

    for context in MANIFESTS.values():
        variables = (*COMMON_VARIABLES, database_variable(context.database), *context.variables)
        if context.serves_web:
            services.append((Process(f"{context.name}-web", context.name, "web", (), (*variables, "WAYBILL_DB_POOL")),
                             context.replicas.get("web", 1), web))
        for worker, consumers in context.workers.items():
            node = consumers[0].name if consumers[0].bulkhead else context.name
            hosted = ",".join(consumer.name for consumer in consumers)
            services.append((Process(worker, context.name, "worker", (), (*variables, "WAYBILL_CONSUMERS"),
                                     fixed=(("WAYBILL_CONSUMERS", hosted),)),
                             context.replicas.get(worker.removeprefix(f"{context.name}-"), 1),
                             lambda name, replica, context=context.name, node=node: worker_command(
                                 context, node if replica == 1 else f"{node}-{replica}")))
        relay = ("python", "manage.py", "runrelay")
        services.append((Process(f"{context.name}-relay", context.name, "relay", relay, variables),
                         context.replicas.get("relay", 1), lambda name, replica, relay=relay: relay))
        if context.name in translated:
            # Under the context's broker user, which may read its translator queues and publish
            # to its own queues alone (launcher.provision); it never opens the database.
            translator = ("python", "manage.py", "runtranslator")
            services.append((Process(f"{context.name}-translator", context.name, "translator", translator,
                                     (*variables, LAGGING_VARIABLE)),
                             context.replicas.get("translator", 1), lambda name, replica, t=translator: t))
    shell_variables = (*COMMON_VARIABLES, *(database_variable(alias) for alias in DATABASES[1:]))
    services.append((Process("shell-web", None, "web", (), (*shell_variables, "WAYBILL_DB_POOL", MANAGEMENT_VARIABLE)),
                     1, web))
    counts = parse_replicas(replicas)
    if unknown := sorted(set(counts) - {process.name for process, _, _ in services}):
        raise ValueError(f"{REPLICAS_VARIABLE} names processes the deployment does not run: {unknown}")
    result = []
    for service, declared, command in services:
        count = counts.get(service.name, declared)
        for replica in range(1, count + 1):
            name = service.name if replica == 1 else f"{service.name}-{replica}"
            result.append(replace(service, name=name, replica=replica, replicas=count, command=command(name, replica)))
    result.append(Process("payment-sandbox", None, "sandbox", (
        "python", "-m", "paymentsandbox", "--host", host, "--port", port_of.get("payment-sandbox", "8000"),
        "--data-dir", "var/payment-sandbox",
    ), ("PYTHONPATH", "WAYBILL_PAYMENT_API_KEY")))
    return result

