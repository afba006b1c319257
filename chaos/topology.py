"""The deployment a chaos run attacks, built in one place (``deployed``): the launcher's
own topology (``launcher.topology``), as `make up` lays it out at scale.

``LAYOUT``: the launcher's ``AT_SCALE``, as the tests run it: a three-node RabbitMQ cluster
(quorum queues and the history stream on every node, every client given every node),
inventory's database on a PostgreSQL server of its own beside the main one (the identity
store, orders, the read side, webhooks), and two replicas of the web processes customers
hit hardest (placing orders, the WebSockets), so that a web kill is also the gateway's
passive health check at work, of inventory's worker (competing for its queue) and of
orders' relay (sharing its outbox); one of everything else. Redis, the payment sandbox
and the nginx gateway as always. The faults see the
servers as lists (``postgres``, ``broker_nodes``): a node kill picks one, "the whole
broker" is ``broker`` (every node), so another layout needs no change in ``chaos.faults``.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from launcher.deployment import processes
from launcher.servers import PostgresServer, RabbitMQCluster, RabbitMQServer, RedisServer
from launcher.services import ServicesDeployment
from launcher.stack import Stack, metrics_addresses
from launcher.topology import AT_SCALE, Servers
from launcher.topology import Topology as Layout

LAYOUT = AT_SCALE


@dataclass
class Topology:
    deployment: ServicesDeployment
    postgres: list[PostgresServer]  # every database server; a restart picks one
    broker: RabbitMQCluster | RabbitMQServer  # the whole broker: every node
    broker_nodes: list[RabbitMQServer]  # each node on its own; a node kill picks one
    redis: RedisServer
    layout: Layout
    startup_s: float = 0.0
    # Process name -> kind (web, worker, relay, ...), of what the deployment runs.
    kinds: dict[str, str] = field(default_factory=dict)

    @property
    def stack(self) -> Stack:
        return self.deployment.stack

    @property
    def management_url(self) -> str:
        """The first node's management API (as the admin), which answers for the whole
        cluster: the soak kills no node."""
        return self.broker_nodes[0].management_url

    def of_kind(self, kind: str) -> list[str]:
        return sorted(name for name, k in self.kinds.items() if k == kind)

    def describe(self) -> dict:
        return {"broker_nodes": len(self.broker_nodes), "postgres_servers": len(self.postgres),
                "databases_on": {alias: self.layout.server_of(alias) for alias in self.stack.database_urls},
                "replicas": self.layout.replicas, "processes": self.kinds, "startup_s": self.startup_s}


@contextmanager
def deployed(workdir: Path, *, extra_env: dict[str, str], layout: Layout = LAYOUT) -> Iterator[Topology]:
    """Start the servers, provision them, prepare the stack (migrations, topology, demo
    accounts) and start every process; stop all of it, in reverse, whatever happens. The
    servers start on the caller's thread, which must outlive them (launcher.servers)."""
    shutil.rmtree(workdir, ignore_errors=True)  # never an earlier run's data
    workdir.mkdir(parents=True)
    began = time.monotonic()
    with Servers(workdir / "servers", layout) as servers:
        stack = Stack(workdir=workdir / "stack", database_urls=servers.database_urls(),
                      broker_urls=servers.broker_urls(), redis_url=servers.redis.url,
                      broker_management_url=servers.broker.management_url,
                      metrics_addresses=metrics_addresses(processes(replicas=layout.replicas)),
                      extra=dict(extra_env))
        stack.workdir.mkdir(parents=True, exist_ok=True)
        stack.prepare()
        deployment = ServicesDeployment(stack, stack.workdir, replicas=layout.replicas)
        try:
            deployment.start()
            kinds = {name: spec.kind for name, spec in deployment.specs.items()}
            yield Topology(deployment, list(servers.postgres.values()), servers.broker, servers.broker_nodes,
                           servers.redis, layout, startup_s=round(time.monotonic() - began, 1), kinds=kinds)
        finally:
            deployment.close_clients()
            try:
                deployment.stop()
            except Exception:  # noqa: BLE001 - a supervisor that never started: the servers still stop
                deployment.supervisor.stop()
