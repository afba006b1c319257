"""Invariants 1 and 2: a change and its messages commit together, and every committed
message is published at least once, in commit order per aggregate."""

import json
import uuid
from decimal import Decimal

import pytest
from django.db import transaction

from apps.inventory import services as inventory
from apps.inventory.models import OutboxMessage as InventoryOutbox
from apps.inventory.models import Product
from apps.orders import contracts as orders_contracts
from waybill import bus, contexts
from waybill.consumer import Outcome
from waybill.messages import Kind, Message, message
from waybill.outbox import OutboxOutsideTransaction, outbox_record
from waybill.relay import Relay

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")


@message("inventory.recount_stock", kind=Kind.COMMAND)
class RecountStock(Message):
    """A command used only by these tests: commands go point to point to their owner."""

    sku: str


ONE = orders_contracts.Money(amount=Decimal("1"), currency="EUR")


def _placed(order_id=None, sku="KETTLE-1", quantity=1) -> orders_contracts.OrderPlaced:
    return orders_contracts.OrderPlaced(
        order_id=order_id or uuid.uuid4(), customer_id=1, status="PENDING",
        lines=[orders_contracts.OrderLine(sku=sku, name="Kettle", quantity=quantity, unit_price=ONE)],
        total=ONE,
    )


def test_recording_outside_a_transaction_is_refused():
    with pytest.raises(OutboxOutsideTransaction):
        outbox_record(context="orders", message=_placed(), aggregate_id="x", aggregate_version=1)


def test_a_transaction_on_another_database_does_not_count():
    with transaction.atomic(using="inventory"), pytest.raises(OutboxOutsideTransaction):
        outbox_record(context="orders", message=_placed(), aggregate_id="x", aggregate_version=1)


def test_rolled_back_change_publishes_nothing(pump):
    with pytest.raises(RuntimeError), transaction.atomic(using="inventory"):
        inventory.product_create(sku="GHOST-1", name="Ghost", price=Decimal("1"), on_hand=1)
        raise RuntimeError("the caller fails after the service ran")
    assert not Product.objects.filter(sku="GHOST-1").exists()
    assert InventoryOutbox.objects.count() == 0
    assert pump.relay() == 0
    assert pump.deliver("readmodels") == []


def test_committed_change_is_published_and_marked_sent(pump):
    inventory.product_create(sku="LAMP-1", name="Lamp", price=Decimal("5"), on_hand=2)
    rows = list(InventoryOutbox.objects.order_by("id"))
    assert [(row.message_type, row.sent_at) for row in rows] == [
        ("inventory.product_listed", None), ("inventory.product_updated", None)]
    assert pump.relay("inventory") == 2
    assert not InventoryOutbox.objects.filter(sent_at__isnull=True).exists()
    # Each document reached the context that binds it, and nobody else: readmodels
    # follows the stock, orders only the listing.
    assert pump.deliver("readmodels") == [Outcome.APPLIED]
    assert pump.deliver("orders") == [Outcome.APPLIED]
    assert pump.deliver("inventory") == []


def test_a_stock_change_is_not_sent_to_orders_but_a_price_change_is(pump):
    from apps.orders.models import ProductCopy

    inventory.product_create(sku="LAMP-2", name="Lamp", price=Decimal("5"), on_hand=2)
    pump.settle()
    inventory.product_update(sku="LAMP-2", on_hand=7)
    pump.relay("inventory")
    assert pump.deliver("orders") == []
    assert pump.deliver("readmodels") == [Outcome.APPLIED]
    inventory.product_update(sku="LAMP-2", price=Decimal("6.50"))
    pump.relay("inventory")
    assert pump.deliver("orders") == [Outcome.APPLIED]
    copy = ProductCopy.objects.get(sku="LAMP-2")
    assert (copy.price, copy.version) == (Decimal("6.50"), 3)


