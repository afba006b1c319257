"""Webhooks over real HTTP, in both modes: a receiver on loopback registered through the
API gets the customer's order events, signed so that the documented recipe verifies them,
and a failed first try is retried by the webhooks worker."""

from __future__ import annotations

import json

import pytest

from apps.readmodels.webhooks.receiver import Receiver
from apps.readmodels.webhooks.signing import verify

from .harness import SETTLE_TIMEOUT, wait_for

pytestmark = pytest.mark.e2e
WEBHOOKS = "/api/v1/webhooks/"
# The first try of a delivery is retried after 2.5 to 5 s (WAYBILL_WEBHOOK_RETRY_BASE_SECONDS 5).
RETRY_TIMEOUT = SETTLE_TIMEOUT + 10


def test_a_receiver_gets_signed_order_events_and_a_failed_try_is_retried(shop):
    with Receiver(statuses=(500, 200)) as receiver:  # the very first request fails
        created = shop.alice.post(WEBHOOKS, json={
            "url": receiver.url, "event_types": ["orders.order_placed", "orders.order_confirmed"]})
        assert created.status_code == 201, created.text
        endpoint = created.json()
        try:
            sku = shop.create_product(on_hand=5)
            order_id = shop.order(shop.alice, {sku: 1})

            def delivered() -> list[dict] | None:
                rows = shop.alice.get(f"{WEBHOOKS}{endpoint['id']}/deliveries/").json()
                ours = [row for row in rows if row["status"] == "delivered"]
                return ours if len(ours) == 2 else None

            rows = wait_for(delivered, RETRY_TIMEOUT, "both order events delivered",
                            describe=lambda: repr(shop.alice.get(f"{WEBHOOKS}{endpoint['id']}/deliveries/").json()))
        finally:
            shop.alice.delete(f"{WEBHOOKS}{endpoint['id']}/")

    bodies = [json.loads(request.body) for request in receiver.requests]
    assert {(b["type"], b["data"]["order_id"]) for b in bodies} == {
        ("orders.order_placed", order_id), ("orders.order_confirmed", order_id)}
    for request in receiver.requests:
        assert verify(endpoint["secret"], request.headers, request.body)
        assert not verify(endpoint["secret"], request.headers, request.body.replace(b'"quantity":1', b'"quantity":2'))
    assert len(receiver.requests) == 3  # one delivery needed a second try
    assert sorted(row["attempts"] for row in rows) == [1, 2]
    assert all(row["last_status_code"] == 200 and row["last_response_ms"] is not None for row in rows)
    assert shop.alice.get(f"{WEBHOOKS}{endpoint['id']}/").status_code == 404  # deleted
