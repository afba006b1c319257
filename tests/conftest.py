"""Real servers for the services suite: private PostgreSQL, RabbitMQ and Redis instances,
and the services deployment on them.

Each fixture starts its server once per test session (per xdist worker) on free
127.0.0.1 ports in a pytest temp folder, and stops it at the end. A missing server is a
failure, not a skip, so a machine without them cannot look green; set
WAYBILL_SKIP_SERVICES=1 to skip instead (e.g. on a laptop without the packages).

Tests that use them carry ``xdist_group("services")`` so that one worker runs them all on
one set of servers and one deployment.
"""

from __future__ import annotations

import os

import pytest

from launcher.deployment import processes
from launcher.provision import provision_postgres, provision_rabbitmq
from launcher.servers import PostgresServer, RabbitMQServer, RedisServer, missing_packages
from launcher.stack import Stack, metrics_addresses
from launcher.topology import AT_SCALE, Servers

from launcher.services import ServicesDeployment

# What these fixtures run (nginx, which missing_packages() also knows, is not needed here).
SERVICE_PACKAGES = ("postgresql", "rabbitmq-server", "redis-server")


def _require_servers(packages: tuple[str, ...] = SERVICE_PACKAGES) -> None:
    missing = missing_packages(packages)
    if not missing:
        return
    message = (
        f"services suite: missing Debian packages {', '.join(missing)}. Install them with "
        f"`sudo apt-get install -y {' '.join(missing)}` (or run bin/ensure-servers), or "
        "set WAYBILL_SKIP_SERVICES=1 to skip these tests."
    )
    if os.environ.get("WAYBILL_SKIP_SERVICES") == "1":
        pytest.skip(message)
    pytest.fail(message, pytrace=False)


def pytest_runtest_setup(item):
    """Refuse a test of a ``--dist loadgroup`` run whose group was lost: pytest-xdist carries
    a test's group to its scheduler in the test's id (``...@services``, found as xdist's own
    scheduler finds it), and a pytest that drops it (9.2 with xdist 3.8:
    pytest-dev/pytest-xdist#1386) spreads each group over every worker without a word, where
    every worker then starts deployments of its own. Checked here, as the test starts, because
    a collection hook's error never reaches xdist's controller."""
    nodeid = item.nodeid
    if (getattr(item.config.option, "loadgroup", False) and item.get_closest_marker("xdist_group")
            and nodeid.rfind("@") <= nodeid.rfind("]")):
        pytest.fail("--dist loadgroup lost this test's xdist_group: pytest-xdist cannot group tests under "
                    "this pytest (requirements-test.txt)", pytrace=False)


@pytest.fixture
def launcher_packages() -> None:
    """What `make up` runs: the servers and nginx (tests of launcher.up itself)."""
    _require_servers(SERVICE_PACKAGES + ("nginx",))


@pytest.fixture
def private_redis(tmp_path):
    """A Redis server for one test alone, for a test that counts what reaches it."""
    _require_servers(("redis-server",))
    with RedisServer(tmp_path / "redis") as server:
        yield server


@pytest.fixture(scope="session")
def postgres(tmp_path_factory):
    _require_servers()
    with PostgresServer(tmp_path_factory.mktemp("postgres"), fast=True, settings={"max_connections": "300"}) as server:
        yield server


@pytest.fixture(scope="session")
def rabbitmq(tmp_path_factory):
    _require_servers()
    # With the management plugin, as `make up` runs it: the console's queue figures.
    with RabbitMQServer(tmp_path_factory.mktemp("rabbitmq"), plugins=("rabbitmq_management",)) as server:
        yield server


@pytest.fixture(scope="session")
def redis(tmp_path_factory):
    _require_servers()
    with RedisServer(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture(scope="session")
def pg_urls(postgres) -> dict[str, str]:
    """{"default", "orders", "inventory", "readmodels"} -> postgresql:// URL of its own role."""
    return provision_postgres(postgres)


@pytest.fixture(scope="session")
def broker_urls(rabbitmq) -> dict[str, str]:
    """{"admin", "orders", "inventory", "readmodels"} -> amqp:// URL on the waybill vhost."""
    return provision_rabbitmq(rabbitmq)


# The shared deployment runs two readmodels web replicas behind the gateway (the one that
# holds the WebSockets): every test that follows a push goes through either, and
# tests/services/test_replicas.py takes one out and puts it back.
SERVICES_REPLICAS = "readmodels-web=2"


# These tests stop relays, workers and the broker on purpose: with the default deadlines a
# slow machine would see sagas compensate (correctly) instead of the deliveries they check.
# Deadlines have their own tests (tests/flows/test_saga.py, tests/e2e/test_payments.py).
RELAXED = {"WAYBILL_THROTTLE_ORDERS": "100000/minute", "WAYBILL_THROTTLE_AUTH": "100000/minute",
           "WAYBILL_SAGA_RESERVE_SECONDS": "900", "WAYBILL_SAGA_PAYMENT_SECONDS": "900",
           "WAYBILL_SAGA_RELEASE_SECONDS": "900"}


@pytest.fixture(scope="session")
def services_deployment(pg_urls, broker_urls, rabbitmq, redis, tmp_path_factory):
    """Every context as its own processes, on its own database and broker user, behind
    the nginx gateway (``base_url``). Tests that kill a process start it again. As under
    `make up`, the shell holds the management API and every process serves its metrics."""
    stack = Stack(workdir=tmp_path_factory.mktemp("services"), database_urls=pg_urls,
                  broker_urls=broker_urls, redis_url=redis.url, broker_management_url=rabbitmq.management_url,
                  metrics_addresses=metrics_addresses(processes(replicas=SERVICES_REPLICAS)),
                  extra=RELAXED)
    stack.prepare()
    deployment = ServicesDeployment(stack, stack.workdir, replicas=SERVICES_REPLICAS).start()
    yield deployment
    deployment.stop()


# The deployment laid out as at scale (launcher.topology.AT_SCALE; README, "Running at
# scale"). Its own servers and group (tests/services/test_at_scale.py kills its broker
# nodes), so it runs beside the shared one. Module scope: its one module's tests done, its
# three broker nodes, two PostgreSQL servers and processes stop, rather than idling beside
# the rest of the worker's tests.
@pytest.fixture(scope="module")
def scaled_servers(tmp_path_factory):
    _require_servers()
    with Servers(tmp_path_factory.mktemp("scaled"), AT_SCALE) as servers:
        yield servers


@pytest.fixture(scope="module")
def scaled_deployment(scaled_servers, tmp_path_factory):
    stack = Stack(workdir=tmp_path_factory.mktemp("scaled-services"), database_urls=scaled_servers.database_urls(),
                  broker_urls=scaled_servers.broker_urls(), redis_url=scaled_servers.redis.url,
                  broker_management_url=scaled_servers.broker.management_url,
                  metrics_addresses=metrics_addresses(processes(replicas=AT_SCALE.replicas)), extra=RELAXED)
    stack.prepare()
    deployment = ServicesDeployment(stack, stack.workdir, replicas=AT_SCALE.replicas).start()
    yield deployment
    deployment.stop()
