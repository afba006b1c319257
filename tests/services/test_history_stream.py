"""The event history in services mode (``waybill.history.StreamHistory``): the RabbitMQ
stream ``waybill.history`` holds every event and document the deployment published, and
no command; it is read from the start, from a position or from a time; its retention is
the broker's policy; what retention took is refused, never served as if it were all.
It outlives a broker restart: ``tests/services/test_outage.py`` reads it after one."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta

import pytest
from amqp.exceptions import AMQPError
from django.utils import timezone
from kombu import Connection, Queue

from launcher.polling import wait_for
from waybill import historylimits
from waybill.history import FIRST, HistoryGone, StreamHistory

from .support import FLOW_TIMEOUT, in_history, place, product, wait_confirmed

pytestmark = pytest.mark.xdist_group("services")


def _envelopes(start=FIRST, name: str = historylimits.STREAM) -> list[tuple[dict, dict]]:
    """What the history holds, as JSON objects: whatever was published (the isolation tests'
    probes too, which are not envelopes)."""
    return [(json.loads(r.received.body), r.position) for batch in StreamHistory(name).read(start) for r in batch]


def test_the_stream_holds_what_the_deployment_published_in_order_and_no_command(deployment, tokens, on_the_broker,
                                                                               rabbitmq):
    began = timezone.now()
    sku = product(deployment, tokens, on_hand=10)
    order_ids = place(deployment, tokens, sku, 5)
    wait_confirmed(deployment, order_ids)
    # The relay may still be publishing the read side's echoes: every order's own events.
    wait_for(lambda: in_history(order_ids, "orders.order_confirmed") == set(order_ids), FLOW_TIMEOUT,
             "the history to hold every confirmation")
    everything = _envelopes()
    mine = [envelope for envelope, _ in everything if envelope.get("aggregate_id") in order_ids]
    for order_id in order_ids:
        types = [e["type"] for e in mine if e["aggregate_id"] == order_id]
        # Every context's events about it, each context's in the order it published them.
        assert [t for t in types if t.startswith("orders.order_")] == ["orders.order_placed", "orders.order_confirmed"]
        assert types.index("orders.order_placed") < types.index("inventory.stock_reserved") < \
            types.index("orders.order_confirmed"), types
    assert not [e for e, _ in everything if e.get("type") in ("inventory.reserve_stock", "orders.payment_requested")]
    assert {e.get("type") for e, _ in everything if e.get("aggregate_id") == sku} >= {"inventory.product_listed"}

    # On from a position: what came after it, once.
    offsets = [position["offset"] for _, position in everything]
    assert offsets == sorted(offsets) and len(set(offsets)) == len(offsets)
    middle = len(everything) // 2
    expected = [e.get("id") for e, _ in everything[middle + 1:]]
    # (The deployment publishes on meanwhile: its operational events, every few seconds.)
    assert [e.get("id") for e, _ in _envelopes(everything[middle][1])][:len(expected)] == expected

    # From a time: what was published since (the broker's clock is this machine's).
    assert {e.get("aggregate_id") for e, _ in _envelopes(began) if e.get("type") == "orders.order_placed"} \
        >= set(order_ids)

    # Its retention is the broker's policy, as provisioned (waybill.historylimits).
    listed = rabbitmq.rabbitmqctl("list_queues", "-p", "waybill", "name", "type", "policy", "--no-table-headers")
    assert any(line.split() == [historylimits.STREAM, "stream", "waybill-history"] for line in listed.splitlines())


def test_what_retention_took_is_refused_never_served_as_the_whole(on_the_broker, settings):
    """On a probe stream of its own, with a retention of a second and tiny segments (the
    deployment's history keeps 30 days)."""
    name = f"waybill.history.probe-{uuid.uuid4().hex[:8]}"
    with Connection(on_the_broker) as admin:
        channel = admin.default_channel
        Queue(name, durable=True, queue_arguments={"x-queue-type": "stream", "x-max-age": "1s",
                                                   "x-stream-max-segment-size-bytes": 4000})(channel).declare()
        producer = admin.Producer(channel)
        try:
            history = StreamHistory(name)

            def published_more_and_retention_ran() -> bool:
                for _ in range(20):  # new segments: RabbitMQ applies retention as it opens one
                    producer.publish({"probe": "x" * 500}, routing_key=name)
                try:
                    return (history.first_offset() or 0) > 0
                except AMQPError:
                    # RabbitMQ 3.10 may answer INTERNAL_ERROR to a consumer that attaches
                    # while retention deletes the segment it starts in: ask again.
                    return False

            wait_for(published_more_and_retention_ran, FLOW_TIMEOUT, "retention to delete the first segments")
            first = history.first_offset()
            with pytest.raises(HistoryGone, match=f"now starts at offset {first}"):
                next(history.read({"offset": 0}))
            assert [r.position["offset"] for r in next(history.read({"offset": first}))][0] == first + 1
            settings.WAYBILL_HISTORY_MAX_AGE_SECONDS = 1
            with pytest.raises(HistoryGone, match="WAYBILL_HISTORY_MAX_AGE_SECONDS"):
                next(history.read(timezone.now() - timedelta(seconds=10)))
            # Within the age the settings say, but before what the stream still holds: it
            # was trimmed some other way (here the probe's own age; in a deployment, its
            # size limit), so a read from that time cannot be whole.
            settings.WAYBILL_HISTORY_MAX_AGE_SECONDS = 7200
            with pytest.raises(HistoryGone, match="trimmed to its size limit"):
                next(history.read(timezone.now() - timedelta(hours=1)))
        finally:
            channel.queue_delete(queue=name)
