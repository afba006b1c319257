"""The event history embedded (``waybill.history.OutboxArchive``): every context's sent
events and documents, never its commands, read in the order they were sent, from the
start, from a position or from a time; kept as long as the history is; a start before
what it keeps is refused. The stream (services mode) is tried on RabbitMQ in
``tests/services/test_history_stream.py``."""

from __future__ import annotations

import json
from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from apps.inventory import services as inventory
from apps.inventory.models import OutboxMessage as InventoryOutbox
from apps.orders import services as orders
from apps.orders.models import OutboxMessage as OrdersOutbox
from waybill import contexts, operations, retention
from waybill.history import FIRST, KINDS, HistoryGone, OutboxArchive, history

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")


def _read(start=FIRST, *, batch: int | None = None) -> list:
    archive = history()
    assert isinstance(archive, OutboxArchive)  # embedded, the in-memory transport
    if batch:
        archive.batch = batch
    return [recorded for chunk in archive.read(start) for recorded in chunk]


def _ids(recorded) -> list[str]:
    return [json.loads(r.received.body)["id"] for r in recorded]


def _sent_events() -> set[str]:
    """Every event and document the outboxes sent (what the history must hold)."""
    return {str(row.message_id) for context in contexts.all_contexts() if context.relay
            for row in context.outbox.objects.using(context.database).filter(first_sent_at__isnull=False,
                                                                              kind__in=KINDS)}


def _shop(pump, orders_placed: int = 2) -> None:
    inventory.product_create(sku="LAMP-1", name="Lamp", price=Decimal("20.00"), on_hand=3)
    pump.settle()
    for _ in range(orders_placed):
        orders.order_place(customer_id=7, lines=[orders.LineRequest("LAMP-1", 1)])
    pump.settle()


def test_it_holds_every_event_and_document_sent_in_order_and_no_command(pump):
    _shop(pump)
    recorded = _read()
    envelopes = [json.loads(r.received.body) for r in recorded]
    assert set(_ids(recorded)) == _sent_events() and len(recorded) == len(_sent_events())
    assert {"orders.order_placed", "orders.order_confirmed", "inventory.stock_reserved"} <= {e["type"] for e in envelopes}
    assert not [e for e in envelopes if e["type"] == "inventory.reserve_stock"]  # a command
    for aggregate in {e["aggregate_id"] for e in envelopes}:
        versions = [e["aggregate_version"] for e in envelopes if e["aggregate_id"] == aggregate]
        assert versions == sorted(versions), aggregate  # one aggregate's messages in order


def test_reading_on_from_a_position_gives_what_came_after_it_once(pump):
    _shop(pump)
    everything = _read(batch=3)  # batches cut anywhere, within one relay batch too
    assert _ids(everything) == _ids(_read())
    middle = everything[len(everything) // 2]
    assert _ids(_read(middle.position)) == _ids(everything[len(everything) // 2 + 1:])

    orders.order_place(customer_id=7, lines=[orders.LineRequest("LAMP-1", 1)])
    pump.settle()
    later = _read(everything[-1].position)
    assert later and set(_ids(later)) == _sent_events() - set(_ids(everything))


def test_a_row_sent_later_within_the_same_millisecond_as_rows_read_already_is_read_too(pump):
    _shop(pump)
    rows = InventoryOutbox.objects.using("inventory").filter(kind__in=KINDS).order_by("id")
    late = rows.first()
    instant = timezone.now()
    rows.exclude(id=late.id).update(first_sent_at=instant)
    InventoryOutbox.objects.using("inventory").filter(id=late.id).update(first_sent_at=None)
    read = _read(batch=2)
    # Then another relay batch marks a row with a smaller id sent at the same instant (a
    # transaction that committed late): a reader that had gone past it by id would miss it.
    InventoryOutbox.objects.using("inventory").filter(id=late.id).update(first_sent_at=instant)
    assert _ids(_read(read[-1].position)) == [str(late.message_id)]


def test_from_a_time_and_not_before_what_it_keeps(pump, settings):
    _shop(pump)
    cut = timezone.now()
    orders.order_place(customer_id=7, lines=[orders.LineRequest("LAMP-1", 1)])
    pump.settle()
    sent_since = {str(row.message_id) for context in contexts.all_contexts() if context.relay
                  for row in context.outbox.objects.using(context.database).filter(first_sent_at__gte=cut,
                                                                                                kind__in=KINDS)}
    assert sent_since and set(_ids(_read(cut))) == sent_since
    assert sorted(_ids(_read(cut, batch=1))) == sorted(sent_since)  # the time holds for every batch

    settings.WAYBILL_HISTORY_MAX_AGE_SECONDS = 60
    with pytest.raises(HistoryGone, match="holds everything only from"):
        _read(timezone.now() - timedelta(seconds=120))
    # A position from before what it keeps: what came after it may be gone already.
    long_ago = (timezone.now() - timedelta(seconds=120)).isoformat()
    with pytest.raises(HistoryGone):
        _read({"sent": {"inventory": [long_ago, []]}, "until": long_ago})
    # A context that sent nothing for longer than that is no reason to refuse: the reader
    # had read everything up to its "until".
    quiet = _read()[-1].position
    inventory_sent = {str(row.message_id) for row in InventoryOutbox.objects.using("inventory").filter(
        kind__in=KINDS)}
    served_again = set(_ids(_read({**quiet, "sent": {**quiet["sent"], "inventory": [long_ago, []]}})))
    assert served_again == inventory_sent  # inventory's rows from its (old) cursor on, the others' none


def test_a_message_published_again_keeps_its_place_in_the_history(pump):
    """The history is append-only: an operator's republish (or the embedded recovery after
    an unclean stop) sends a row again, and the archive still has it once, where it was."""
    _shop(pump)
    before = _ids(_read())
    first = InventoryOutbox.objects.using("inventory").filter(kind__in=KINDS).order_by("id").first()
    operations.outbox_republish(context_name="inventory", row_ids=[first.id])
    assert str(first.message_id) in _ids(_read())  # unsent again, still in the history
    pump.settle()
    assert _ids(_read()) == before


def test_embedded_the_outboxes_keep_events_and_documents_as_long_as_the_history(pump, settings):
    _shop(pump)
    settings.WAYBILL_OUTBOX_RETENTION_SECONDS = 0
    settings.WAYBILL_HISTORY_MAX_AGE_SECONDS = 3600
    kept = _sent_events()
    outbox = OrdersOutbox.objects.using("orders")
    assert outbox.exclude(kind__in=KINDS).exists()  # orders' saga sent commands
    for context in contexts.all_contexts():
        retention.prune(context)
    assert not outbox.exclude(kind__in=KINDS).exists()  # commands go as before
    assert _sent_events() == kept  # the history stays
    settings.WAYBILL_HISTORY_MAX_AGE_SECONDS = 0
    for context in contexts.all_contexts():
        retention.prune(context)
    assert not _sent_events()
