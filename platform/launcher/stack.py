"""A provisioned services deployment: the environment of each process, and the one-off
steps before the processes start (migrations per database, the bus topology, demo data).
Used by ``make up`` and by the services test suite, so both run the same thing."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from waybill import historylimits

from .deployment import (
    CONTEXTS, LAGGING_VARIABLE, MANAGEMENT_VARIABLE, MANIFESTS, METRICS_VARIABLE, SUPERVISOR_VARIABLE,
    Process, database_variable,
)
from .servers import HOST, free_port

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


@dataclass
class Stack:
    workdir: Path
    database_urls: dict[str, str]  # alias ("default" and each context's) -> URL with that alias's own role
    broker_urls: dict[str, str]  # "admin" and each context -> URL with that context's own broker user
    redis_url: str
    secret_key: str = field(default_factory=lambda: secrets.token_urlsafe(50))
    payment_gateway_url: str = ""  # the sandbox's, as the launcher started it
    payment_api_key: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    settings_module: str = "config.settings.dev"  # dev: demo accounts, as `make run`
    otel_exporter: str = "none"
    supervisor_url: str = ""  # unix://... of the supervisor that runs the processes, if any
    # WAYBILL_LAGGING: consumers whose code lags (waybill.translator); the topology step and
    # the translators read it.
    lagging: str = ""
    # RabbitMQ's management API as the admin (http://user:password@host:port): the shell's only.
    broker_management_url: str = ""
    # Process name -> host:port of its metrics (metrics_addresses); a process not named has none.
    metrics_addresses: dict[str, str] = field(default_factory=dict)
    extra: dict[str, str] = field(default_factory=dict)  # e.g. tests tightening a deadline

    def env(self, *, contexts: tuple[str, ...], broker: str, service_name: str, instance: str = "",
            replica: int = 1) -> dict[str, str]:
        """The environment of a process hosting ``contexts``, talking to the broker as
        ``broker``; ``instance``: the replica's own name, when not its service's, and
        ``replica`` its number."""
        instance = instance or service_name
        env = {k: v for k, v in os.environ.items() if not k.startswith(("WAYBILL_", "DJANGO_"))}
        env.update({
            "DJANGO_SETTINGS_MODULE": self.settings_module,
            "PYTHONPATH": f"{REPO / 'platform'}{os.pathsep}{REPO}",
            "WAYBILL_SECRET_KEY": self.secret_key,
            "WAYBILL_ALLOWED_HOSTS": "127.0.0.1,localhost",
            "WAYBILL_CONTEXTS": ",".join(contexts),
            "WAYBILL_DEFAULT_DATABASE_URL": self.database_urls["default"],
            "WAYBILL_BROKER_URL": spread(self.broker_urls[broker], service_name, replica),
            "WAYBILL_BROKER_DECLARE": "false",
            "WAYBILL_REDIS_URL": self.redis_url,
            "WAYBILL_SERVICE_NAME": f"waybill-{service_name}",
            "WAYBILL_OTEL_EXPORTER": self.otel_exporter,
            "WAYBILL_TRUSTED_PROXIES": "1",  # the gateway
            "WAYBILL_DATA_DIR": str(self.workdir / instance),
        })
        # Replicas trace as one service, told apart by their instance (OpenTelemetry's
        # resource detector reads this variable), beside what the operator set in it.
        env["OTEL_RESOURCE_ATTRIBUTES"] = ",".join(filter(None, (
            os.environ.get("OTEL_RESOURCE_ATTRIBUTES", ""), f"service.instance.id={instance}")))
        if self.supervisor_url:
            env[SUPERVISOR_VARIABLE] = self.supervisor_url
        if self.lagging:
            env[LAGGING_VARIABLE] = self.lagging
        # The history's retention, as the broker's policy has it (provision): what a process
        # may be asked to rewind to.
        env.update({name: os.environ[name] for name in historylimits.VARIABLES if name in os.environ})
        provided = {"WAYBILL_PAYMENT_GATEWAY_URL": self.payment_gateway_url,
                    "WAYBILL_PAYMENT_API_KEY": self.payment_api_key}
        for context in contexts:
            alias = MANIFESTS[context].database
            env[database_variable(alias)] = self.database_urls[alias]
            # KeyError: a manifest names a variable the launcher has no value for.
            env.update({name: provided[name] for name in MANIFESTS[context].variables})
        env.update(self.extra)
        return env

    def process_env(self, process: Process) -> dict[str, str]:
        if process.kind == "sandbox":  # not Waybill: only what it reads
            base = {k: v for k, v in os.environ.items() if not k.startswith(("WAYBILL_", "DJANGO_"))}
            return {**base, "PYTHONPATH": str(REPO / "platform"), "WAYBILL_PAYMENT_API_KEY": self.payment_api_key}
        if process.context is None:  # the shell: every context's models, no broker user of its own
            env = self.env(contexts=CONTEXTS, broker="admin", service_name=process.service, instance=process.name,
                           replica=process.replica)
            if self.broker_management_url:
                env[MANAGEMENT_VARIABLE] = self.broker_management_url
        else:
            env = self.env(contexts=(process.context,), broker=process.context, service_name=process.service,
                           instance=process.name, replica=process.replica)
        if process.is_web:
            # Under ASGI persistent connections are not reused (see config/settings/contexts.py).
            env["WAYBILL_DB_POOL"] = "true"
        if process.name in self.metrics_addresses:
            env[METRICS_VARIABLE] = self.metrics_addresses[process.name]
        return {**env, **dict(process.fixed)}

    def cwd(self, process: Process) -> Path:
        # The sandbox keeps its data under its working folder: this deployment's, not the repo's.
        return self.workdir if process.kind == "sandbox" else REPO

    @staticmethod
    def argv(process: Process) -> list[str]:
        """The command with this virtualenv's interpreter and Celery."""
        head, *rest = process.command
        return [sys.executable if head == "python" else str(BIN / head), *rest]

    def manage(self, *args: str, env: dict[str, str]) -> None:
        result = subprocess.run([sys.executable, "manage.py", *args], cwd=REPO, env=env,
                                capture_output=True, text=True, timeout=300)
        if result.returncode != 0:
            raise RuntimeError(f"manage.py {' '.join(args)} failed:\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}")

    def prepare(self, *, demo: bool = True) -> None:
        """Migrate each database with its own role, declare the topology with the admin
        account, and (dev) load the same demo data as `make run`."""
        for context in CONTEXTS:
            self.manage("migrate", "--database", MANIFESTS[context].database, "--no-input",
                        env=self.env(contexts=(context,), broker=context, service_name=f"migrate-{context}"))
        everything = self.env(contexts=CONTEXTS, broker="admin", service_name="setup")
        self.manage("migrate", "--database", "default", "--no-input", env=everything)
        # Where every database is configured, before any worker starts: e.g. webhooks moves
        # an older deployment's endpoints and deliveries out of the readmodels database.
        for context in CONTEXTS:
            for command in MANIFESTS[context].after_migrate:
                self.manage(command, env=everything)
        self.manage("declare_topology", env=everything)
        if demo:
            self.manage("load_demo", env=self.env(contexts=("inventory",), broker="inventory", service_name="demo"))


