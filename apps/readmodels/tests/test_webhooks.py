"""Webhooks against a real receiver on loopback: signed deliveries that a receiver can
verify with the documented recipe, retries with backoff, giving up, redelivery, and a slow
receiver that never holds up the projector. The pump moves the bus; the sender (the
webhooks consumer's periodic job) is called directly."""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from decimal import Decimal
from pathlib import Path

import pytest
from django.contrib import admin
from django.db import connections
from django.test import RequestFactory
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from apps.inventory import contracts as inventory
from apps.orders import contracts as orders
from apps.readmodels.models import CatalogItem
from apps.readmodels.webhooks import services, signing
from apps.readmodels.webhooks.models import WebhookAttempt, WebhookDelivery, WebhookEndpoint
from apps.readmodels.webhooks.receiver import Receiver
from waybill.messages import Envelope

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")
DOCS = Path(__file__).resolve().parents[3] / "docs" / "webhooks.md"
Status = WebhookDelivery.Status


@pytest.fixture(autouse=True)
def webhook_settings(settings):
    settings.WAYBILL_WEBHOOK_ALLOW_LOOPBACK = True
    settings.WAYBILL_WEBHOOK_RETRY_BASE_SECONDS = 0.0  # every retry due at once
    settings.WAYBILL_WEBHOOK_MAX_ATTEMPTS = 4
    settings.WAYBILL_WEBHOOK_TIMEOUT_SECONDS = 2.0
    return settings


@pytest.fixture
def staff(django_user_model):
    return django_user_model.objects.create_user("ops", password="x" * 20, is_staff=True)


@pytest.fixture
def alice(django_user_model):
    return django_user_model.objects.create_user("alice", password="x" * 20)


@pytest.fixture
def bob(django_user_model):
    return django_user_model.objects.create_user("bob", password="x" * 20)


def api(user=None) -> APIClient:
    client = APIClient()
    if user is not None:
        client.force_authenticate(user)
    return client


def register(user, url, *types) -> dict:
    response = api(user).post("/api/v1/webhooks/", {"url": url, "event_types": list(types)}, format="json")
    assert response.status_code == 201, response.content
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


def documented_verify():
    """The receiver's recipe exactly as docs/webhooks.md shows it."""
    block = re.search(r"## Verify a signature.*?```python\n(.*?)```", DOCS.read_text(), re.S).group(1)
    namespace: dict = {}
    exec(block, namespace)  # noqa: S102 - our own documentation
    return namespace["verify"]


def envelope(payload, *, aggregate_id: str, version: int = 1) -> str:
    return Envelope(
        id=uuid.uuid4(), type=payload.message_type, schema_version=payload.schema_version,
        aggregate_id=aggregate_id, aggregate_version=version, occurred_at=timezone.now(),
        correlation_id=uuid.uuid4(), payload=payload.model_dump(mode="json"),
    ).to_json()


def product_updated(*, on_hand: int = 3, version: int = 1, sku: str = "LAMP-1") -> str:
    """Inventory's document, as the bus brings it (readmodels may not call inventory)."""
    return envelope(inventory.ProductUpdated(sku=sku, name="Lamp", price=Decimal("5.00"), on_hand=on_hand,
                                             reserved=0, available=on_hand), aggregate_id=sku, version=version)


def order_placed(*, customer_id: int) -> tuple[str, str]:
    order_id = uuid.uuid4()
    snapshot = orders.OrderPlaced(order_id=order_id, customer_id=customer_id, status="PENDING", total=Decimal("5"),
                                  lines=[orders.OrderLine(sku="LAMP-1", name="Lamp", quantity=1,
                                                          unit_price=Decimal("5"))])
    return envelope(snapshot, aggregate_id=str(order_id)), str(order_id)


def bring(pump, body: str, *consumers: str) -> list:
    """Put ``body`` on each consumer's queue (default: webhooks') and consume it."""
    outcomes = []
    for name in consumers or ("webhooks",):
        pump.publish_raw(name, body)
        outcomes += pump.deliver(name)
    return outcomes


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


