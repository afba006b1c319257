"""Helpers of the webhooks context's tests: the API as a user, registering an endpoint,
running the sender, and public events as the bus brings them."""

from __future__ import annotations

import uuid
from decimal import Decimal

from django.utils import timezone
from rest_framework.test import APIClient

from apps.inventory import contracts as inventory
from apps.orders import contracts as orders
from apps.webhooks import services
from waybill.messages import Envelope


def api(user=None) -> APIClient:
    client = APIClient()
    if user is not None:
        client.force_authenticate(user)
    return client


def register(user, url, *types, bound: bool = True) -> dict:
    """Register through the API and, unless ``bound`` is false, record its types as bound
    as the webhooks worker's reconcile does. No broker binding here: ``bring`` puts messages
    straight on the queue (tests of the bindings themselves go through the pump)."""
    response = api(user).post("/api/v1/webhooks/", {"url": url, "event_types": list(types)}, format="json")
    assert response.status_code == 201, response.content
    if bound:
        services.webhook_bindings_reconcile(bind=lambda types: None, resync=False)
    return response.json()


def send_all(max_rounds: int = 20) -> int:
    """Run the sender until nothing is due; returns how many POSTs it made."""
    sent = 0
    for _ in range(max_rounds):
        now = services.webhook_deliveries_send_due()
        if not now:
            return sent
        sent += now
    raise AssertionError(f"still sending after {max_rounds} rounds")


def envelope(payload, *, aggregate_id: str, version: int = 1) -> str:
    return Envelope(
        id=uuid.uuid4(), type=payload.message_type, schema_version=payload.schema_version,
        aggregate_id=aggregate_id, aggregate_version=version, occurred_at=timezone.now(),
        correlation_id=uuid.uuid4(), payload=payload.model_dump(mode="json"),
    ).to_json()


def product_updated(*, on_hand: int = 3, version: int = 1, sku: str = "LAMP-1") -> str:
    """Inventory's document, as the bus brings it (webhooks may not call inventory)."""
    return envelope(inventory.ProductUpdated(sku=sku, name="Lamp", price=Decimal("5.00"), on_hand=on_hand,
                                             reserved=0, available=on_hand), aggregate_id=sku, version=version)


def order_placed(*, customer_id: int) -> tuple[str, str]:
    order_id = uuid.uuid4()
    five = orders.Money(amount=Decimal("5"), currency="EUR")
    snapshot = orders.OrderPlaced(order_id=order_id, customer_id=customer_id, status="PENDING", total=five,
                                  lines=[orders.OrderLine(sku="LAMP-1", name="Lamp", quantity=1, unit_price=five)])
    return envelope(snapshot, aggregate_id=str(order_id)), str(order_id)


def bring(pump, body: str, *consumers: str) -> list:
    """Put ``body`` on each consumer's queue (default: webhooks') and consume it."""
    outcomes = []
    for name in consumers or ("webhooks",):
        pump.publish_raw(name, body)
        outcomes += pump.deliver(name)
    return outcomes