def test_relay_crash_between_publish_and_mark_republishes_and_consumer_applies_once(pump, monkeypatch):
    inventory.product_create(sku="LAMP-1", name="Lamp", price=Decimal("5"), on_hand=2)

    class Crash(BaseException):
        """Stands in for the process dying: not an Exception, so nothing catches it."""

    def crash(self, row_ids):
        raise Crash

    monkeypatch.setattr(Relay, "_mark_sent", crash)
    with pytest.raises(Crash):
        Relay(contexts.get("inventory")).drain()
    assert InventoryOutbox.objects.filter(sent_at__isnull=True).count() == 2  # the mark never committed
    monkeypatch.undo()

    assert pump.relay("inventory") == 2  # both documents published a second time
    assert not InventoryOutbox.objects.filter(sent_at__isnull=True).exists()
    assert pump.deliver("readmodels") == [Outcome.APPLIED, Outcome.DUPLICATE]
    assert pump.deliver("orders") == [Outcome.APPLIED, Outcome.DUPLICATE]


def test_messages_of_one_aggregate_leave_in_commit_order(pump):
    inventory.product_create(sku="LAMP-1", name="Lamp", price=Decimal("5"), on_hand=2)
    for on_hand in (3, 4, 5):
        inventory.product_update(sku="LAMP-1", on_hand=on_hand)
    pump.relay("inventory")
    queue = bus.context_queue(contexts.get("readmodels"))(pump.connection.default_channel)
    versions = []
    while (received := queue.get(no_ack=True)) is not None:
        versions.append(json.loads(received.body)["aggregate_version"])
    assert versions == [1, 2, 3, 4]


def test_relay_skips_rows_whose_aggregate_has_an_earlier_row_held_by_another_relay():
    for on_hand in (1, 2):
        with transaction.atomic(using="inventory"):
            outbox_record(context="inventory", message=RecountStock(sku="A"), aggregate_id="A", aggregate_version=on_hand)
    with transaction.atomic(using="inventory"):
        outbox_record(context="inventory", message=RecountStock(sku="B"), aggregate_id="B", aggregate_version=1)
    a1, a2, b1 = InventoryOutbox.objects.order_by("id")
    relay = Relay(contexts.get("inventory"))
    # Another relay holds a1: this one may publish b1 but must not overtake a1 with a2.
    assert relay._in_commit_order([a2, b1]) == [b1]
    assert relay._in_commit_order([a1, a2, b1]) == [a1, a2, b1]


def test_commands_go_point_to_point_to_their_owner(pump):
    with transaction.atomic(using="orders"):
        outbox_record(context="orders", message=RecountStock(sku="A"), aggregate_id="A", aggregate_version=1)
    assert bus.route("inventory.recount_stock", 1, "A") == (bus.COMMANDS, "inventory")
    pump.relay("orders")
    assert pump.deliver("orders") == [] and pump.deliver("readmodels") == []
    # Inventory got it; it has no handler for this test-only command, so it is dead-lettered.
    assert pump.deliver("inventory") == [Outcome.DEAD_LETTERED]


def test_envelope_carries_correlation_and_causation(pump):
    from apps.inventory import contracts as inventory_contracts

    inventory.product_create(sku="LAMP-1", name="Lamp", price=Decimal("5"), on_hand=2)
    pump.settle()
    command = inventory_contracts.ReserveStock(order_id=uuid.uuid4(),
                                               lines=[inventory_contracts.StockLine(sku="LAMP-1", quantity=1)])
    with transaction.atomic(using="orders"):
        sent = outbox_record(context="orders", message=command, aggregate_id="o-1", aggregate_version=1)
    pump.relay("orders")
    pump.deliver("inventory")
    reserved = InventoryOutbox.objects.get(message_type="inventory.stock_reserved").envelope
    assert reserved["correlation_id"] == str(sent.correlation_id)
    assert reserved["causation_id"] == str(sent.id)


def test_partitions_route_each_aggregate_to_one_queue_of_each_consumer(settings):
    settings.WAYBILL_PARTITIONS = 4
    keys = {bus.route("inventory.product_updated", 1, f"SKU-{i}")[1] for i in range(40)}
    assert keys == {f"inventory.product_updated.p{i}" for i in range(4)}  # spread over all four
    assert bus.route("inventory.product_updated", 1, "SKU-7") == bus.route("inventory.product_updated", 1, "SKU-7")
    assert bus.route("inventory.recount_stock", 1, "SKU-7")[1].startswith("inventory.p")
    queues = bus.context_queues(contexts.get("readmodels"))
    assert [q.name for q in queues] == [f"waybill.readmodels.p{i}" for i in range(4)]
    assert all(q.queue_arguments["x-single-active-consumer"] for q in queues)


