"""The services deployment the live-push benchmark runs on: private PostgreSQL, RabbitMQ
and Redis on free loopback ports, every context as its own processes behind the nginx
gateway (``launcher.services.ServicesDeployment``, as the services test suite starts it).

``readmodels-web`` (one uvicorn process) holds every socket; ``readmodels-worker`` projects
and pushes through the Redis channel layer.
"""

from __future__ import annotations

import contextlib
import json
import resource
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

from launcher.provision import provision_postgres, provision_rabbitmq
from launcher.servers import PostgresServer, RabbitMQServer, RedisServer
from launcher.services import ServicesDeployment
from launcher.stack import REPO, Stack

SUPPORT = Path(__file__).resolve().parent


def raise_open_file_limit(wanted: int = 65536) -> int:
    """Raise this process's soft RLIMIT_NOFILE (children, the servers included, inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


@contextlib.contextmanager
def services(workdir: Path, *, extra: dict[str, str] | None = None,
             redis_options: str = "") -> Iterator[ServicesDeployment]:
    """Start everything fresh in ``workdir`` (emptied first); stop it all on the way out.

    ``redis_options`` is a query string appended to every process's WAYBILL_REDIS_URL
    (redis-py reads connection options from it, e.g. ``socket_timeout=30``): for what-if
    runs only; the benchmark's numbers use the deployment as the launcher configures it."""
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    with PostgresServer(workdir / "postgres", fast=True) as pg, RabbitMQServer(workdir / "rabbitmq") as mq, \
            RedisServer(workdir / "redis") as redis:
        redis_url = f"{redis.url}?{redis_options}" if redis_options else redis.url
        stack = Stack(workdir=workdir / "services", database_urls=provision_postgres(pg),
                      broker_urls=provision_rabbitmq(mq), redis_url=redis_url, extra=dict(extra or {}))
        stack.prepare()
        deployment = ServicesDeployment(stack, stack.workdir)
        try:
            deployment.start()
            yield deployment
        finally:
            deployment.close_clients()
            deployment.stop()


def env_of(deployment: ServicesDeployment, process: str) -> dict[str, str]:
    """The environment of one of the deployment's processes (its databases, broker user)."""
    return deployment.stack.process_env(deployment.specs[process])


def create_customers(deployment: ServicesDeployment, count: int, prefix: str = "wsbench") -> dict:
    """``count`` customers with a session each, in the default database (see customers.py)."""
    done = subprocess.run([sys.executable, str(SUPPORT / "customers.py"), str(count), prefix], cwd=REPO,
                          env=env_of(deployment, "shell-web"), capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        raise RuntimeError(f"creating customers failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout)


def helper_pids(deployment: ServicesDeployment) -> dict[str, int]:
    """The Redis server's and the nginx worker's pids (for CPU accounting), where found."""
    import psutil

    found = {}
    port = str(urlsplit(deployment.stack.redis_url).port)
    for proc in psutil.process_iter(["name", "cmdline"]):
        if proc.info["name"] == "redis-server" and any(port in part for part in proc.info["cmdline"] or []):
            found["redis"] = proc.pid
    gateway = deployment.running.get("gateway")
    if gateway is not None:
        workers = psutil.Process(gateway.pid).children()
        if workers:
            found["nginx"] = workers[0].pid
    return found
