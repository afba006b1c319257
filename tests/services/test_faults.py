"""Services mode under failure, on real PostgreSQL, RabbitMQ and Redis: every context in
its own processes and database. Whatever dies when, every committed message is delivered
and applied once (invariants 2 and 3), and competing workers share a queue."""

from __future__ import annotations

import signal

import pytest

from launcher.polling import wait_for as _wait

from .support import FLOW_TIMEOUT, assert_applied_once, consumers, place, product, query, wait_confirmed

pytestmark = pytest.mark.xdist_group("services")


def test_competing_workers_share_a_queue_and_apply_each_message_once(deployment, tokens):
    deployment.start_process("inventory-worker", as_name="inventory-worker-2")
    try:
        # Started is not yet consuming: orders placed before the second worker attaches may
        # all go to the first (CI saw it once).
        _wait(lambda: consumers(deployment, "waybill.inventory") == 2, FLOW_TIMEOUT,
              "the second inventory worker to attach")
        sku = product(deployment, tokens, on_hand=1000)
        order_ids = place(deployment, tokens, sku, 80)
        wait_confirmed(deployment, order_ids)
        workers = set(assert_applied_once(deployment, sku, order_ids))
        assert len(workers) == 2, f"one worker did all the work: {workers}"
    finally:
        deployment.remove("inventory-worker-2")


def test_relay_killed_mid_batch_loses_nothing_and_duplicates_nothing(deployment, tokens):
    orders_db = deployment.stack.database_urls["orders"]
    sku = product(deployment, tokens, on_hand=1000)
    # No relay, and no orders worker, which runs the relay's backstop every
    # WAYBILL_RELAY_SWEEP_SECONDS: the orders pile up in the outbox. The worker is stopped,
    # not killed: this test is about the relay.
    deployment.kill("orders-relay")
    deployment.kill("orders-worker", signal.SIGTERM)
    order_ids = place(deployment, tokens, sku, 150)
    pending = "SELECT count(*) FROM orders_outboxmessage WHERE sent_at IS NULL"
    assert query(orders_db, pending)[0][0] >= 150

    # One row per batch, so the kill lands between publishing and marking somewhere.
    deployment.start_process("orders-relay", env={"WAYBILL_RELAY_BATCH_SIZE": "1"})
    _wait(lambda: query(orders_db, pending)[0][0] <= 120, FLOW_TIMEOUT, "the relay to get going")
    deployment.kill("orders-relay")
    left = query(orders_db, pending)[0][0]
    assert left > 0, "the relay finished before it was killed; the test proved nothing"

    deployment.start_process("orders-relay")
    deployment.start_process("orders-worker")
    wait_confirmed(deployment, order_ids)
    assert_applied_once(deployment, sku, order_ids)


def test_worker_killed_mid_message_loses_nothing_and_duplicates_nothing(deployment, tokens):
    inventory_db = deployment.stack.database_urls["inventory"]
    sku = product(deployment, tokens, on_hand=1000)
    order_ids = place(deployment, tokens, sku, 120)

    def some_applied() -> bool:
        return query(inventory_db, "SELECT reserved FROM inventory_product WHERE sku = %s", (sku,))[0][0] >= 10

    _wait(some_applied, FLOW_TIMEOUT, "the inventory worker to get going")
    deployment.kill("inventory-worker")  # SIGKILL: no goodbye, unacked messages go back
    deployment.start_process("inventory-worker")
    wait_confirmed(deployment, order_ids)
    assert_applied_once(deployment, sku, order_ids)


def test_broker_restart_keeps_the_backlog_in_the_outbox(deployment, tokens, rabbitmq):
    sku = product(deployment, tokens, on_hand=1000)
    rabbitmq.stop()
    try:
        # The web service still takes orders: they wait in the outbox, committed.
        order_ids = place(deployment, tokens, sku, 20)
    finally:
        rabbitmq.start()
    wait_confirmed(deployment, order_ids)
    assert_applied_once(deployment, sku, order_ids)