def test_a_row_that_keeps_failing_is_parked_and_holds_back_only_its_aggregate(pump, settings, monkeypatch):
    settings.WAYBILL_RELAY_MAX_ATTEMPTS = 2
    for sku in ("A", "B"):
        with transaction.atomic(using="inventory"):
            outbox_record(context="inventory", message=RecountStock(sku=sku), aggregate_id=sku, aggregate_version=1)
    with transaction.atomic(using="inventory"):
        outbox_record(context="inventory", message=RecountStock(sku="A"), aggregate_id="A", aggregate_version=2)
    a1, b1, a2 = InventoryOutbox.objects.order_by("id")
    real = Relay._publish_confirmed

    def refuse_a1(self, outgoing):
        if outgoing.row.id == a1.id:
            raise ConnectionError("this one never gets through")
        return real(self, outgoing)

    monkeypatch.setattr(Relay, "_publish_confirmed", refuse_a1)
    for _ in range(2):
        with pytest.raises(ConnectionError):
            pump.relay("inventory")
    assert pump.relay("inventory") == 1  # a1 parked after two tries: b1 goes, a2 waits behind a1
    sent = set(InventoryOutbox.objects.filter(sent_at__isnull=False).values_list("id", flat=True))
    assert sent == {b1.id}
    monkeypatch.undo()
    from waybill import operations

    operations.outbox_republish(context_name="inventory", row_ids=[a1.id])
    assert pump.relay("inventory") == 2
    assert not InventoryOutbox.objects.filter(sent_at__isnull=True).exists()


def test_a_parked_row_with_a_batch_of_rows_behind_it_does_not_starve_other_aggregates(pump, settings):
    """The later rows of a parked row's aggregate wait; they must not fill the relay's
    batches, or nothing after them would ever be published."""
    settings.WAYBILL_RELAY_BATCH_SIZE = 3
    with transaction.atomic(using="inventory"):
        for version in range(1, 6):
            outbox_record(context="inventory", message=RecountStock(sku="A"), aggregate_id="A",
                          aggregate_version=version)
        outbox_record(context="inventory", message=RecountStock(sku="B"), aggregate_id="B", aggregate_version=1)
    rows = InventoryOutbox.objects
    head = rows.order_by("id").first()
    rows.filter(id=head.id).update(publish_attempts=settings.WAYBILL_RELAY_MAX_ATTEMPTS)  # parked

    assert pump.relay("inventory") == 1
    assert list(rows.filter(sent_at__isnull=False).values_list("aggregate_id", flat=True)) == ["B"]
    assert rows.filter(aggregate_id="A", sent_at__isnull=True).count() == 5


def test_a_row_that_cannot_be_published_fails_alone_and_the_relay_keeps_publishing(pump, settings):
    """A row the relay cannot make into a message (its type is no longer registered, its
    envelope lost a field, it is over the size limit) is that row's failure: the others
    go out in the same drain, nothing raises (no reconnect), and after
    WAYBILL_RELAY_MAX_ATTEMPTS drains it is parked, holding back its own aggregate only."""
    settings.WAYBILL_RELAY_MAX_ATTEMPTS = 3
    settings.WAYBILL_MESSAGE_MAX_BYTES = 4000
    for sku, version in (("RETIRED", 1), ("RETIRED", 2), ("LOST-FIELD", 1), ("HUGE", 1), ("FINE", 1)):
        with transaction.atomic(using="inventory"):
            outbox_record(context="inventory", message=RecountStock(sku=sku), aggregate_id=sku,
                          aggregate_version=version)
    rows = InventoryOutbox.objects
    retired, retired_2, lost, huge, fine = rows.order_by("id")
    rows.filter(id=retired.id).update(message_type="inventory.stock_teleported")
    rows.filter(id=lost.id).update(envelope={k: v for k, v in lost.envelope.items() if k != "schema_version"})
    rows.filter(id=huge.id).update(envelope={**huge.envelope, "payload": {"sku": "x" * 5000}})
    assert pump.relay("inventory") == 1  # FINE; no exception
    assert list(rows.filter(sent_at__isnull=False).values_list("id", flat=True)) == [fine.id]
    failing = {retired.id, lost.id, huge.id}
    assert dict(rows.filter(id__in=failing).values_list("id", "publish_attempts")) == dict.fromkeys(failing, 1)
    assert "over WAYBILL_MESSAGE_MAX_BYTES" in rows.get(id=huge.id).last_error
    assert rows.get(id=retired_2.id).publish_attempts == 0  # held back behind its aggregate's first row

    for _ in range(3):
        assert pump.relay("inventory") == 0
    assert dict(rows.filter(id__in=failing).values_list("id", "publish_attempts")) == dict.fromkeys(failing, 3)
    assert rows.filter(sent_at__isnull=True).count() == 4  # parked, and the row waiting behind one


