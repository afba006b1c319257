"""The deployment laid out as at scale (``launcher.topology.AT_SCALE``): a three-node
RabbitMQ cluster with every quorum queue and the history stream on all three nodes,
inventory's database on a PostgreSQL server of its own, replicas of orders' and the read
side's web processes, of orders' relay and of inventory's worker. A broker node dies under a burst of orders: every process
fails over to the others and no order is lost or applied twice."""

from __future__ import annotations

from urllib.parse import urlsplit

import httpx
import pytest

from launcher.polling import wait_for
from waybill.historylimits import STREAM
from .support import FLOW_TIMEOUT, assert_applied_once, place, product, query, sign_in, wait_confirmed

pytestmark = pytest.mark.xdist_group("scaled")


@pytest.fixture(scope="module")
def deployment(scaled_deployment):
    return scaled_deployment


@pytest.fixture(scope="module")
def tokens(deployment) -> dict[str, str]:
    return sign_in(deployment)


def _management(servers, path: str):
    """The cluster's management API as the admin (from any running node)."""
    for node in servers.broker_nodes:
        if node.running:
            url = urlsplit(node.management_url)
            response = httpx.get(f"http://{url.hostname}:{url.port}/api/{path}",
                                 auth=(url.username, url.password), timeout=10)
            response.raise_for_status()
            return response.json()
    raise AssertionError("no broker node runs")


def test_every_queue_of_the_topology_and_the_history_is_replicated_on_every_node(deployment, scaled_servers):
    nodes = set(scaled_servers.broker.node_names)
    assert scaled_servers.broker.members() == nodes
    queues = {q["name"]: q for q in _management(scaled_servers, "queues/waybill")}
    replicated = {name: q for name, q in queues.items() if q.get("type") in ("quorum", "stream")}
    assert STREAM in replicated and "waybill.orders" in replicated and "waybill.inventory" in replicated
    for name in replicated:
        members = set(_management(scaled_servers, f"queues/waybill/{name}")["members"])
        assert members == nodes, f"{name} lives on {sorted(members)} only"
    # Every process was given every node, so its connections spread over the cluster.
    urls = {name: deployment.stack.process_env(spec)["WAYBILL_BROKER_URL"] for name, spec in deployment.specs.items()
            if spec.kind != "sandbox"}
    assert all(len(url.split(";")) == 3 for url in urls.values())
    assert len({url.split(";")[0] for url in urls.values()}) > 1
    # Celery declares nothing beyond each worker's own task queue (no delayed delivery,
    # which its broker user may not declare: waybill.worker.Consumer).
    for name, spec in deployment.specs.items():
        if spec.kind == "worker":
            log = (deployment.logs / f"{name}.log").read_text()
            assert "celery_delayed" not in log and "delayed delivery" not in log, deployment.log_tail(name)


def test_orders_and_inventory_keep_their_data_on_two_postgresql_servers(deployment, tokens):
    urls = deployment.stack.database_urls
    servers = {alias: urlsplit(url).port for alias, url in urls.items()}
    assert servers["inventory"] != servers["orders"] == servers["default"] == servers["readmodels"]
    sku = product(deployment, tokens, on_hand=20)
    order_ids = place(deployment, tokens, sku, 5)
    wait_confirmed(deployment, order_ids)
    assert query(urls["inventory"], "SELECT reserved FROM inventory_product WHERE sku = %s", (sku,)) == [(5,)]


def test_a_broker_node_killed_under_a_burst_loses_no_order_and_its_clients_fail_over(deployment, tokens,
                                                                                     scaled_servers):
    # The node that leads the most queues and holds the most connections: its loss moves
    # the most (elections of new leaders, and clients failing over).
    led = [q.get("leader", q.get("node")) for q in _management(scaled_servers, "queues/waybill")]
    connected = [c["node"] for c in _management(scaled_servers, "connections")]
    busiest = max(scaled_servers.broker.node_names, key=lambda node: (led.count(node), connected.count(node)))
    victim = next(node for node in scaled_servers.broker_nodes if node.node == busiest)
    sku = product(deployment, tokens, on_hand=1000)
    pids = deployment.pids()
    first = place(deployment, tokens, sku, 20)
    victim.kill()
    try:
        during = place(deployment, tokens, sku, 40)
        wait_confirmed(deployment, first + during)
    finally:
        victim.start()
    wait_for(lambda: scaled_servers.broker.members() == set(scaled_servers.broker.node_names), FLOW_TIMEOUT,
             "the node to rejoin its cluster")
    assert_applied_once(deployment, sku, first + during)
    assert deployment.pids() == pids, "a process died with the broker node instead of failing over"
    # Back as a replica of what it held: every quorum queue and the history have it online again.
    def back_online() -> bool:
        queues = [q for q in _management(scaled_servers, "queues/waybill") if q.get("type") in ("quorum", "stream")]
        return all(busiest in q.get("online", []) for q in queues)

    wait_for(back_online, FLOW_TIMEOUT, f"{busiest} to be online in every replicated queue")