# --- retries, giving up, redelivery ------------------------------------------------------------
def test_a_failing_receiver_gets_retries_until_it_answers(pump, staff):
    with Receiver(statuses=(500, 500, 200)) as receiver:
        register(staff, receiver.url, "inventory.product_updated")
        bring(pump, product_updated())
        assert send_all() == 3

    delivery = WebhookDelivery.objects.get()
    assert (delivery.status, delivery.attempts, delivery.last_status_code) == (Status.DELIVERED, 3, 200)
    assert [(a.status_code, a.succeeded) for a in delivery.attempt_log.all()] == [
        (500, False), (500, False), (200, True)]
    # Every retry is the same delivery with the same body, freshly signed.
    assert {r.headers["Waybill-Webhook-Id"] for r in receiver.requests} == {str(delivery.id)}
    assert {r.body for r in receiver.requests} == {delivery.body.encode()}


def test_retries_back_off(pump, staff, webhook_settings):
    webhook_settings.WAYBILL_WEBHOOK_RETRY_BASE_SECONDS = 60.0
    with Receiver(statuses=(503,)) as receiver:
        register(staff, receiver.url, "inventory.product_updated")
        bring(pump, product_updated())
        assert services.webhook_deliveries_send_due() == 1
        assert services.webhook_deliveries_send_due() == 0  # not due yet
    delivery = WebhookDelivery.objects.get()
    assert delivery.status == Status.PENDING and delivery.attempts == 1
    wait = (delivery.next_attempt_at - WebhookAttempt.objects.get().started_at).total_seconds()
    assert 30 <= wait <= 61  # base 60 s for the first retry, half of it jitter
    assert len(receiver.requests) == 1


def test_a_receiver_that_always_fails_is_given_up_on_then_redelivered_from_the_admin(pump, staff, client,
                                                                                     django_user_model):
    with Receiver(statuses=(500,)) as receiver:
        register(staff, receiver.url, "inventory.product_updated")
        bring(pump, product_updated())
        assert send_all() == 4  # WAYBILL_WEBHOOK_MAX_ATTEMPTS
        delivery = WebhookDelivery.objects.get()
        assert (delivery.status, delivery.attempts, delivery.next_attempt_at) == (Status.FAILED, 4, None)
        assert delivery.last_error.startswith("HTTP 500")

        # Viewing is not operating: without the change permission there is no redeliver.
        viewer = django_user_model.objects.create_user("viewer", password="x" * 20, is_staff=True)
        request = RequestFactory().get("/")
        request.user = viewer
        model_admin = admin.site._registry[WebhookDelivery]
        assert "redeliver" not in model_admin.get_actions(request)

        receiver.statuses = [200]
        operator = django_user_model.objects.create_superuser("operator", password="x" * 20)
        client.force_login(operator)
        response = client.post(reverse("admin:readmodels_webhookdelivery_changelist"),
                               {"action": "redeliver", "_selected_action": [str(delivery.pk)]})
        assert response.status_code == 302
        delivery.refresh_from_db()
        assert (delivery.status, delivery.attempts, delivery.redeliveries) == (Status.PENDING, 0, 1)
        assert delivery.last_redelivered_by == "operator" and delivery.last_redelivered_at is not None
        assert send_all() == 1
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts, delivery.last_status_code) == (Status.DELIVERED, 1, 200)
    assert delivery.attempt_log.count() == 5  # the history stays
    assert len({r.headers["Waybill-Webhook-Id"] for r in receiver.requests}) == 1


def test_an_unreachable_receiver_is_a_failure_with_the_error_recorded(pump, staff):
    with Receiver() as receiver:
        url = receiver.url
    register(staff, url, "inventory.product_updated")  # nobody listens there any more
    bring(pump, product_updated())
    assert send_all() == 4
    delivery = WebhookDelivery.objects.get()
    assert delivery.status == Status.FAILED and delivery.last_status_code is None
    assert "ConnectError" in delivery.last_error


def test_the_admin_shows_deliveries_with_their_attempts_and_never_a_secret(pump, staff, client, django_user_model):
    with Receiver(statuses=(502, 200)) as receiver:
        endpoint = register(staff, receiver.url, "inventory.product_updated")
        bring(pump, product_updated())
        send_all()
    client.force_login(django_user_model.objects.create_superuser("operator", password="x" * 20))
    delivery = WebhookDelivery.objects.get()
    pages = [
        client.get(reverse("admin:readmodels_webhookdelivery_changelist")),
        client.get(reverse("admin:readmodels_webhookdelivery_change", args=[delivery.pk])),
        client.get(reverse("admin:readmodels_webhookendpoint_changelist")),
        client.get(reverse("admin:readmodels_webhookendpoint_change", args=[endpoint["id"]])),
    ]
    assert [page.status_code for page in pages] == [200] * 4
    detail = pages[1].content.decode()
    assert "502" in detail and "200" in detail  # both attempts
    assert all(endpoint["secret"] not in page.content.decode() for page in pages)


