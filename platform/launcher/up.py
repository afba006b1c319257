"""`make up`: the services mode on this machine, no Docker needed.

Starts PostgreSQL, RabbitMQ and Redis from the installed binaries in a private folder
(``var/services``, fresh every time), provisions a database and role and a broker user per
context, migrates, declares the bus topology, loads the demo data, then runs every process
of ``deployment.processes()`` plus the nginx gateway under honcho (prefixed logs; Ctrl-C
stops them all, then the servers).
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys

from honcho.manager import Manager

from . import provision
from .deployment import processes
from .gateway import Gateway
from .servers import PostgresServer, RabbitMQServer, RedisServer, free_port, missing_packages
from .stack import REPO, Stack


def main() -> int:
    missing = missing_packages()
    if missing:
        print(f"make up needs these Debian packages: {' '.join(missing)}\n"
              f"Install them with: apt-get install -y {' '.join(missing)}", file=sys.stderr)
        return 1
    port = int(os.environ.get("WAYBILL_PORT", "8000"))
    workdir = REPO / "var" / "services"
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)

    # Every worker and relay thread keeps its connections (CONN_MAX_AGE): room for them all.
    servers = [PostgresServer(workdir / "postgres", fast=False, settings={"max_connections": "300"}),
               RabbitMQServer(workdir / "rabbitmq"),
               RedisServer(workdir / "redis")]
    postgres, rabbitmq, redis = servers
    try:
        for server in servers:
            print(f"starting {type(server).__name__} ...", flush=True)
            server.start()
        port_of = {p.name: str(free_port()) for p in processes() if p.listens}
        deployment = processes(port_of=port_of)
        stack = Stack(
            workdir=workdir,
            database_urls=provision.provision_postgres(postgres),
            broker_urls=provision.provision_rabbitmq(rabbitmq),
            redis_url=redis.url,
            payment_gateway_url=f"http://127.0.0.1:{port_of['payment-sandbox']}",
            otel_exporter=os.environ.get("WAYBILL_OTEL_EXPORTER", "none"),
        )
        print("migrating, declaring the bus topology, loading demo data ...", flush=True)
        stack.prepare()

        gateway = Gateway(workdir / "gateway", port=port, upstreams={
            (p.context or "shell"): f"127.0.0.1:{port_of[p.name]}" for p in deployment if p.is_web
        })
        gateway.write_conf()

        manager = Manager()
        for process in deployment:
            manager.add_process(process.name, shlex.join(stack.argv(process)), env=stack.process_env(process), cwd=str(REPO))
        manager.add_process("gateway", shlex.join(gateway.command()))
        password = os.environ.get("WAYBILL_DEMO_PASSWORD", "waybill-demo")
        print(f"\nWaybill services mode on {gateway.url}/  (Ctrl-C stops everything)\n"
              f"Demo accounts: alice, bob (customers), admin (staff) - password {password!r}\n", flush=True)
        manager.loop()
        return manager.returncode or 0
    finally:
        for server in reversed(servers):
            server.stop()


if __name__ == "__main__":
    sys.exit(main())
