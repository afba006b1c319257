"""Webhooks over real HTTP, in both modes: a receiver on loopback registered through the
API gets the customer's order events, signed so that the documented recipe verifies them,
and a failed first try is retried by the webhooks worker."""

from __future__ import annotations

import json

import pytest

from apps.webhooks.signing import verify
from tests.support.webhook_receiver import Receiver

from .harness import SETTLE_TIMEOUT, wait_for

pytestmark = pytest.mark.e2e
WEBHOOKS = "/api/v1/webhooks/"
# The first try of a delivery is retried after 2.5 to 5 s (WAYBILL_WEBHOOK_RETRY_BASE_SECONDS 5).
RETRY_TIMEOUT = SETTLE_TIMEOUT + 10


def test_a_receiver_gets_signed_order_events_and_a_failed_try_is_retried(shop):
    """The shared platform runs other tests meanwhile, some of them alice's orders: the
    endpoint may receive their events too, so the checks pick out this order's events,
    and follow whichever delivery got the one 500 (the very first request)."""
    with Receiver(statuses=(500, 200)) as receiver:  # the very first request fails
        created = shop.alice.post(WEBHOOKS, json={
            "url": receiver.url, "event_types": ["orders.order_placed", "orders.order_confirmed"]})
        assert created.status_code == 201, created.text
        endpoint = created.json()
        deliveries_url = f"{WEBHOOKS}{endpoint['id']}/deliveries/"
        try:
            # Its types take effect once the webhooks worker has bound them (issue 12).
            wait_for(lambda: shop.alice.get(f"{WEBHOOKS}{endpoint['id']}/").json()["receiving"], SETTLE_TIMEOUT,
                     "the endpoint's types to be bound")
            sku = shop.create_product(on_hand=5)
            order_id = shop.order(shop.alice, {sku: 1})

            def settled() -> dict[str, dict] | None:
                """Delivery rows by id, once this order's two events and the retried one are delivered."""
                rows = {row["id"]: row for row in shop.alice.get(deliveries_url).json()}
                ours = {json.loads(r.body)["id"] for r in receiver.requests
                        if json.loads(r.body)["data"].get("order_id") == order_id}
                delivered = {row["message_id"] for row in rows.values() if row["status"] == "delivered"}
                retried = receiver.requests and rows.get(_delivery_id(receiver.requests[0]))
                done = len(ours) == 2 and ours <= delivered and retried and retried["status"] == "delivered"
                return rows if done else None

            rows = wait_for(settled, RETRY_TIMEOUT, "this order's events and the retried one delivered",
                            describe=lambda: repr(shop.alice.get(deliveries_url).json()))
        finally:
            shop.alice.delete(f"{WEBHOOKS}{endpoint['id']}/")

    bodies = [json.loads(request.body) for request in receiver.requests]
    assert {b["type"] for b in bodies if b["data"].get("order_id") == order_id} == {
        "orders.order_placed", "orders.order_confirmed"}
    for request in receiver.requests:
        assert verify(endpoint["secret"], request.headers, request.body)
        assert not verify(endpoint["secret"], request.headers, request.body + b" ")
    # The delivery that got the 500 was sent again with the same id, and then succeeded.
    retried = _delivery_id(receiver.requests[0])
    assert [_delivery_id(r) for r in receiver.requests].count(retried) == 2
    assert (rows[retried]["attempts"], rows[retried]["last_status_code"]) == (2, 200)
    assert all(row["last_response_ms"] is not None for row in rows.values() if row["status"] == "delivered")
    assert shop.alice.get(f"{WEBHOOKS}{endpoint['id']}/").status_code == 404  # deleted


def _delivery_id(request) -> str:
    return next(value for name, value in request.headers.items() if name.lower() == "waybill-webhook-id")