# --- bulkhead and fan-out ----------------------------------------------------------------------
def test_a_slow_receiver_does_not_hold_up_the_projector(pump, staff):
    with Receiver() as receiver:
        receiver.gate = threading.Event()
        register(staff, receiver.url, "inventory.product_updated")
        bring(pump, product_updated(on_hand=3), "readmodels", "webhooks")

        def send():
            try:
                services.webhook_deliveries_send_due()
            finally:
                connections.close_all()

        sender = threading.Thread(target=send)
        sender.start()
        assert receiver.arrived.wait(5), "the receiver never got the first delivery"
        # While that POST hangs, the projector and the webhooks consumer keep going.
        update = product_updated(on_hand=8, version=2)
        bring(pump, update, "readmodels")
        assert CatalogItem.objects.get(sku="LAMP-1").available == 8
        bring(pump, update, "webhooks")
        assert WebhookDelivery.objects.filter(status=Status.PENDING).count() == 2
        assert sender.is_alive()  # still waiting for the slow receiver
        receiver.gate.set()
        sender.join(10)
        assert not sender.is_alive()
        receiver.gate = None
        assert send_all() == 1
    assert WebhookDelivery.objects.filter(status=Status.DELIVERED).count() == 2


def test_a_customer_endpoint_gets_only_that_customers_orders(pump, staff, alice, bob):
    with Receiver() as receiver:
        register(alice, receiver.url + "/alice", "orders.order_placed")
        register(staff, receiver.url + "/staff", "orders.order_placed")
        alices, mine = order_placed(customer_id=alice.id)
        bring(pump, alices)
        bring(pump, order_placed(customer_id=bob.id)[0])
        assert send_all() == 3
    by_path = {}
    for request in receiver.requests:
        by_path.setdefault(request.path, []).append(json.loads(request.body)["data"]["order_id"])
    assert by_path["/hooks/alice"] == [mine]
    assert len(by_path["/hooks/staff"]) == 2


def test_a_product_listing_is_for_anyone_and_stock_for_staff_only(pump, staff, alice):
    with Receiver() as receiver:
        register(alice, receiver.url + "/alice", "inventory.product_listed")
        register(staff, receiver.url + "/staff", "inventory.product_listed", "inventory.product_updated")
        bring(pump, envelope(inventory.ProductListed(sku="LAMP-1", name="Lamp", price=Decimal("5")),
                             aggregate_id="LAMP-1"))
        bring(pump, product_updated())
        assert send_all() == 3
    seen = sorted((r.path, json.loads(r.body)["type"]) for r in receiver.requests)
    assert seen == [("/hooks/alice", "inventory.product_listed"), ("/hooks/staff", "inventory.product_listed"),
                    ("/hooks/staff", "inventory.product_updated")]


def test_a_message_brought_twice_makes_one_delivery(pump, staff):
    from waybill.consumer import Outcome
    from waybill.messages import parse

    register(staff, "http://127.0.0.1:9/hooks", "inventory.product_updated")
    body = product_updated()
    assert bring(pump, body) == [Outcome.APPLIED]
    assert bring(pump, body) == [Outcome.DUPLICATE]  # the inbox
    parsed, payload = parse(body)
    services.webhook_deliveries_create(envelope=parsed, data=payload.model_dump(mode="json"))  # the constraint
    assert WebhookDelivery.objects.count() == 1


def test_a_deleted_endpoint_gets_nothing_more(pump, staff):
    with Receiver() as receiver:
        endpoint = register(staff, receiver.url, "inventory.product_updated")
        bring(pump, product_updated())
        assert api(staff).delete(f"/api/v1/webhooks/{endpoint['id']}/").status_code == 204
        bring(pump, product_updated(on_hand=5, version=2))
        assert send_all() == 0
    assert receiver.requests == []
    assert WebhookDelivery.objects.get().last_error == "endpoint deleted"
    assert api(staff).get(f"/api/v1/webhooks/{endpoint['id']}/").status_code == 404