def test_a_published_message_is_the_stored_envelope_with_the_usual_properties(pump):
    """The relay sends the envelope's stored text, not a re-dump: it parses to the same
    envelope, with the message id, JSON content type, persistence and traceparent header."""
    from waybill.messages import parse

    with transaction.atomic(using="orders"):
        sent = outbox_record(context="orders", message=RecountStock(sku="Ä-1"), aggregate_id="A", aggregate_version=1)
    row = contexts.get("orders").outbox.objects.get(message_id=sent.id)
    assert pump.relay("orders") == 1
    received = bus.context_queue(contexts.get("inventory"))(pump.connection.default_channel).get(no_ack=True)
    assert json.loads(received.body) == row.envelope
    assert parse(received.body)[0].id == sent.id
    assert received.content_type == "application/json" and received.content_encoding == "utf-8"
    assert received.properties["message_id"] == str(sent.id)
    assert received.properties["delivery_mode"] == 2
    assert received.headers == {"traceparent": row.envelope["traceparent"] or ""}


def test_a_batch_folds_only_a_run_of_one_document_with_no_other_message_of_its_aggregate_between():
    from types import SimpleNamespace

    from waybill.outbox import _latest_documents

    def row(name, kind, aggregate="LAMP-1", type="inventory.product_updated", version=1):
        return SimpleNamespace(name=name, kind=kind, aggregate_id=aggregate, message_type=type,
                               envelope={"schema_version": version})

    rows = [row("d1", "document"), row("other", "document", aggregate="DESK-1"), row("d2", "document"),
            row("event", "event", type="inventory.product_retired"), row("d3", "document"),
            row("d3-v2", "document", version=2), row("d4", "document")]
    # d1 gives way to d2; the event ends the run, so d2 still goes before it; d3 gives way
    # to d4; another schema version is another document.
    assert [r.name for r in _latest_documents(rows)] == ["other", "d2", "event", "d3-v2", "d4"]


def test_a_drain_claims_again_only_after_a_full_batch(pump, monkeypatch):
    for sku in ("CLAIM-1", "CLAIM-2", "CLAIM-3"):
        inventory.product_create(sku=sku, name=sku, price=Decimal("1"), on_hand=1)  # two rows each
    real, claims = Relay.publish_batch, []

    def counted(self, failed_ids, *, after_id=0):
        published, failed, after = real(self, failed_ids, after_id=after_id)
        claims.append((published, after is not None))
        return published, failed, after

    monkeypatch.setattr(Relay, "publish_batch", counted)
    relay = Relay(contexts.get("inventory"), batch_size=4)
    try:
        assert relay.drain() == 6
        assert claims == [(4, True), (2, False)]  # a full batch, then one with room: done
        claims.clear()
        inventory.product_create(sku="CLAIM-4", name="CLAIM-4", price=Decimal("1"), on_hand=1)
        assert relay.drain() == 2
        assert claims == [(2, False)]  # a few rows: one claim, no second one that finds nothing
    finally:
        relay.close()
    assert not InventoryOutbox.objects.filter(sent_at__isnull=True).exists()
