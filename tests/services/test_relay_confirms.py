"""The relay's pipelined publisher confirms, against a real RabbitMQ: a batch of many
aggregates goes out in windows, every message is confirmed before its row is marked
sent, and a refused publish holds back only its own aggregate's later messages
(invariants 2 and 7)."""

from __future__ import annotations

import json
import uuid
from decimal import Decimal

import pytest
from django.db import transaction
from kombu import Connection, Queue

from apps.inventory import contracts
from apps.inventory.models import OutboxMessage
from waybill import bus, contexts
from waybill.outbox import outbox_record
from waybill.relay import Relay, _windows

pytestmark = [pytest.mark.xdist_group("services"), pytest.mark.django_db(transaction=True, databases="__all__")]


@pytest.fixture
def broker(settings, broker_urls):
    settings.WAYBILL_BROKER_URL = broker_urls["admin"]
    with Connection(broker_urls["admin"]) as connection:
        bus.declare(connection)
        yield connection


def _watch(connection: Connection, name: str, **arguments) -> Queue:
    """A private queue that sees every event (``#``), as a test's eyes on the exchange."""
    queue = Queue(name, bus.EVENTS, routing_key="#", auto_delete=False, queue_arguments=arguments or None)
    queue(connection.default_channel).declare()
    return queue


def _record(skus: list[str], versions: int) -> None:
    """``versions`` state documents per product, interleaved across products."""
    with transaction.atomic(using="inventory"):
        for version in range(1, versions + 1):
            for sku in skus:
                outbox_record(context="inventory", aggregate_id=sku, aggregate_version=version,
                              message=contracts.ProductUpdated(sku=sku, name=sku, price=Decimal("1"), on_hand=version,
                                                               reserved=0, available=version))


def _received(connection: Connection, queue: Queue) -> list[tuple[str, int]]:
    bound, seen = queue(connection.default_channel), []
    while (message := bound.get(no_ack=True)) is not None:
        envelope = json.loads(message.body)
        seen.append((envelope["aggregate_id"], envelope["aggregate_version"]))
    return seen


def test_windows_hold_one_row_per_aggregate_in_commit_order():
    class Row:
        def __init__(self, id, aggregate_id):
            self.id, self.aggregate_id = id, aggregate_id

    rows = [Row(1, "a"), Row(2, "a"), Row(3, "b"), Row(4, "a"), Row(5, "c"), Row(6, "b")]
    assert [[r.id for r in w] for w in _windows(rows)] == [[1, 3, 5], [2, 6], [4]]


def test_a_batch_of_many_aggregates_is_confirmed_and_kept_in_order_per_aggregate(broker):
    watch = _watch(broker, f"test.watch.{uuid.uuid4().hex}")
    skus = [f"CONFIRM-{n}" for n in range(40)]
    _record(skus, versions=5)
    relay = Relay(contexts.get("inventory"), batch_size=500)
    try:
        assert relay.drain() == 200
    finally:
        relay.close()
    assert not OutboxMessage.objects.filter(sent_at__isnull=True).exists()
    seen = _received(broker, watch)
    assert sorted(seen) == sorted((sku, v) for sku in skus for v in range(1, 6))
    for sku in skus:
        assert [v for s, v in seen if s == sku] == [1, 2, 3, 4, 5], sku


def test_a_refused_publish_holds_back_only_its_aggregate_and_is_published_again(broker):
    watch = _watch(broker, f"test.watch.{uuid.uuid4().hex}")
    # RabbitMQ nacks a publish routed to a full queue that rejects new messages: this
    # queue takes only the first product's messages and is full from the start.
    refusing = Queue(f"test.full.{uuid.uuid4().hex}", bus.EVENTS, routing_key="inventory.product_updated.#",
                     queue_arguments={"x-max-length": 0, "x-overflow": "reject-publish"})
    _record(["REFUSED-1"], versions=3)
    bound = refusing(broker.default_channel)
    bound.declare()
    relay = Relay(contexts.get("inventory"))
    try:
        assert relay.drain() == 0  # refused: the row's failure, not a lost connection
        rows = OutboxMessage.objects.order_by("id")
        # Nothing of the aggregate was marked sent, only its first message was tried.
        assert [(r.aggregate_version, r.sent_at is None, r.publish_attempts) for r in rows] == [
            (1, True, 1), (2, True, 0), (3, True, 0)]
        bound.delete()
        assert relay.drain() == 3
    finally:
        relay.close()
    # The refused message may also have reached the watching queue (a nack means "not
    # every queue took it"), so it can arrive twice; never after a later version.
    versions = [v for _, v in _received(broker, watch)]
    assert versions in ([1, 2, 3], [1, 1, 2, 3])


def test_declare_unbinds_a_type_a_consumer_retired(broker):
    """Orders once bound inventory.product_updated; on a broker that still has that
    binding, declaring the topology removes it (and doing so twice is harmless)."""
    orders_queue = bus.context_queue(contexts.get("orders"), declare=True)(broker.default_channel)
    orders_queue.bind_to(bus.EVENTS, routing_key="inventory.product_updated")  # as an old deployment left it
    bus.declare(broker)
    bus.declare(broker)
    orders_queue.purge()
    _record(["RETIRED-1"], versions=1)
    relay = Relay(contexts.get("inventory"))
    try:
        assert relay.drain() == 1
    finally:
        relay.close()
    assert orders_queue.get(no_ack=True) is None


def test_each_window_goes_to_the_broker_in_one_write_and_arrives_whole(broker):
    watch = _watch(broker, f"test.watch.{uuid.uuid4().hex}")
    skus = [f"WRITE-{n}" for n in range(30)]
    _record(skus, versions=3)  # three windows of 30
    relay = Relay(contexts.get("inventory"), batch_size=500)
    try:
        relay._ensure_producer()
        transport = relay._connection.connection.transport
        send, writes = transport._write, []
        transport._write = lambda data: writes.append(len(data)) or send(data)
        assert relay.drain() == 90
        during_drain = list(writes)
    finally:
        relay.close()
    assert len(during_drain) == 3 and min(during_drain) > 30 * 500  # thirty messages of some 600 bytes
    assert sorted(_received(broker, watch)) == sorted((sku, v) for sku in skus for v in range(1, 4))