# --- the API -----------------------------------------------------------------------------------
@pytest.mark.parametrize(("body", "field"), [
    ({"url": "ftp://example.com/x", "event_types": ["orders.order_placed"]}, "url"),
    ({"url": "not a url", "event_types": ["orders.order_placed"]}, "url"),
    ({"url": "http://example.com/hooks", "event_types": ["orders.order_placed"]}, "url"),
    ({"url": "https://10.0.0.7/hooks", "event_types": ["orders.order_placed"]}, "url"),
    ({"url": "https://169.254.169.254/latest", "event_types": ["orders.order_placed"]}, "url"),
    ({"url": "https://user:pw@example.com/hooks", "event_types": ["orders.order_placed"]}, "url"),
    ({"url": "https://example.com/hooks", "event_types": []}, "event_types"),
    ({"url": "https://example.com/hooks", "event_types": ["orders.no_such_event"]}, "event_types"),
    ({"url": "https://example.com/hooks", "event_types": ["orders.charge_payment"]}, "event_types"),
    ({"url": "https://example.com/hooks", "event_types": ["inventory.product_updated"]}, "event_types"),
    ({"url": "https://example.com/hooks"}, "event_types"),
])
def test_registration_refuses_bad_input_naming_the_field(alice, body, field):
    response = api(alice).post("/api/v1/webhooks/", body, format="json")
    assert response.status_code == 400, response.content
    assert field in response.json() and response.json()[field]
    assert not WebhookEndpoint.objects.exists()


def test_loopback_is_refused_where_it_is_not_allowed(alice, webhook_settings):
    webhook_settings.WAYBILL_WEBHOOK_ALLOW_LOOPBACK = False
    for url in ("http://127.0.0.1:8000/hooks", "https://localhost/hooks", "https://[::1]/hooks"):
        response = api(alice).post("/api/v1/webhooks/", {"url": url, "event_types": ["orders.order_placed"]},
                                   format="json")
        assert response.status_code == 400 and "url" in response.json(), url


def test_endpoints_are_private_and_the_secret_is_shown_once(pump, alice, bob):
    assert api().get("/api/v1/webhooks/").status_code == 401
    created = register(alice, "https://example.com/hooks", "orders.order_confirmed", "orders.order_placed")
    assert created["secret"].startswith("whsec_") and len(created["secret"]) > 40
    assert created["event_types"] == ["orders.order_confirmed", "orders.order_placed"]
    mine = api(alice).get(f"/api/v1/webhooks/{created['id']}/")
    assert mine.status_code == 200 and "secret" not in mine.json()
    listed = api(alice).get("/api/v1/webhooks/").json()
    assert [e["id"] for e in listed] == [created["id"]] and "secret" not in listed[0]
    assert api(alice).get(f"/api/v1/webhooks/{created['id']}/deliveries/").json() == []
    # Bob sees none of it, and cannot delete it.
    assert api(bob).get("/api/v1/webhooks/").json() == []
    for method, path in (("get", ""), ("get", "deliveries/"), ("delete", "")):
        response = getattr(api(bob), method)(f"/api/v1/webhooks/{created['id']}/{path}")
        assert response.status_code == 404, (method, path)
        assert created["url"] not in response.content.decode()
    assert WebhookEndpoint.objects.get().active


def test_deliveries_api_shows_status_and_response_time(pump, staff):
    with Receiver(statuses=(500, 204)) as receiver:
        endpoint = register(staff, receiver.url, "inventory.product_updated")
        bring(pump, product_updated())
        send_all()
    [row] = api(staff).get(f"/api/v1/webhooks/{endpoint['id']}/deliveries/").json()
    assert row["status"] == "delivered" and row["attempts"] == 2 and row["last_status_code"] == 204
    assert isinstance(row["last_response_ms"], int) and row["event_type"] == "inventory.product_updated"
    assert row["last_error"] == "" and row["delivered_at"]


def test_the_api_is_in_the_schema(alice):
    schema = api(alice).get("/api/schema/", HTTP_ACCEPT="application/json")
    assert schema.status_code == 200
    paths = json.loads(schema.content)["paths"]
    assert {"/api/v1/webhooks/", "/api/v1/webhooks/{endpoint_id}/",
            "/api/v1/webhooks/{endpoint_id}/deliveries/"} <= paths.keys()
