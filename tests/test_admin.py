"""Operators' pages: every admin list opens, and a saga shows its timeline."""

import json
from decimal import Decimal

import pytest
from django.contrib import admin
from django.urls import reverse

from apps.inventory import services as inventory
from apps.orders import services as orders
from apps.inventory.models import OutboxMessage as InventoryOutbox
from apps.orders.models import OrderSaga
from apps.readmodels.models import DeadLetter as ReadDeadLetter
from apps.readmodels.models import InboxMessage as ReadInbox
from apps.readmodels.models import OrderSummary
from tests.poison import POISONS, Poison, order_placed, publish
from waybill.consumer import Outcome

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
    changelist = reverse("admin:orders_ordersaga_changelist")
    asked = operator.post(changelist, {"action": "compensate_now", "_selected_action": [str(order.id)]})
    assert asked.status_code == 200 and "Why (kept in the admin" in asked.content.decode()  # asks first
    assert OrderSaga.objects.get(order_id=order.id).step == "charge_payment"
    response = operator.post(changelist, {"action": "compensate_now", "_selected_action": [str(order.id)],
                                          "reason": "the customer called", "confirm": "Compensate now"})
    assert response.status_code == 302
    from apps.orders.saga import saga_expire_overdue

    assert saga_expire_overdue() == 1
    pump.settle()
    order.refresh_from_db()
    assert (order.status, order.reason) == ("REJECTED", "Payment did not complete in time.")
    from django.contrib.admin.models import LogEntry

    [entry] = LogEntry.objects.filter(object_id=str(order.id))  # the act, in the admin's history
    assert (entry.user.username, entry.change_message) == ("operator", "compensate now; why: the customer called")


def _dead_letter(pump, poison: Poison) -> ReadDeadLetter:
    publish(pump.connection.default_channel, poison)
    assert pump.deliver("readmodels") == [Outcome.DEAD_LETTERED]
    return ReadDeadLetter.objects.get()


def test_a_large_dead_letter_page_shows_a_bounded_preview_and_offers_the_exact_bytes(operator, pump, client):
    poison = next(p for p in POISONS if p.name == "five-megabytes")
    letter = _dead_letter(pump, poison)
    page = operator.get(reverse("admin:readmodels_deadletter_change", args=[letter.pk]))
    assert page.status_code == 200
    assert len(page.content) < 100_000  # it was 10 MB of HTML
    assert "more bytes" in page.content.decode()
    assert len(operator.get(reverse("admin:readmodels_deadletter_changelist")).content) < 100_000
    download = operator.get(reverse("admin:readmodels_deadletter_body", args=[letter.pk]))
    assert download["Content-Disposition"].startswith("attachment")
    assert download.content == poison.body

    client.logout()  # not staff: the sign-in page, never the bytes
    anonymous = client.get(reverse("admin:readmodels_deadletter_body", args=[letter.pk]))
    assert anonymous.status_code == 302 and poison.body[:100] not in anonymous.content


def test_inbox_and_outbox_pages_show_the_envelope_bounded_with_a_download(operator, pump):
    inventory.product_create(sku="LAMP-1", name="Lamp", price=Decimal("5"), on_hand=3)
    pump.settle()
    for model in (InventoryOutbox, ReadInbox):
        row = model.objects.first()
        page = operator.get(reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_change", args=[row.pk]))
        assert page.status_code == 200 and "LAMP-1" in page.content.decode()
        download = operator.get(reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_body", args=[row.pk]))
        assert json.loads(download.content) == row.envelope


def test_replay_from_the_admin_applies_a_dead_letter_whose_bytes_are_an_envelope(operator, pump):
    good = order_placed()
    letter = _dead_letter(pump, Poison("mislabelled", json.dumps(good).encode(), "", content_type="text/plain"))
    assert letter.envelope is None  # refused unread, for its content type
    response = operator.post(reverse("admin:readmodels_deadletter_changelist"),
                             {"action": "replay", "_selected_action": [str(letter.pk)]})
    assert response.status_code == 302
    assert pump.consumers["readmodels"].retry_due() == 1
    assert OrderSummary.objects.filter(order_id=good["aggregate_id"]).exists()
