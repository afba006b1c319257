"""The read API and the backend-for-frontend pages, fed by the real contexts through the
in-process pump: who may see what, and what one call returns. The other contexts are
driven through their HTTP APIs (readmodels may import only their contracts)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from rest_framework.test import APIClient

from apps.readmodels.live import changelog, streams
from apps.readmodels.models import OutboxGauge
from waybill import contexts, opsreport

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")


@pytest.fixture
def people(django_user_model):
    def client_for(user):
        client = APIClient()
        client.force_authenticate(user)
        return client

    alice = django_user_model.objects.create_user("alice", password="x" * 20)
    bob = django_user_model.objects.create_user("bob", password="x" * 20)
    staff = django_user_model.objects.create_user("staff", password="x" * 20, is_staff=True)
    return {"alice": (alice, client_for(alice)), "bob": (bob, client_for(bob)), "staff": (staff, client_for(staff))}


def _product_create(people, *, sku: str, on_hand: int) -> None:
    _, staff = people["staff"]
    response = staff.post("/api/v1/inventory/products/", {"sku": sku, "name": "Lamp", "price": "20.00",
                                                          "on_hand": on_hand}, format="json")
    assert response.status_code == 201, response.content


@dataclass(frozen=True)
class Placed:
    id: str


@pytest.fixture
def confirmed_order(pump, people):
    _product_create(people, sku="LAMP-1", on_hand=5)
    pump.settle()
    _, alice = people["alice"]
    response = alice.post("/api/v1/orders/", {"lines": [{"sku": "LAMP-1", "quantity": 2}]}, format="json")
    assert response.status_code == 202, response.content
    pump.settle()
    return Placed(response.json()["id"])


def test_the_order_page_has_the_order_its_timeline_and_live_products_in_one_call(people, confirmed_order):
    _, alice = people["alice"]
    response = alice.get(f"/api/v1/read/pages/orders/{confirmed_order.id}/")
    assert response.status_code == 200, response.content
    page = response.json()
    order = page["order"]
    assert (order["id"], order["status"], order["total"], order["currency"], order["order_version"]) == (
        confirmed_order.id, "CONFIRMED", "40.00", "EUR", 2)
    assert [step["step"] for step in order["timeline"]] == ["placed", "stock_reserved", "payment_charged", "confirmed"]
    assert order["version"] == 4  # one per step
    assert order["lines"] == [{"sku": "LAMP-1", "name": "Lamp", "quantity": 2, "unit_price": "20.00", "available": 3,
                               "product_version": 2}]
    assert page["products"] == [{"sku": "LAMP-1", "name": "Lamp", "price": "20.00", "available": 3, "version": 2}]
    # The summary API shows the same document.
    assert alice.get(f"/api/v1/read/orders/{confirmed_order.id}/").json() == order


def test_nobody_sees_another_customers_order_page(people, confirmed_order):
    _, bob = people["bob"]
    _, staff = people["staff"]
    for client in (bob, staff):
        assert client.get(f"/api/v1/read/pages/orders/{confirmed_order.id}/").status_code == 404
        assert client.get(f"/api/v1/read/orders/{confirmed_order.id}/").status_code == 404
    assert APIClient().get(f"/api/v1/read/pages/orders/{confirmed_order.id}/").status_code == 401
    bob_user, _ = people["bob"]
    with pytest.raises(streams.Refused):
        streams.authorise(bob_user, f"order:{confirmed_order.id}")


def test_the_shop_page_has_the_catalog_and_my_recent_orders(people, confirmed_order):
    _, alice = people["alice"]
    _, bob = people["bob"]
    page = alice.get("/api/v1/read/pages/shop/").json()
    assert [item["sku"] for item in page["catalog"]] == ["LAMP-1"]
    assert [order["id"] for order in page["recent_orders"]] == [confirmed_order.id]
    assert bob.get("/api/v1/read/pages/shop/").json()["recent_orders"] == []


def test_stock_board_and_dashboard_are_for_staff_only(people, confirmed_order):
    alice_user, alice = people["alice"]
    staff_user, staff = people["staff"]
    for path in ("/api/v1/read/stock/", "/api/v1/read/dashboard/"):
        assert alice.get(path).status_code == 403
        assert APIClient().get(path).status_code == 401
    for name in ("stock", "dashboard"):
        with pytest.raises(streams.Refused):
            streams.authorise(alice_user, name)
    stock = staff.get("/api/v1/read/stock/").json()
    assert stock == [{"sku": "LAMP-1", "name": "Lamp", "price": "20.00", "available": 3, "version": 2,
                      "on_hand": 5, "reserved": 2}]
    subscription = streams.authorise(staff_user, "stock")
    assert subscription.stream == changelog.STOCK
    position, documents = streams.snapshot(subscription)
    assert position == 2 and documents[0]["reserved"] == 2
    from apps.readmodels import services

    services.dashboard_publish(force=True)
    dashboard = staff.get("/api/v1/read/dashboard/").json()
    assert dashboard["orders_by_status"] == {"CONFIRMED": 1}
    _, (document,) = streams.snapshot(streams.authorise(staff_user, "dashboard"))
    assert document["orders_by_status"] == {"CONFIRMED": 1} and document["version"] == dashboard["version"]


def test_each_context_reports_its_outbox_to_the_dashboard_over_the_bus(pump, people):
    _product_create(people, sku="LAMP-1", on_hand=5)  # its messages wait for the relay
    waiting = contexts.get("inventory").outbox.objects.filter(sent_at__isnull=True).count()
    assert waiting >= 1
    report = opsreport.outbox_report(contexts.get("inventory"), force=True)
    assert (report.context, report.pending, report.parked, report.dead_letters) == ("inventory", waiting, 0, 0)
    assert report.oldest_pending_age_s is not None
    # Coalesced across processes: the report just recorded is in the outbox.
    assert opsreport.outbox_report(contexts.get("inventory")) is None
    assert opsreport.outbox_report(contexts.get("payments")) is None  # shares orders' outbox: orders reports it
    opsreport.outbox_report(contexts.get("orders"), force=True)
    pump.settle()
    gauges = {g.context: g for g in OutboxGauge.objects.all()}
    assert set(gauges) == {"inventory", "orders"}
    assert gauges["inventory"].pending == waiting
    _, staff = people["staff"]
    from apps.readmodels import services

    assert services.dashboard_publish(force=True)
    outboxes = staff.get("/api/v1/read/dashboard/").json()["outboxes"]
    assert [o["context"] for o in outboxes] == ["inventory", "orders"]
