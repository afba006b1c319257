import uuid
from decimal import Decimal

import pytest
from django.db import IntegrityError

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
