"""Services mode under failure, on real PostgreSQL, RabbitMQ and Redis: every context in
its own processes and database. Whatever dies when, every committed message is delivered
and applied once (invariants 2 and 3), and competing workers share a queue."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx
import psycopg
import pytest

from launcher.polling import wait_for as _wait

pytestmark = pytest.mark.xdist_group("services")
FLOW_TIMEOUT = 90.0


@pytest.fixture(scope="module")
def deployment(services_deployment):
    return services_deployment


@pytest.fixture(scope="module")
def tokens(deployment) -> dict[str, str]:
    result = {}
    for user in ("alice", "admin"):
        response = httpx.post(f"{deployment.base_url}/api/v1/auth/token/",
                              json={"username": user, "password": "waybill-demo"})
        assert response.status_code == 200, response.text
        result[user] = response.json()["token"]
    return result


def _client(deployment, tokens, user) -> httpx.Client:
    return httpx.Client(base_url=deployment.base_url, headers={"Authorization": f"Token {tokens[user]}"}, timeout=30)


def _query(url: str, sql: str, params=()) -> list[tuple]:
    with psycopg.connect(url) as connection:
        return connection.execute(sql, params).fetchall()


def _product(deployment, tokens, on_hand: int) -> str:
    sku = f"FAULT-{uuid.uuid4().hex[:8].upper()}"
    with _client(deployment, tokens, "admin") as admin:
        response = admin.post("/api/v1/inventory/products/",
                              json={"sku": sku, "name": "Fault test", "price": "1.00", "on_hand": on_hand})
    assert response.status_code == 201, response.text
    # Orders validates SKUs against its copy of the catalog: wait until it has this one.
    _wait(lambda: _query(deployment.stack.database_urls["orders"],
                         "SELECT 1 FROM orders_productcopy WHERE sku = %s", (sku,)),
          FLOW_TIMEOUT, f"orders to learn of {sku}")
    return sku


def _place(deployment, tokens, sku: str, count: int) -> list[str]:
    def one(_):
        with _client(deployment, tokens, "alice") as alice:
            response = alice.post("/api/v1/orders/", json={"lines": [{"sku": sku, "quantity": 1}]})
        assert response.status_code == 202, response.text
        return response.json()["id"]

    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(one, range(count)))


def _wait_confirmed(deployment, order_ids: list[str]) -> None:
    url = deployment.stack.database_urls["readmodels"]

    def confirmed() -> bool:
        rows = _query(url, "SELECT count(*) FROM readmodels_ordersummary WHERE status = 'CONFIRMED' "
                           "AND order_id = ANY(%s::uuid[])", (order_ids,))
        return rows[0][0] == len(order_ids)

    try:
        _wait(confirmed, FLOW_TIMEOUT, f"{len(order_ids)} orders to be CONFIRMED on the read side")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{deployment.log_tail(lines=15)}") from None


def _assert_applied_once(deployment, sku: str, order_ids: list[str]) -> list[str]:
    """Stock reserved once per order, one inbox row per order; returns who applied them."""
    inventory = deployment.stack.database_urls["inventory"]
    assert _query(inventory, "SELECT reserved FROM inventory_product WHERE sku = %s", (sku,)) == [(len(order_ids),)]
    rows = _query(inventory, "SELECT processed_by FROM inventory_inboxmessage WHERE message_type = "
                             "'inventory.reserve_stock' AND envelope->>'aggregate_id' = ANY(%s)", (order_ids,))
    assert len(rows) == len(order_ids)
    return [row[0] for row in rows]


def test_competing_workers_share_a_queue_and_apply_each_message_once(deployment, tokens):
    deployment.start_process("inventory-worker", as_name="inventory-worker-2")
    try:
        sku = _product(deployment, tokens, on_hand=1000)
        order_ids = _place(deployment, tokens, sku, 80)
        _wait_confirmed(deployment, order_ids)
        workers = set(_assert_applied_once(deployment, sku, order_ids))
        assert len(workers) == 2, f"one worker did all the work: {workers}"
    finally:
        deployment.remove("inventory-worker-2")


def test_relay_killed_mid_batch_loses_nothing_and_duplicates_nothing(deployment, tokens):
    orders_db = deployment.stack.database_urls["orders"]
    sku = _product(deployment, tokens, on_hand=1000)
    # No relay and no sweeping beat: the orders pile up in the outbox.
    deployment.kill("orders-relay")
    deployment.kill("orders-beat")
    order_ids = _place(deployment, tokens, sku, 150)
    pending = "SELECT count(*) FROM orders_outboxmessage WHERE sent_at IS NULL"
    assert _query(orders_db, pending)[0][0] >= 150

    # One row per batch, so the kill lands between publishing and marking somewhere.
    deployment.start_process("orders-relay", env={"WAYBILL_RELAY_BATCH_SIZE": "1"})
    _wait(lambda: _query(orders_db, pending)[0][0] <= 120, FLOW_TIMEOUT, "the relay to get going")
    deployment.kill("orders-relay")
    left = _query(orders_db, pending)[0][0]
    assert left > 0, "the relay finished before it was killed; the test proved nothing"

    deployment.start_process("orders-relay")
    deployment.start_process("orders-beat")
    _wait_confirmed(deployment, order_ids)
    _assert_applied_once(deployment, sku, order_ids)


def test_worker_killed_mid_message_loses_nothing_and_duplicates_nothing(deployment, tokens):
    inventory_db = deployment.stack.database_urls["inventory"]
    sku = _product(deployment, tokens, on_hand=1000)
    order_ids = _place(deployment, tokens, sku, 120)

    def some_applied() -> bool:
        return _query(inventory_db, "SELECT reserved FROM inventory_product WHERE sku = %s", (sku,))[0][0] >= 10

    _wait(some_applied, FLOW_TIMEOUT, "the inventory worker to get going")
    deployment.kill("inventory-worker")  # SIGKILL: no goodbye, unacked messages go back
    deployment.start_process("inventory-worker")
    _wait_confirmed(deployment, order_ids)
    _assert_applied_once(deployment, sku, order_ids)


def test_broker_restart_keeps_the_backlog_in_the_outbox(deployment, tokens, rabbitmq):
    sku = _product(deployment, tokens, on_hand=1000)
    rabbitmq.stop()
    try:
        # The web service still takes orders: they wait in the outbox, committed.
        order_ids = _place(deployment, tokens, sku, 20)
    finally:
        rabbitmq.start()
    _wait_confirmed(deployment, order_ids)
    _assert_applied_once(deployment, sku, order_ids)
