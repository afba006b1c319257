"""Operators' pages: every admin list opens, and a saga shows its timeline."""

from decimal import Decimal

import pytest
from django.contrib import admin
from django.urls import reverse

from apps.inventory import services as inventory
from apps.orders import services as orders
from apps.orders.models import OrderSaga

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")


@pytest.fixture
def operator(client, django_user_model):
    client.force_login(django_user_model.objects.create_superuser("operator", password="x" * 20))
    return client


def test_every_admin_list_opens(operator, pump):
    inventory.product_create(sku="LAMP-1", name="Lamp", price=Decimal("5"), on_hand=3)
    pump.settle()
    orders.order_place(customer_id=1, lines=[orders.LineRequest("LAMP-1", 1)])
    pump.settle()
    for model in admin.site._registry:
        url = reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist")
        response = operator.get(url)
        assert response.status_code == 200, url


def test_a_saga_page_shows_its_timeline_and_the_messages_sent(operator, pump):
    inventory.product_create(sku="LAMP-1", name="Lamp", price=Decimal("5"), on_hand=3)
    pump.settle()
    order, _ = orders.order_place(customer_id=1, lines=[orders.LineRequest("LAMP-1", 1)])
    pump.settle()
    saga = OrderSaga.objects.get(order_id=order.id)
    page = operator.get(reverse("admin:orders_ordersaga_change", args=[saga.pk])).content.decode()
    for text in ("completed", "reserve_stock", "charge_payment", "inventory.reserve_stock", "orders.charge_payment"):
        assert text in page


def test_compensate_now_brings_the_deadline_forward(operator, pump, payment_sandbox):
    inventory.product_create(sku="LAMP-1", name="Lamp", price=Decimal("5"), on_hand=3)
    pump.settle()
    payment_sandbox.configure(outage=True)
    order, _ = orders.order_place(customer_id=1, lines=[orders.LineRequest("LAMP-1", 1)])
    pump.settle()
    assert OrderSaga.objects.get(order_id=order.id).step == "charge_payment"
    response = operator.post(reverse("admin:orders_ordersaga_changelist"),
                             {"action": "compensate_now", "_selected_action": [str(order.id)]})
    assert response.status_code == 302
    from apps.orders.saga import saga_expire_overdue

    assert saga_expire_overdue() == 1
    pump.settle()
    order.refresh_from_db()
    assert (order.status, order.reason) == ("REJECTED", "Payment did not complete in time.")
