"""The whole choreography in process, moved step by step by the real relay and consumers:
an order placed, reserved or refused by inventory, cancelled, and projected on the read side.
What orders decides alone is tested beside it (apps/orders/tests/test_services.py)."""

from decimal import Decimal

import pytest

from apps.inventory import services as inventory
from apps.inventory.models import Product
from apps.orders import services
from apps.orders.models import Order
from apps.readmodels.models import CatalogItem, OrderSummary

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")


@pytest.fixture
def shop(pump):
    inventory.product_create(sku="LAMP-1", name="Lamp", price=Decimal("20.00"), on_hand=3)
    pump.settle()


def _place(quantity):
    order, _ = services.order_place(customer_id=7, lines=[services.LineRequest("LAMP-1", quantity)])
    return order


def test_order_is_confirmed_and_projected(pump, shop):
    order = _place(2)
    assert order.total == Decimal("40.00") and order.status == Order.Status.PENDING
    pump.settle()
    summary = OrderSummary.objects.get(order_id=order.id)
    assert (summary.status, summary.order_version, summary.lines[0]["name"]) == ("CONFIRMED", 2, "Lamp")
    assert CatalogItem.objects.get(sku="LAMP-1").available == 1


def test_over_order_is_rejected_with_the_reason(pump, shop):
    order = _place(4)
    pump.settle()
    order.refresh_from_db()
    assert order.status == Order.Status.REJECTED
    assert OrderSummary.objects.get(order_id=order.id).reason == "Not enough stock for LAMP-1: 4 requested, 3 available."


def test_cancelling_releases_the_stock(pump, shop):
    order = _place(2)
    pump.settle()
    services.order_cancel(order_id=order.id, customer_id=7)
    pump.settle()
    assert Product.objects.get(sku="LAMP-1").reserved == 0
    assert CatalogItem.objects.get(sku="LAMP-1").available == 3
    assert OrderSummary.objects.get(order_id=order.id).status == "CANCELLED"


def test_cancelling_a_pending_order_before_inventory_saw_it(pump, shop):
    order = _place(2)
    services.order_cancel(order_id=order.id, customer_id=7)
    pump.settle()
    order.refresh_from_db()
    assert order.status == Order.Status.CANCELLED
    assert Product.objects.get(sku="LAMP-1").reserved == 0
