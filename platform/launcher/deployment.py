"""The services deployment, described once: which processes run, with which command and
which environment variables. ``make up`` (``launcher.up``) starts exactly these, and a
test holds ``docker-compose.yml`` to the same commands and variables.

Per context: ``web`` (its API, uvicorn), ``worker`` (Celery: its event consumer bootstep
and its task queue), ``beat`` (its periodic sweeps) and ``relay`` (its outbox relay,
woken by LISTEN/NOTIFY). Orders has a second worker, ``orders-payments-worker``: the
payments consumer, a bulkhead whose slow provider calls cannot starve the rest. Likewise
readmodels has ``readmodels-webhooks-worker``: the webhooks consumer, which records and
sends webhook deliveries, so slow receivers never hold up the projector. Besides
them: ``shell-web`` (the shell page, sign-in, admin, API docs: every context's models,
each through its own database role), ``payment-sandbox`` (the external payment provider
stand-in, no context's) and the gateway.
"""

from __future__ import annotations

from dataclasses import dataclass, field

CONTEXTS = ("orders", "inventory", "readmodels")

# Where the gateway sends each path prefix; anything else goes to the shell. Each context
# serves its own micro-frontend (``apps/<ctx>/static/<ctx>/``, WhiteNoise in its web
# process), so a context ships its UI with its API; the shell's page only composes them.
ROUTES = {
    "/api/v1/orders/": "orders",
    "/api/v1/inventory/": "inventory",
    "/api/v1/read/": "readmodels",
    "/api/v1/events/": "readmodels",
    "/api/v1/webhooks/": "readmodels",
    "/ws/": "readmodels",
    "/static/orders/": "orders",
    "/static/inventory/": "inventory",
    "/static/readmodels/": "readmodels",
}

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


def database_variable(alias: str) -> str:
    return f"WAYBILL_{alias.upper()}_DATABASE_URL"


PAYMENT_VARIABLES = ("WAYBILL_PAYMENT_GATEWAY_URL", "WAYBILL_PAYMENT_API_KEY")


@dataclass(frozen=True)
class Process:
    name: str
    context: str | None  # None: the shell or the sandbox, which belong to no one context
    kind: str  # web | worker | beat | relay | sandbox
    command: tuple[str, ...]
    variables: tuple[str, ...] = field(default=())
    # Variables whose value is part of the process's identity, the same everywhere.
    fixed: tuple[tuple[str, str], ...] = field(default=())

    @property
    def is_web(self) -> bool:
        return self.kind == "web"

    @property
    def listens(self) -> bool:
        return self.kind in ("web", "sandbox")

    @property
    def ready_path(self) -> str:
        return "/readyz" if self.is_web else "/healthz"


# The default of WAYBILL_WS_MAX_FRAME_BYTES (config/settings/base.py, which the web process
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


def processes(*, host: str = "127.0.0.1", port_of: dict[str, str] | None = None) -> list[Process]:
    """Every process of the deployment. ``port_of`` maps a listening process's name to its
    port (the launcher picks free ports on loopback; compose uses 8000 in every container)."""
    port_of = port_of or {}
    result = []
    for context in CONTEXTS:
        variables = (*COMMON_VARIABLES, database_variable(context))
        if context == "orders":
            variables += PAYMENT_VARIABLES
        name = f"{context}-web"
        result += [
            Process(name, context, "web", web_command(host, port_of.get(name, "8000")),
                    (*variables, "WAYBILL_DB_POOL")),
            Process(f"{context}-worker", context, "worker", worker_command(context, context),
                    (*variables, "WAYBILL_CONSUMERS"), fixed=(("WAYBILL_CONSUMERS", context),)),
            # Celery's in-memory scheduler: its sweeps come every few seconds, so a schedule
            # file would keep nothing worth keeping, and one path under /tmp was shared by
            # every deployment on the machine (make up beside the tests, say).
            Process(f"{context}-beat", context, "beat", (
                "celery", "-A", "config.celery:app", "beat", "--loglevel", "INFO", "--scheduler", "celery.beat:Scheduler",
            ), variables),
            Process(f"{context}-relay", context, "relay", ("python", "manage.py", "runrelay"), variables),
        ]
        if context == "orders":
            result.append(Process("orders-payments-worker", context, "worker", worker_command(context, "payments"),
                                  (*variables, "WAYBILL_CONSUMERS"), fixed=(("WAYBILL_CONSUMERS", "payments"),)))
        if context == "readmodels":
            result.append(Process("readmodels-webhooks-worker", context, "worker", worker_command(context, "webhooks"),
                                  (*variables, "WAYBILL_CONSUMERS"), fixed=(("WAYBILL_CONSUMERS", "webhooks"),)))
    shell_variables = (*COMMON_VARIABLES, *(database_variable(c) for c in CONTEXTS))
    result.append(Process("shell-web", None, "web", web_command(host, port_of.get("shell-web", "8000")),
                          (*shell_variables, "WAYBILL_DB_POOL")))
    result.append(Process("payment-sandbox", None, "sandbox", (
        "python", "-m", "paymentsandbox", "--host", host, "--port", port_of.get("payment-sandbox", "8000"),
        "--data-dir", "var/payment-sandbox",
    ), ("PYTHONPATH", "WAYBILL_PAYMENT_API_KEY")))
    return result
