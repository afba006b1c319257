"""Replica counts: from a context's manifest or ``WAYBILL_REPLICAS``, each replica a process
of its own (its own port, Celery node and data folder), one compose service run N times,
and the gateway's upstream holding every web replica with its passive health check."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from launcher import compose
from launcher.deployment import MANIFESTS, parse_replicas, processes
from launcher.gateway import nginx_conf, upstreams
from launcher.stack import Stack, spread
from launcher.topology import Topology
from waybill.manifest import Context, Consumer


def test_replicas_are_named_after_their_service_and_each_is_a_process_of_its_own():
    port_of = {"orders-web": "9001", "orders-web-2": "9002"}
    deployment = {p.name: p for p in processes(port_of=port_of, replicas="orders-web=2,orders-payments-worker=2")}
    first, second = deployment["orders-web"], deployment["orders-web-2"]
    assert (first.service, first.replica, second.service, second.replica) == ("orders-web", 1, "orders-web", 2)
    assert "9001" in first.command and "9002" in second.command
    nodes = [deployment[name].command[deployment[name].command.index("-n") + 1]
             for name in ("orders-payments-worker", "orders-payments-worker-2")]
    assert nodes == ["payments@%h", "payments-2@%h"]
    assert deployment["orders-relay"].replicas == 1 and "orders-relay-2" not in deployment


def test_each_replica_keeps_its_own_data_folder_but_traces_as_its_service(tmp_path):
    stack = Stack(workdir=tmp_path, database_urls=dict.fromkeys(
        ("default", "orders", "inventory", "readmodels", "webhooks"), "postgresql://x"),
        broker_urls=dict.fromkeys(("admin", "orders", "inventory", "readmodels", "webhooks"), "amqp://x"),
        redis_url="redis://x")
    second = {p.name: p for p in processes(replicas="inventory-worker=2")}["inventory-worker-2"]
    env = stack.process_env(second)
    assert env["WAYBILL_SERVICE_NAME"] == "waybill-inventory-worker"
    assert env["WAYBILL_DATA_DIR"] == str(tmp_path / "inventory-worker-2")
    assert env["OTEL_RESOURCE_ATTRIBUTES"] == "service.instance.id=inventory-worker-2"


@pytest.mark.parametrize("value, reason", [
    ("orders-web", "is not <process>=<count"), ("orders-web=0", "is not <process>=<count"),
    ("orders-web=two", "is not <process>=<count"), ("warehouse-web=2", "does not run: ['warehouse-web']"),
    ("payment-sandbox=2", "does not run: ['payment-sandbox']"),
])
def test_a_count_that_means_nothing_is_refused_with_its_reason(value, reason):
    with pytest.raises(ValueError, match=reason.replace("[", r"\[").replace("]", r"\]")):
        processes(replicas=value)


def test_the_environment_wins_over_the_manifest(monkeypatch):
    assert parse_replicas(" orders-web=3, readmodels-web=2 ") == {"orders-web": 3, "readmodels-web": 2}
    orders = MANIFESTS["orders"]
    monkeypatch.setitem(MANIFESTS, "orders", replace(orders, replicas={"web": 2, "relay": 3}))
    counts = {p.service: p.replicas for p in processes(replicas="orders-web=4")}
    assert (counts["orders-web"], counts["orders-relay"]) == (4, 3)


def test_a_services_replicas_start_their_failover_lists_at_different_nodes():
    cluster = "amqp://a;amqp://b;amqp://c"
    firsts = [spread(cluster, "readmodels-web", replica).split(";")[0] for replica in (1, 2, 3)]
    assert sorted(firsts) == ["amqp://a", "amqp://b", "amqp://c"]
    assert sorted(spread(cluster, "orders-web").split(";")) == ["amqp://a", "amqp://b", "amqp://c"]
    assert spread("amqp://only", "orders-web", 2) == "amqp://only"


@pytest.mark.parametrize("environ, layout", [
    ({}, {"broker_nodes": 1, "servers": {"orders": "main", "inventory": "main"}}),
    ({"WAYBILL_BROKER_NODES": "3", "WAYBILL_DATABASE_SERVERS": "separate"},
     {"broker_nodes": 3, "servers": {"orders": "orders", "inventory": "inventory"}}),
    ({"WAYBILL_DATABASE_SERVERS": "orders=east, inventory=east"},
     {"broker_nodes": 1, "servers": {"orders": "east", "inventory": "east"}}),
])
def test_the_layout_is_read_from_the_environment(environ, layout):
    topology = Topology.from_environment(environ)
    assert topology.broker_nodes == layout["broker_nodes"]
    assert {alias: topology.server_of(alias) for alias in ("orders", "inventory")} == layout["servers"]
    assert topology.server_of("readmodels") == ("readmodels" if "separate" in environ.values() else "main")


@pytest.mark.parametrize("environ, reason", [
    ({"WAYBILL_BROKER_NODES": "2"}, "an odd number of at least 3"),
    ({"WAYBILL_BROKER_NODES": "three"}, "a number of nodes"),
    ({"WAYBILL_DATABASE_SERVERS": "warehouse=east"}, "databases no context has"),
    ({"WAYBILL_DATABASE_SERVERS": "orders"}, "is not <database>=<server name>"),
])
def test_a_layout_that_means_nothing_is_refused_with_its_reason(environ, reason):
    with pytest.raises(ValueError, match=reason):
        Topology.from_environment(environ)


def test_a_folder_runs_only_the_layout_its_data_was_made_with(tmp_path):
    separate = Topology.from_environment({"WAYBILL_DATABASE_SERVERS": "separate"})
    assert separate.refuses_layout_of(tmp_path) is None  # first start: recorded
    assert separate.refuses_layout_of(tmp_path) is None
    assert "make reset" in Topology(broker_nodes=3, database_servers=dict(separate.database_servers)
                                    ).refuses_layout_of(tmp_path)
    older = tmp_path / "older"
    (older / "postgres" / "pgdata").mkdir(parents=True)  # a folder from before layouts were recorded
    assert Topology().refuses_layout_of(older) is None
    assert "make reset" in Topology(broker_nodes=3).refuses_layout_of(older)


def test_a_manifest_counts_only_processes_its_context_runs():
    with pytest.raises(ValueError, match="replicas of processes it does not run"):
        Context(name="parcels", consumers=(Consumer("parcels", handlers="x:y"),), replicas={"payments-worker": 2})
    with pytest.raises(ValueError, match="whole number >= 1"):
        Context(name="parcels", consumers=(Consumer("parcels", handlers="x:y"),), replicas={"worker": 0})


def test_compose_runs_one_service_per_process_with_its_replica_count(monkeypatch):
    monkeypatch.setenv("WAYBILL_REPLICAS", "orders-web=3")
    services = compose.services()
    assert services["orders-web"]["deploy"] == {"replicas": 3}
    assert "orders-web-2" not in services and "deploy" not in services["inventory-web"]


@pytest.mark.skipif(not (shutil.which("nginx") or os.path.exists("/usr/sbin/nginx")), reason="nginx is not installed")
def test_the_gateway_holds_every_web_replica_with_a_passive_health_check(tmp_path: Path):
    port_of = {p.name: str(9000 + i) for i, p in enumerate(processes(replicas="orders-web=2")) if p.listens}
    routes = upstreams(processes(port_of=port_of, replicas="orders-web=2"), port_of)
    assert routes["orders"] == [f"127.0.0.1:{port_of['orders-web']}", f"127.0.0.1:{port_of['orders-web-2']}"]
    conf = nginx_conf(listen="127.0.0.1:8999", upstreams=routes, workdir=tmp_path)
    assert (f"upstream orders {{ server 127.0.0.1:{port_of['orders-web']} max_fails=2 fail_timeout=5s; "
            f"server 127.0.0.1:{port_of['orders-web-2']} max_fails=2 fail_timeout=5s; }}") in conf
    (tmp_path / "nginx.conf").write_text(conf)
    result = subprocess.run([shutil.which("nginx") or "/usr/sbin/nginx", "-t", "-p", str(tmp_path), "-c",
                             str(tmp_path / "nginx.conf")], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
