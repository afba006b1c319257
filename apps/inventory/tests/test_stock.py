import uuid
from decimal import Decimal

import pytest
from django.db import IntegrityError, transaction

from apps.inventory import contracts, services
from apps.inventory.models import OutboxMessage, Product, Reservation

pytestmark = pytest.mark.django_db(transaction=True, databases=["inventory"])


def _line(sku, quantity):
    return contracts.StockLine(sku=sku, quantity=quantity)


@pytest.fixture
def shelf():
    services.product_create(sku="A-1", name="A", price=Decimal("1"), on_hand=5)
    services.product_create(sku="B-1", name="B", price=Decimal("1"), on_hand=1)


def _messages():
    return list(OutboxMessage.objects.order_by("id").values_list("message_type", flat=True))


def test_reservation_is_all_or_nothing(shelf):
    order_id = uuid.uuid4()
    reservation = services.stock_reserve(order_id=order_id, lines=[_line("A-1", 2), _line("B-1", 2)])
    assert reservation.status == Reservation.Status.REJECTED
    assert "Not enough stock for B-1: 2 requested, 1 available." == reservation.reason
    assert Product.objects.get(sku="A-1").reserved == 0  # the first line was undone too
    assert _messages()[-1] == "inventory.stock_reservation_rejected"


def test_reservation_holds_every_line_and_publishes_the_new_stock(shelf):
    reservation = services.stock_reserve(order_id=uuid.uuid4(), lines=[_line("A-1", 2), _line("B-1", 1)])
    assert reservation.status == Reservation.Status.RESERVED
    assert [p.available for p in Product.objects.order_by("sku")] == [3, 0]
    assert _messages()[-3:] == ["inventory.stock_reserved", "inventory.product_updated", "inventory.product_updated"]


def test_reserving_twice_for_one_order_holds_once(shelf):
    order_id = uuid.uuid4()
    services.stock_reserve(order_id=order_id, lines=[_line("A-1", 2)])
    services.stock_reserve(order_id=order_id, lines=[_line("A-1", 2)])
    assert Product.objects.get(sku="A-1").reserved == 2


def test_unknown_sku_is_refused_with_a_reason(shelf):
    reservation = services.stock_reserve(order_id=uuid.uuid4(), lines=[_line("NOPE-1", 1)])
    assert reservation.reason == "Unknown SKU NOPE-1."


def test_release_gives_stock_back_once(shelf):
    order_id = uuid.uuid4()
    services.stock_reserve(order_id=order_id, lines=[_line("A-1", 2)])
    services.stock_release(order_id=order_id)
    services.stock_release(order_id=order_id)
    assert Product.objects.get(sku="A-1").reserved == 0
    released = [row.envelope["payload"]["lines"] for row in OutboxMessage.objects.filter(
        message_type="inventory.stock_released").order_by("id")]
    # Every release is answered, so whoever asked learns it is done; only the first gave back.
    assert released == [[{"sku": "A-1", "quantity": 2}], []]


def test_cancellation_before_placement_leaves_a_tombstone(shelf):
    order_id = uuid.uuid4()
    services.stock_release(order_id=order_id)
    reservation = services.stock_reserve(order_id=order_id, lines=[_line("A-1", 1)])
    assert reservation.status == Reservation.Status.CANCELLED
    assert Product.objects.get(sku="A-1").reserved == 0


def test_on_hand_cannot_drop_below_reserved(shelf):
    services.stock_reserve(order_id=uuid.uuid4(), lines=[_line("A-1", 3)])
    with pytest.raises(services.StockError, match="below the 3 units reserved"):
        services.product_update(sku="A-1", on_hand=2)


def test_the_database_refuses_overselling_whatever_the_code_path(shelf):
    with pytest.raises(IntegrityError):
        Product.objects.filter(sku="B-1").update(reserved=2)


class _Undone(Exception):
    """Rolls back what one way of reserving wrote, once it has been looked at."""


def _reserving(apply) -> dict:
    """What ``apply`` leaves (reservations, stock, the messages that would travel), then undone."""
    before = set(OutboxMessage.objects.values_list("id", flat=True))
    try:
        with transaction.atomic(using="inventory"):
            apply()
            sent = OutboxMessage.objects.exclude(id__in=before).order_by("id")
            looked = {
                "reservations": sorted(Reservation.objects.values_list("order_id", "status", "reason", "lines",
                                                                       "version")),
                "stock": list(Product.objects.order_by("sku").values_list("sku", "reserved", "version")),
                # Events in order; of each product's document, only its last state travels.
                "events": [(m.message_type, m.aggregate_id, m.aggregate_version, m.envelope["payload"])
                           for m in sent if m.kind != "document"],
                "documents": {m.aggregate_id: (m.aggregate_version, m.envelope["payload"])
                              for m in sent if m.kind == "document"},
            }
            raise _Undone
    except _Undone:
        return looked


def test_reserving_many_at_once_has_the_effects_of_reserving_each_in_turn(shelf):
    services.product_create(sku="C-1", name="C", price=Decimal("1"), on_hand=3)
    decided_before = uuid.uuid4()
    services.stock_reserve(order_id=decided_before, lines=[_line("C-1", 1)])
    twice = uuid.uuid4()
    requests = [
        (uuid.uuid4(), [_line("A-1", 2), _line("C-1", 1)]),
        (uuid.uuid4(), [_line("A-1", 2), _line("A-1", 2)]),      # its second line finds 1 left
        (uuid.uuid4(), [_line("B-1", 2)]),                       # more than there is
        (twice, [_line("A-1", 1), _line("A-1", 1)]),             # one SKU on two lines
        (decided_before, [_line("A-1", 1)]),                     # decided earlier: nothing
        (uuid.uuid4(), [_line("A-1", 1), _line("NOPE-1", 1)]),   # an unknown SKU, after a line that fits
        (twice, [_line("B-1", 1)]),                              # again in the same run: nothing
        (uuid.uuid4(), [_line("B-1", 1), _line("C-1", 1)]),
        (uuid.uuid4(), [_line("A-1", 2)]),                       # the last units of A-1 went before
    ]
    one_by_one = _reserving(lambda: [services.stock_reserve(order_id=o, lines=lines) for o, lines in requests])
    at_once = _reserving(lambda: services.stock_reserve_many(
        requests=[services.StockRequest(order_id=o, lines=lines) for o, lines in requests]))
    assert at_once == one_by_one
    statuses = [status for _, status, *_ in one_by_one["reservations"]]
    assert statuses.count(Reservation.Status.REJECTED) == 4 and statuses.count(Reservation.Status.RESERVED) == 4
