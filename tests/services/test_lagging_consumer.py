"""A consumer on v1 beside producers on v2, in services mode (issue 13): during a rolling
deployment inventory's code is taken to read ``orders.order_cancelled`` at v1 only
(``WAYBILL_LAGGING``), while orders publishes v2. The topology feeds inventory's queue
through the translator (``waybill.translator``, its own process under inventory's broker
user), which gives it every cancellation downcast to v1: every order completes, every
cancellation gives its stock back, nothing is dead-lettered; then the lag is rolled back
and inventory reads from the exchanges again."""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from amqp.exceptions import AccessRefused
from kombu import Connection, Queue

from launcher.deployment import CONTEXTS, processes
from launcher.polling import wait_for
from waybill import bus, contexts
from waybill.translator import Translator

from .support import FLOW_TIMEOUT, client, place, product, query, wait_confirmed

pytestmark = pytest.mark.xdist_group("services")

LAG = "inventory:orders.order_cancelled@1"
TRANSLATOR = "inventory-translator"
TRANSLATOR_QUEUE = "waybill.translator.inventory"


STOCK = 60


def _keep_placing(deployment, tokens, sku: str, until: threading.Event) -> list[str]:
    """One order after another until ``until`` (at most STOCK - 8); their ids."""
    placed = []
    with client(deployment, tokens, "alice") as alice:
        while not until.is_set() and len(placed) < STOCK - 8:
            response = alice.post("/api/v1/orders/", json={"lines": [{"sku": sku, "quantity": 1}]})
            assert response.status_code == 202, response.text
            placed.append(response.json()["id"])
    return placed


def _declare_topology(deployment) -> None:
    stack = deployment.stack
    stack.manage("declare_topology", env=stack.env(contexts=CONTEXTS, broker="admin", service_name="setup"))


def _queued(deployment, queue: str) -> int:
    """Messages in ``queue``; raises the broker's NOT_FOUND if there is no such queue."""
    with Connection(deployment.stack.broker_urls["admin"]) as connection:
        return connection.default_channel.queue_declare(queue=queue, passive=True).message_count


def _cancel(api: httpx.Client, order_id: str) -> None:
    etag = api.get(f"/api/v1/orders/{order_id}/").headers["ETag"]
    response = api.post(f"/api/v1/orders/{order_id}/cancel/", headers={"If-Match": etag})
    assert response.status_code == 202, response.text


def _cancellations_read(deployment, order_ids: list[str]) -> dict[str, int]:
    """Order id -> the version of its cancellation as inventory's inbox kept it (as given)."""
    rows = query(deployment.stack.database_urls["inventory"],
                 "SELECT envelope->>'aggregate_id', (envelope->>'schema_version')::int FROM inventory_inboxmessage "
                 "WHERE message_type = 'orders.order_cancelled' AND status = 'processed' "
                 "AND envelope->>'aggregate_id' = ANY(%s)", (order_ids,))
    return dict(rows)


def _dead_letters(deployment) -> int:
    return query(deployment.stack.database_urls["inventory"], "SELECT count(*) FROM inventory_deadletter")[0][0]


def _stock(deployment, sku: str) -> tuple[int, int]:
    return query(deployment.stack.database_urls["inventory"],
                 "SELECT on_hand, reserved FROM inventory_product WHERE sku = %s", (sku,))[0]


def test_a_consumer_on_v1_beside_producers_on_v2_loses_nothing(deployment, tokens):
    stack = deployment.stack
    dead_before = _dead_letters(deployment)
    sku = product(deployment, tokens, on_hand=STOCK)
    # Orders keep coming while the lag is rolled in, the topology first (the translator's
    # queue is bound before inventory's own bindings go), then the translator: a
    # reservation reaches inventory directly, through the translator, or both (its inbox
    # drops the second), never not.
    switched = threading.Event()
    placing = ThreadPoolExecutor(1).submit(_keep_placing, deployment, tokens, sku, switched)
    stack.lagging = LAG
    try:
        _declare_topology(deployment)
        deployment.specs[TRANSLATOR] = {p.name: p for p in processes(lagging=LAG)}[TRANSLATOR]
        deployment.start_process(TRANSLATOR)
        switched.set()
        order_ids = placing.result(timeout=FLOW_TIMEOUT) + place(deployment, tokens, sku, 8)
        wait_confirmed(deployment, order_ids)
        cancelled = order_ids[:6]
        with client(deployment, tokens, "alice") as alice:
            for order_id in cancelled:
                _cancel(alice, order_id)
        reserved = len(order_ids) - len(cancelled)
        wait_for(lambda: _stock(deployment, sku) == (STOCK, reserved), FLOW_TIMEOUT,
                 "every cancellation to give its unit back",
                 describe=lambda: deployment.log_tail(TRANSLATOR, lines=20))

        # Inventory was given v1, as code that knows nothing newer must be: its inbox keeps
        # what it was given.
        assert _cancellations_read(deployment, cancelled) == dict.fromkeys(cancelled, 1)
        assert _dead_letters(deployment) == dead_before
    finally:
        # Rolled back the way that keeps order (bus._stop_lagging; no traffic here, as with
        # the relays stopped): the translator empties its queue and stops; then the topology
        # step binds inventory to the exchanges again and deletes the translator's queue.
        stack.lagging = ""
        if TRANSLATOR in deployment.specs:
            wait_for(lambda: _queued(deployment, TRANSLATOR_QUEUE) == 0, FLOW_TIMEOUT, "the translator's queue to empty")
            deployment.remove(TRANSLATOR)
            del deployment.specs[TRANSLATOR]
        _declare_topology(deployment)

    with pytest.raises(Exception, match="NOT_FOUND"):
        _queued(deployment, TRANSLATOR_QUEUE)
    # Straight from the exchange again: the cancellation is kept as published (v2), and
    # inventory's own read path downcasts it.
    last = order_ids[-1]  # not among the cancelled: eight came after them
    with client(deployment, tokens, "alice") as alice:
        _cancel(alice, last)
    wait_for(lambda: _stock(deployment, sku) == (STOCK, reserved - 1), FLOW_TIMEOUT,
             "the last cancellation to give its unit back")
    assert _cancellations_read(deployment, [last]) == {last: 2}
    assert _dead_letters(deployment) == dead_before


