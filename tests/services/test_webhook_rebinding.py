"""Issue 12 on real RabbitMQ and PostgreSQL: the webhooks worker binds its queue to the
types some endpoint wants, under its own broker user, which may bind its own queues and
no one else's; an endpoint's types reach it once bound, and are unbound after it is deleted."""

from __future__ import annotations

import json

import pytest
from amqp.exceptions import AccessRefused
from kombu import Connection

from launcher.polling import wait_for
from waybill import bus

from .support import FLOW_TIMEOUT, place, product, query, wait_confirmed, webhook_endpoint

pytestmark = pytest.mark.xdist_group("services")
PROBE = "isolation.webhooks-probe"  # a routing key nobody publishes
SPARE = "inventory.stock_released"  # a type webhooks may bind that no test's endpoint wants


def _bindings(rabbitmq, queue: str) -> set[str]:
    out = rabbitmq.rabbitmqctl("list_bindings", "-p", "waybill", "--silent",
                               "source_name", "destination_name", "routing_key")
    rows = [line.split("\t") for line in out.splitlines() if line.strip()]
    return {row[2] for row in rows if len(row) == 3 and row[0] == bus.EVENTS.name and row[1] == queue}


def test_the_webhooks_user_binds_its_own_queue_to_its_types_and_nothing_else(broker_urls):
    with Connection(broker_urls["admin"]) as admin:
        bus.declare(admin)  # the topology step (its database is not reachable here: bound later)
    with Connection(broker_urls["webhooks"]) as webhooks:
        channel = webhooks.channel()
        # Bind-ok is the broker granting it. Not checked in the broker's list of bindings:
        # when the shared deployment runs, its webhooks worker's resync (every
        # WAYBILL_BINDINGS_RESYNC_SECONDS) unbinds a type no endpoint wants, at any moment
        # (CI saw it between the two lines).
        channel.queue_bind(queue="waybill.webhooks", exchange=bus.EVENTS.name, routing_key=SPARE)
        channel.queue_unbind(queue="waybill.webhooks", exchange=bus.EVENTS.name, routing_key=SPARE)
        # Not to a routing key its manifest does not call bindable (topic permissions)...
        for key in (PROBE, "orders.payment_requested", "#"):
            with pytest.raises(AccessRefused, match="ACCESS_REFUSED"):
                webhooks.channel().queue_bind(queue="waybill.webhooks", exchange=bus.EVENTS.name, routing_key=key)
        # ...nor another context's queue.
        with pytest.raises(AccessRefused, match="ACCESS_REFUSED"):
            webhooks.channel().queue_bind(queue="waybill.readmodels", exchange=bus.EVENTS.name, routing_key=SPARE)
    for other in ("orders", "readmodels"):  # a context without run-time bindings binds nothing
        with Connection(broker_urls[other]) as conn, pytest.raises(AccessRefused, match="ACCESS_REFUSED"):
            conn.channel().queue_bind(queue=f"waybill.{other}", exchange=bus.EVENTS.name, routing_key=PROBE)


def test_an_endpoint_gets_its_types_once_bound_and_they_are_unbound_after_it_is_deleted(deployment, tokens,
                                                                                         rabbitmq):
    wanted = "orders.order_confirmed"  # no other test's endpoint wants it
    webhooks_db = deployment.stack.database_urls["webhooks"]
    sku = product(deployment, tokens, on_hand=5)
    with webhook_endpoint(deployment, tokens, wanted) as endpoint:
        assert wanted in _bindings(rabbitmq, "waybill.webhooks")
        [order_id] = place(deployment, tokens, sku, 1)
        wait_confirmed(deployment, [order_id])

        def delivered():
            rows = query(webhooks_db, "SELECT event_type, body FROM webhooks_webhookdelivery WHERE endpoint_id = %s",
                         (endpoint["id"],))
            return [event for event, body in rows if json.loads(body)["aggregate_id"] == order_id]

        assert wait_for(delivered, FLOW_TIMEOUT, "a delivery of the order's confirmation") == [wanted]
    wait_for(lambda: wanted not in _bindings(rabbitmq, "waybill.webhooks"), FLOW_TIMEOUT,
             f"the webhooks worker to unbind {wanted}", describe=lambda: deployment.log_tail("webhooks-worker"))
    # Of this order's events its inbox took what was asked for (and order_placed at most,
    # if another test's endpoint for it was not unbound yet), never all of them.
    taken = {t for (t,) in query(webhooks_db, "SELECT message_type FROM webhooks_inboxmessage "
                                              "WHERE envelope->>'aggregate_id' = %s", (order_id,))}
    assert wanted in taken and taken <= {wanted, "orders.order_placed"}
