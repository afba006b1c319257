"""The metrics move as orders flow: one order placed over the API and carried through its
saga by the real relay and consumers (step by step, ``pump``), scraped by staff at
/metrics before, in the middle and at the end."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.contrib.auth import get_user_model
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from apps.inventory import services as inventory
from tests.support.scrape import Scrape

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")

CONSUMERS = ("inventory", "orders", "payments", "readmodels", "webhooks")


@pytest.fixture
def scrape():
    staff = get_user_model().objects.create_user("operator", password="x" * 20, is_staff=True)
    header = f"Token {Token.objects.create(user=staff).key}"

    def scraped() -> Scrape:
        response = APIClient().get("/metrics", HTTP_AUTHORIZATION=header)
        assert response.status_code == 200, response.content
        return Scrape(response.content.decode())

    return scraped


def test_one_order_moves_the_counters_the_backlog_and_the_sagas(pump, scrape):
    inventory.product_create(sku="LAMP-1", name="Lamp", price=Decimal("20.00"), on_hand=3)
    pump.settle()  # orders knows the product; this process relays every outbox now
    alice = APIClient()
    alice.force_authenticate(get_user_model().objects.create_user("alice", password="x" * 20))
    before = scrape()
    assert before.value("waybill_outbox_backlog", context="orders") == 0

    response = alice.post("/api/v1/orders/", {"lines": [{"sku": "LAMP-1", "quantity": 1}]}, format="json")
    assert response.status_code == 202, response.content
    placed = scrape()
    # Committed with the order, not yet published.
    assert placed.value("waybill_outbox_backlog", context="orders") >= 1
    assert placed.value("waybill_sagas", state="running") == before.value("waybill_sagas", state="running") + 1

    pump.settle()
    done = scrape()
    assert done.value("waybill_outbox_backlog", context="orders") == 0
    assert done.value("waybill_outbox_oldest_unsent_age_seconds", context="orders") == 0
    assert done.value("waybill_sagas", state="running") == before.value("waybill_sagas", state="running")
    assert done.value("waybill_sagas", state="completed") == before.value("waybill_sagas", state="completed") + 1
    assert done.value("waybill_payment_breaker_state", name="payment-provider") == 0  # closed
    assert done.total("waybill_messages_published_total", context="orders") > \
        before.total("waybill_messages_published_total", context="orders")

    def grew(scraped: Scrape, name: str, /, **labels) -> float:
        return scraped.total(name, **labels) - before.total(name, **labels)

    for consumer in ("inventory", "orders", "payments", "readmodels"):
        assert grew(done, "waybill_messages_consumed_total", consumer=consumer, outcome="applied") >= 1, consumer
    assert grew(done, "waybill_messages_consumed_total", consumer="payments", type="orders.charge_payment",
                outcome="applied") == 1
    # Every applied message was timed exactly once, batched runs (each message its share)
    # and the payment provider's call (call and record, one observation) alike.
    for consumer in CONSUMERS:
        assert grew(done, "waybill_handler_seconds_count", consumer=consumer) == \
            grew(done, "waybill_messages_consumed_total", consumer=consumer, outcome="applied"), consumer
    assert grew(done, "waybill_handler_seconds_sum", consumer="payments") > 0
