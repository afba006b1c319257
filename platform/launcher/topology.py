"""How a services deployment is laid out beyond one process of each kind on one server of
each: replicas (``launcher.deployment``), a RabbitMQ cluster instead of one node, and
contexts' databases on PostgreSQL servers of their own. ``make up`` reads it from the
environment; the tests and the chaos run build one.

    WAYBILL_REPLICAS=orders-web=2,inventory-worker=2    # see launcher.deployment
    WAYBILL_BROKER_NODES=3                               # a three-node RabbitMQ cluster
    WAYBILL_DATABASE_SERVERS=separate                    # every context's database on its own server
    WAYBILL_DATABASE_SERVERS=orders=east,inventory=west  # or by name; the rest stay on "main"

``Servers`` starts what a topology needs, on loopback in a folder, and provisions it: the
identity store (``default``) always lives on the ``main`` PostgreSQL server, with every
database no other server was given. Each database still has its own role, wherever it is.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from . import provision
from .deployment import DATABASES, REPLICAS_VARIABLE, parse_replicas
from .servers import PostgresServer, RabbitMQCluster, RabbitMQServer, RedisServer

BROKER_NODES_VARIABLE = "WAYBILL_BROKER_NODES"
DATABASE_SERVERS_VARIABLE = "WAYBILL_DATABASE_SERVERS"
MAIN = "main"  # the PostgreSQL server of the identity store
LAYOUT_FILE = "layout.json"  # in a `make up` folder: the layout its data was made with
# A single broker keeps its data under its node's name: the same at every start.
RABBITMQ_NODE = "waybill@localhost"


@dataclass(frozen=True)
class Topology:
    broker_nodes: int = 1  # 1: one node; more: a cluster of that many
    # Database alias -> the name of the PostgreSQL server it lives on; the others live on MAIN.
    database_servers: Mapping[str, str] = field(default_factory=dict)
    replicas: str = ""  # as WAYBILL_REPLICAS

    def __post_init__(self) -> None:
        object.__setattr__(self, "database_servers", MappingProxyType(dict(self.database_servers)))
        if self.broker_nodes != 1 and (self.broker_nodes < 3 or self.broker_nodes % 2 == 0):
            # A quorum of two nodes cannot lose either: a cluster only survives losing a
            # minority, so an odd number of at least three.
            raise ValueError(f"{BROKER_NODES_VARIABLE}: 1, or an odd number of at least 3 nodes, "
                             f"not {self.broker_nodes}")
        if unknown := sorted(set(self.database_servers) - set(DATABASES[1:])):
            raise ValueError(f"{DATABASE_SERVERS_VARIABLE} names databases no context has: {unknown} "
                             f"(they are {list(DATABASES[1:])}; the identity store stays on {MAIN!r})")
        parse_replicas(self.replicas)  # a clear error now rather than when the processes start

    def server_of(self, alias: str) -> str:
        return self.database_servers.get(alias, MAIN)

    @property
    def database_server_names(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys((MAIN, *self.database_servers.values())))

    @property
    def layout(self) -> dict:
        """What a folder's data is laid out by (replicas are not: they hold no data)."""
        return {"broker_nodes": self.broker_nodes,
                "database_servers": {alias: self.server_of(alias) for alias in DATABASES[1:]}}

    def refuses_layout_of(self, workdir: Path) -> str | None:
        """Why ``workdir`` cannot run this layout (its data was laid out otherwise: another
        broker or other database servers would start empty beside the data, and sagas would
        wait for messages stranded on the old broker), or None, recording it the first time."""
        path = workdir / LAYOUT_FILE
        try:
            before = json.loads(path.read_text())
        except FileNotFoundError:
            if (workdir / "postgres" / "pgdata").exists():
                before = Topology().layout  # a folder from before layouts were recorded
            else:
                path.write_text(json.dumps(self.layout, indent=2))
                return None
        if before == self.layout:
            path.write_text(json.dumps(self.layout, indent=2))
            return None
        return (f"{workdir} holds data laid out as {json.dumps(before)}, not {json.dumps(self.layout)} "
                f"({BROKER_NODES_VARIABLE}, {DATABASE_SERVERS_VARIABLE}): start it as it was, or `make reset` "
                f"to start over (its orders, messages and history go with it)")

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] = os.environ) -> Topology:
        value = environ.get(DATABASE_SERVERS_VARIABLE, "").strip()
        if value == "separate":
            servers = {alias: alias for alias in DATABASES[1:]}
        else:
            servers = {}
            for item in filter(None, (part.strip() for part in value.split(","))):
                alias, equals, server = item.partition("=")
                if not equals or not server.strip():
                    raise ValueError(f"{DATABASE_SERVERS_VARIABLE}: {item!r} is not <database>=<server name>")
                servers[alias.strip()] = server.strip()
        nodes = environ.get(BROKER_NODES_VARIABLE, "1").strip() or "1"
        if not nodes.isdigit():
            raise ValueError(f"{BROKER_NODES_VARIABLE}: a number of nodes, not {nodes!r}")
        return cls(broker_nodes=int(nodes), database_servers=servers, replicas=environ.get(REPLICAS_VARIABLE, ""))


