"""What the services tests do to a running deployment: sign in, create a product, place
orders, read a context's database, wait for orders to be confirmed on the read side."""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
from kombu import Connection
from prometheus_client.parser import text_string_to_metric_families

from chaos.checks import query  # noqa: F401  (re-exported: the services tests read databases as the chaos run does)
from launcher.polling import wait_for

FLOW_TIMEOUT = 90.0


def metric(address: str, name: str, **labels: str) -> float:
    """The sum of sample ``name`` with ``labels`` that the process at ``address`` serves."""
    text = httpx.get(f"http://{address}/metrics", timeout=10).text
    return sum(sample.value for family in text_string_to_metric_families(text) for sample in family.samples
               if sample.name == name and labels.items() <= sample.labels.items())


def consumers(deployment, queue: str) -> int:
    """Consumers attached to ``queue`` as the broker counts them."""
    with Connection(deployment.stack.broker_urls["admin"]) as connection:
        return connection.default_channel.queue_declare(queue=queue, passive=True).consumer_count


def sign_in(deployment, users=("alice", "admin")) -> dict[str, str]:
    """An API token per demo user."""
    result = {}
    for user in users:
        # A password hash takes a while; on a machine busy with a whole test run, longer than httpx's 5 s.
        response = httpx.post(f"{deployment.base_url}/api/v1/auth/token/",
                              json={"username": user, "password": "waybill-demo"}, timeout=30)
        assert response.status_code == 200, response.text
        result[user] = response.json()["token"]
    return result


def client(deployment, tokens, user) -> httpx.Client:
    return httpx.Client(base_url=deployment.base_url, headers={"Authorization": f"Token {tokens[user]}"}, timeout=30)


def product(deployment, tokens, on_hand: int) -> str:
    """A new product's SKU, once orders knows of it."""
    sku = f"FAULT-{uuid.uuid4().hex[:8].upper()}"
    with client(deployment, tokens, "admin") as admin:
        response = admin.post("/api/v1/inventory/products/",
                              json={"sku": sku, "name": "Fault test", "price": "1.00", "on_hand": on_hand})
    assert response.status_code == 201, response.text
    # Orders validates SKUs against its copy of the catalog: wait until it has this one.
    wait_for(lambda: query(deployment.stack.database_urls["orders"],
                           "SELECT 1 FROM orders_productcopy WHERE sku = %s", (sku,)),
             FLOW_TIMEOUT, f"orders to learn of {sku}")
    return sku


def place(deployment, tokens, sku: str, count: int) -> list[str]:
    """Place ``count`` orders of one unit as alice, eight at a time; returns their ids."""
    def one(_):
        with client(deployment, tokens, "alice") as alice:
            response = alice.post("/api/v1/orders/", json={"lines": [{"sku": sku, "quantity": 1}]})
        assert response.status_code == 202, response.text
        return response.json()["id"]

    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(one, range(count)))


def wait_confirmed(deployment, order_ids: list[str]) -> None:
    url = deployment.stack.database_urls["readmodels"]

    def confirmed() -> bool:
        rows = query(url, "SELECT count(*) FROM readmodels_ordersummary WHERE status = 'CONFIRMED' "
                          "AND order_id = ANY(%s::uuid[])", (order_ids,))
        return rows[0][0] == len(order_ids)

    try:
        wait_for(confirmed, FLOW_TIMEOUT, f"{len(order_ids)} orders to be CONFIRMED on the read side")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{deployment.log_tail(lines=15)}") from None


def assert_applied_once(deployment, sku: str, order_ids: list[str]) -> list[str]:
    """Stock reserved once per order, one inbox row per order; returns who applied them."""
    inventory = deployment.stack.database_urls["inventory"]
    assert query(inventory, "SELECT reserved FROM inventory_product WHERE sku = %s", (sku,)) == [(len(order_ids),)]
    rows = query(inventory, "SELECT processed_by FROM inventory_inboxmessage WHERE message_type = "
                            "'inventory.reserve_stock' AND envelope->>'aggregate_id' = ANY(%s)", (order_ids,))
    assert len(rows) == len(order_ids)
    return [row[0] for row in rows]


def in_history(order_ids: list[str], message_type: str = "orders.order_placed") -> set[str]:
    """Which of ``order_ids`` the event history has a ``message_type`` of (with the test
    process's settings on the deployment's broker: the ``on_the_broker`` fixture)."""
    from waybill.history import StreamHistory

    found = set()
    for batch in StreamHistory().read():
        for recorded in batch:
            envelope = json.loads(recorded.received.body)
            # The history keeps whatever was published, the isolation tests' probes too.
            if isinstance(envelope, dict) and envelope.get("type") == message_type:
                found.add(envelope.get("aggregate_id"))
    return found & set(order_ids)


@contextlib.contextmanager
def webhook_endpoint(deployment, tokens, *event_types: str, user: str = "admin") -> Iterator[dict]:
    """A webhook endpoint of ``user`` for ``event_types``, once the webhooks worker has bound
    them (its queue binds only what some endpoint wants); deleted afterwards, and returns
    once the worker has reconciled the deletion, so that the next test does not race that
    reconcile (it unbinds every type no endpoint wants, a binding the test made too)."""
    with client(deployment, tokens, user) as api:
        created = api.post("/api/v1/webhooks/", json={"url": "https://hooks.example.com/services-test",
                                                      "event_types": list(event_types)})
        assert created.status_code == 201, created.text
        endpoint = created.json()
        try:
            wait_for(lambda: api.get(f"/api/v1/webhooks/{endpoint['id']}/").json()["receiving"], FLOW_TIMEOUT,
                     "the webhooks worker to bind the endpoint's types",
                     describe=lambda: deployment.log_tail("webhooks-worker", lines=10))
            yield endpoint
        finally:
            deleted = api.delete(f"/api/v1/webhooks/{endpoint['id']}/")
        # Only when the test passed: a failure's own error is not to wait behind this.
        assert deleted.status_code == 204, deleted.text
        webhooks_db = deployment.stack.database_urls["webhooks"]
        wait_for(lambda: query(webhooks_db, "SELECT bound_types FROM webhooks_webhookendpoint WHERE id = %s",
                               (endpoint["id"],)) == [([],)], FLOW_TIMEOUT,
                 "the webhooks worker to unbind the deleted endpoint's types",
                 describe=lambda: deployment.log_tail("webhooks-worker", lines=10))
