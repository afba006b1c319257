"""The deployment a chaos run attacks, built in one place (``deployed``) so that the
launcher's cluster and replica topology replaces it here and nowhere else.

Today: one private PostgreSQL server for every context's database, one RabbitMQ node
(with its management plugin: the run reads the brokers' redelivery figures), one Redis,
and every process of ``launcher.services.ServicesDeployment`` (``REPLICAS``) behind the nginx gateway,
the same steps as the services test suite's deployment (tests/conftest.py). The faults
see the servers as lists (``postgres``, ``broker_nodes``): a node kill picks one of the
list, "the whole broker" is all of it, so three nodes or several database servers need
no change in ``chaos.faults``.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from launcher.deployment import processes
from launcher.provision import provision_postgres, provision_rabbitmq
from launcher.servers import PostgresServer, RabbitMQServer, RedisServer
from launcher.services import ServicesDeployment
from launcher.stack import Stack, metrics_addresses

# Two replicas of the web processes customers hit hardest (placing orders, the WebSockets),
# so a web kill is also the gateway's passive health check at work; one of everything else.
REPLICAS = "orders-web=2,readmodels-web=2"


@dataclass
class Topology:
    deployment: ServicesDeployment
    postgres: list[PostgresServer]  # every database server; a restart picks one
    broker_nodes: list[RabbitMQServer]  # every RabbitMQ node; "the whole broker" is all of them
    redis: RedisServer
    startup_s: float = 0.0
    # Process name -> kind (web, worker, relay, ...), of what the deployment runs.
    kinds: dict[str, str] = field(default_factory=dict)

    @property
    def stack(self) -> Stack:
        return self.deployment.stack

    @property
    def management_url(self) -> str:
        """The management API of the first node that has one (the admin's credentials)."""
        return next((node.management_url for node in self.broker_nodes if node.management_url), "")

    def of_kind(self, kind: str) -> list[str]:
        return sorted(name for name, k in self.kinds.items() if k == kind)


@contextmanager
def deployed(workdir: Path, *, extra_env: dict[str, str]) -> Iterator[Topology]:
    """Start the servers, provision them, prepare the stack (migrations, topology, demo
    accounts) and start every process; stop all of it, in reverse, whatever happens."""
    shutil.rmtree(workdir, ignore_errors=True)  # never an earlier run's data
    workdir.mkdir(parents=True)
    began = time.monotonic()
    with ExitStack() as servers:
        # More connections than PostgreSQL's default 100: each web process has a pool,
        # each worker thread and relay a connection, and the run reads every database.
        postgres = servers.enter_context(
            PostgresServer(workdir / "postgres", fast=True, settings={"max_connections": "300"}))
        node = servers.enter_context(RabbitMQServer(workdir / "rabbitmq", plugins=("rabbitmq_management",)))
        redis = servers.enter_context(RedisServer(workdir / "redis"))
        stack = Stack(workdir=workdir / "stack", database_urls=provision_postgres(postgres),
                      broker_urls=provision_rabbitmq(node), redis_url=redis.url,
                      broker_management_url=node.management_url,
                      metrics_addresses=metrics_addresses(processes(replicas=REPLICAS)),
                      extra=dict(extra_env))
        stack.workdir.mkdir(parents=True, exist_ok=True)
        stack.prepare()
        deployment = ServicesDeployment(stack, stack.workdir, replicas=REPLICAS)
        try:
            deployment.start()
            kinds = {name: spec.kind for name, spec in deployment.specs.items()}
            yield Topology(deployment, [postgres], [node], redis, startup_s=round(time.monotonic() - began, 1),
                           kinds=kinds)
        finally:
            deployment.close_clients()
            try:
                deployment.stop()
            except Exception:  # noqa: BLE001 - a supervisor that never started: the servers still stop
                deployment.supervisor.stop()