# The layout at scale that the tests (tests/services/test_at_scale.py) and the chaos run use
# (the soak too with --layout chaos; by default it runs `make up`'s): a three-node cluster,
# inventory's database on a server of its own beside the main one, and two of the web
# processes customers hit hardest (orders, the read side's WebSockets), of a worker
# (inventory's) and of a relay (orders'). One of everything else.
AT_SCALE = Topology(broker_nodes=3, database_servers={"inventory": "inventory"},
                    replicas="orders-web=2,readmodels-web=2,inventory-worker=2,orders-relay=2")


class Servers:
    """The PostgreSQL servers, the broker (one node or a cluster) and Redis of a topology,
    in ``workdir``. ``persistent`` (``make up``): fsync on, Redis's append-only file, and
    fixed RabbitMQ node names, so a folder started again finds its data; otherwise fast
    throw-away servers, as the tests run them."""

    def __init__(self, workdir: Path, topology: Topology = Topology(), *, persistent: bool = False,
                 max_connections: int = 300):
        self.topology = topology
        # Every worker and relay thread keeps its connections (CONN_MAX_AGE): room for them all.
        settings = {"max_connections": str(max_connections)}
        self.postgres = {name: PostgresServer(workdir / ("postgres" if name == MAIN else f"postgres-{name}"),
                                              fast=not persistent, settings=settings)
                         for name in topology.database_server_names}
        # The management plugin: the console's queue figures (unacknowledged counts).
        plugins = ("rabbitmq_management",)
        self.broker: RabbitMQServer | RabbitMQCluster = (
            RabbitMQCluster(workdir / "rabbitmq-cluster", size=topology.broker_nodes, plugins=plugins)
            if topology.broker_nodes > 1 else
            RabbitMQServer(workdir / "rabbitmq", node=RABBITMQ_NODE if persistent else None, plugins=plugins))
        self.redis = RedisServer(workdir / "redis", persistent=persistent)

    @property
    def broker_nodes(self) -> list[RabbitMQServer]:
        """Each node on its own (to kill one, say): the cluster's, or the one."""
        return self.broker.nodes if isinstance(self.broker, RabbitMQCluster) else [self.broker]

    @property
    def server_processes(self) -> list:
        """Every server process on its own (each PostgreSQL server, broker node, Redis)."""
        return [*self.postgres.values(), *self.broker_nodes, self.redis]

    @property
    def all(self) -> list:
        return [*self.postgres.values(), self.broker, self.redis]

    def start(self, announce=lambda server: None, started=lambda server: None) -> Servers:
        """Start every server in turn; ``announce`` is told of each before, ``started`` after
        (``make up`` records its pids there, so a killed start is waited for next time)."""
        try:
            for server in self.all:
                announce(server)
                server.start()
                started(server)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for server in reversed(self.all):
            server.stop()

    def __enter__(self) -> Servers:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def database_urls(self) -> dict[str, str]:
        """Alias -> URL of its own role, each on its server (provisioned now)."""
        urls = {}
        for name, server in self.postgres.items():
            aliases = [alias for alias in DATABASES[1:] if self.topology.server_of(alias) == name]
            urls |= provision.provision_postgres(server, aliases=aliases, identity="default" if name == MAIN else None)
        return urls

    def broker_urls(self) -> dict[str, str]:
        """"admin" and each context -> URL of its own broker user, listing every node."""
        return provision.provision_rabbitmq(self.broker)
