"""Signatures: a delivery verifies with the receiver's recipe exactly as docs/webhooks.md
shows it, and a tampered body, a wrong secret or a stale timestamp does not."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

from apps.webhooks import signing
from apps.webhooks.models import WebhookAttempt, WebhookDelivery
from tests.support.webhook_receiver import Receiver

from .support import bring, product_updated, register, send_all

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")
DOCS = Path(__file__).resolve().parents[3] / "docs" / "webhooks.md"
Status = WebhookDelivery.Status


def documented_verify():
    """The receiver's recipe exactly as docs/webhooks.md shows it."""
    block = re.search(r"## Verify a signature.*?```python\n(.*?)```", DOCS.read_text(), re.S).group(1)
    namespace: dict = {}
    exec(block, namespace)  # noqa: S102 - our own documentation
    return namespace["verify"]


# --- signing ----------------------------------------------------------------------------------
def test_a_delivery_verifies_with_the_documented_recipe(pump, staff):
    with Receiver() as receiver:
        endpoint = register(staff, receiver.url, "inventory.product_updated")
        bring(pump, product_updated())
        assert send_all() == 1

    [request] = receiver.requests
    delivery = WebhookDelivery.objects.get()
    assert request.headers["Waybill-Webhook-Id"] == str(delivery.id)
    assert request.headers["Content-Type"] == "application/json"
    assert re.fullmatch(r"v1=[0-9a-f]{64}", request.headers["Waybill-Webhook-Signature"])
    assert documented_verify()(endpoint["secret"], request.headers, request.body)
    assert signing.verify(endpoint["secret"], request.headers, request.body)
    body = json.loads(request.body)
    assert body["type"] == "inventory.product_updated" and body["data"]["sku"] == "LAMP-1"
    assert body["id"] == str(delivery.message_id) and body["aggregate_version"] == 1
    assert request.body == delivery.body.encode()  # what was recorded is what was sent
    assert (delivery.status, delivery.attempts, delivery.last_status_code) == (Status.DELIVERED, 1, 200)
    assert delivery.last_response_ms is not None and delivery.delivered_at is not None
    assert WebhookAttempt.objects.get().succeeded


def test_a_tampered_body_a_wrong_secret_or_a_stale_timestamp_fails_verification(pump, staff):
    with Receiver() as receiver:
        endpoint = register(staff, receiver.url, "inventory.product_updated")
        bring(pump, product_updated())
        send_all()
    [request] = receiver.requests
    secret, headers, body = endpoint["secret"], request.headers, request.body
    for verify in (signing.verify, documented_verify()):
        assert verify(secret, headers, body)
        assert not verify(secret, headers, body.replace(b'"on_hand":3', b'"on_hand":9'))
        assert not verify(secret, headers, body + b" ")
        assert not verify(signing.secret_generate(), headers, body)
        assert not verify(secret, {k: v for k, v in headers.items() if "Signature" not in k}, body)
        # Replayed later: the old timestamp is refused, and a new one breaks the signature.
        old = int(time.time()) - 301
        assert not verify(secret, signing.headers_for(secret=secret, delivery_id="x", body=body, timestamp=old), body)
        forged = {**headers, "Waybill-Webhook-Timestamp": str(int(headers["Waybill-Webhook-Timestamp"]) + 1)}
        assert not verify(secret, forged, body)