def spread(broker_url: str, service: str, replica: int = 1) -> str:
    """A cluster's URL lists every node (``;``, Kombu's and Celery's failover list, tried in
    order); each process starts its list at another node, the same at every start, so
    connections spread over the nodes and a node's loss moves only its share; a service's
    replicas start at consecutive nodes, never all at one."""
    nodes = broker_url.split(";")
    first = (zlib.crc32(service.encode()) + replica - 1) % len(nodes)
    return ";".join(nodes[first:] + nodes[:first])


def metrics_addresses(processes: Iterable[Process]) -> dict[str, str]:
    """A free loopback port for each Waybill process's metrics (the sandbox is none), chosen
    once: a process the supervisor starts again serves where it did, so a scrape
    configuration written at the start stays true for the whole run."""
    return {p.name: f"{HOST}:{free_port()}" for p in processes if p.kind != "sandbox"}


def prometheus_config(addresses: dict[str, str]) -> str:
    """A Prometheus scrape configuration (``prometheus.yml``) of ``addresses``: one job, a
    target per process with a ``process`` label, since every process reports the same
    metric names and only the label tells them apart."""
    return yaml.safe_dump({"scrape_configs": [{
        "job_name": "waybill",
        "static_configs": [{"targets": [address], "labels": {"process": name}}
                           for name, address in addresses.items()],
    }]}, sort_keys=False)