def test_only_a_consumers_own_context_may_publish_copies_for_it(broker_urls):
    """The translator publishes under its context's broker user: to its own queues' keys
    of ``waybill.translated`` alone (RabbitMQ topic permissions, launcher.provision). Probed
    with a partition nobody binds (the deployment runs one), so nothing is delivered."""
    with Connection(broker_urls["admin"]) as admin:
        bus.declare(admin)
    probe = "waybill.inventory.p7"
    with Connection(broker_urls["inventory"], transport_options={"confirm_publish": True}) as own:
        own.Producer(exchange=bus.TRANSLATED, auto_declare=False).publish({"probe": True}, routing_key=probe)
    with Connection(broker_urls["orders"], transport_options={"confirm_publish": True}) as other, \
            pytest.raises(AccessRefused, match="ACCESS_REFUSED"):
        other.Producer(exchange=bus.TRANSLATED, auto_declare=False).publish({"probe": True}, routing_key=probe)


def test_a_copy_no_queue_takes_is_held_and_published_again_never_dropped(settings, broker_urls, caplog):
    """A translator whose consumer's queue is not bound to ``waybill.translated`` (the
    topology was not declared for the lag): RabbitMQ returns the copy (mandatory), and the
    translator keeps the message unacked and publishes it again until a queue takes it.
    On a probe consumer of its own, so the deployment's queues are not touched."""
    probe = dataclasses.replace(contexts.get("inventory"), name="lagprobe")
    settings.WAYBILL_BROKER_URL = broker_urls["admin"]
    settings.WAYBILL_BROKER_DECLARE = False
    settings.WAYBILL_LAGGING = ("lagprobe:orders.order_cancelled@1",)
    stop = threading.Event()
    with Connection(broker_urls["admin"]) as admin:
        bus.declare(admin)
        channel = admin.default_channel
        source = bus.translator_queue(probe, declare=True)(channel)
        source.queue_declare()  # without its bindings: the probe is fed by hand below
        target = Queue("waybill.lagprobe", durable=True, queue_arguments=bus.QUEUE_ARGUMENTS)(channel)
        target.declare()  # not bound to waybill.translated
        try:
            body = json.dumps({"id": str(uuid.uuid4()), "type": "orders.order_placed"})
            admin.Producer(channel).publish(body, routing_key=source.name, content_type=bus.JSON)
            thread = threading.Thread(target=Translator(probe).run, args=(stop,), daemon=True)
            with caplog.at_level(logging.ERROR, logger="waybill.translator"):
                thread.start()
                wait_for(lambda: "routes nothing to waybill.lagprobe" in caplog.text, FLOW_TIMEOUT,
                         "the translator to find its copy returned")
                assert source.queue_declare(passive=True).message_count == 0  # held unacked, not dropped
                channel.queue_bind(queue=target.name, exchange=bus.TRANSLATED.name, routing_key=target.name)
                wait_for(lambda: target.queue_declare(passive=True).message_count == 1, FLOW_TIMEOUT,
                         "the copy to be published again once a queue takes it")
            stop.set()
            thread.join(20)
            assert not thread.is_alive()
            assert source.queue_declare(passive=True).message_count == 0  # acked: it does not come again
            assert json.loads(target.get(no_ack=True).body) == json.loads(body)  # as it came: not a listed type
        finally:
            stop.set()
            channel.queue_delete(queue=source.name)
            channel.queue_delete(queue=target.name)
