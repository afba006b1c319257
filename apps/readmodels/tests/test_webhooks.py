"""Webhooks against a real receiver on loopback: signed deliveries that a receiver can
verify with the documented recipe, retries with backoff, giving up, redelivery, and a slow
receiver that never holds up the projector. The pump moves the bus; the sender (the
webhooks consumer's periodic job) is called directly."""

from __future__ import annotations

import json
import re
import socket
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
    assert delivery.last_error == "connection refused"  # the class; the detail is for staff
    assert "ConnectError" in delivery.attempt_log.last().detail


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


@pytest.mark.parametrize("host", ["224.0.0.1", "239.255.255.250", "[ff02::1]", "[ff0e::1]", "255.255.255.255",
                                  "240.0.0.1", "0.0.0.0", "[::ffff:224.0.0.1]", "[::ffff:10.0.0.7]",
                                  "[64:ff9b::a00:7]", "100.64.0.1"])
def test_registration_refuses_multicast_and_other_non_unicast_addresses(alice, host):
    response = api(alice).post("/api/v1/webhooks/", {"url": f"https://{host}/hooks",
                                                      "event_types": ["orders.order_placed"]}, format="json")
    assert response.status_code == 400, response.content
    assert "public unicast" in response.json()["url"][0]
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


# --- a bounded POST ----------------------------------------------------------------------------
class Trickler:
    """A receiver that answers one byte at a time, a fifth of a second apart, each read well
    within httpx's per-read timeout: in the status line and headers, or in a body that
    claims to be long. It stops when the sender hangs up, or (bounded) after 20 s."""

    def __init__(self, phase: str):
        self.phase = phase
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.hung_up = threading.Event()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.listener.getsockname()[1]}/hooks"

    def _serve(self) -> None:
        self.listener.settimeout(20)
        try:
            conn, _ = self.listener.accept()
        except OSError:
            return
        with conn:
            conn.recv(65536)
            head = b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n"
            if self.phase == "body":
                conn.sendall(head)
                drip = b"x" * 100000
            else:
                drip = head
            deadline = time.monotonic() + 20
            for byte in drip:
                if self.stop.wait(0.2) or time.monotonic() > deadline:
                    return
                try:
                    conn.sendall(bytes([byte]))
                except OSError:
                    self.hung_up.set()
                    return

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.listener.close()
        self.thread.join(5)


@pytest.mark.parametrize("phase", ["headers", "body"])
def test_a_trickling_receiver_is_cut_off_at_the_deadline(pump, staff, webhook_settings, phase):
    webhook_settings.WAYBILL_WEBHOOK_TIMEOUT_SECONDS = 1.0
    with Trickler(phase) as receiver:
        register(staff, receiver.url, "inventory.product_updated")
        bring(pump, product_updated())
        start = time.monotonic()
        assert services.webhook_deliveries_send_due() == 1
        took = time.monotonic() - start
        assert receiver.hung_up.wait(5), "the sender never hung up"
    assert took < 3.0, f"one POST took {took:.1f} s with a 1 s deadline"
    attempt = WebhookAttempt.objects.get()
    assert not attempt.succeeded and attempt.error == "timeout"
    assert WebhookDelivery.objects.get().status == Status.PENDING  # to be retried


def test_only_the_start_of_a_huge_answer_is_read(pump, staff):
    with Receiver(statuses=(500,)) as receiver:
        receiver.answer = b"A" * (64 * 1024 * 1024)  # more than any socket buffer holds
        register(staff, receiver.url, "inventory.product_updated")
        bring(pump, product_updated())
        assert services.webhook_deliveries_send_due() == 1
        assert receiver.answered.wait(10)
    assert receiver.answers == [False]  # the sender hung up after the first kilobyte
    attempt = WebhookAttempt.objects.get()
    assert attempt.error == "HTTP 500" and attempt.detail == "A" * 300


def test_the_lease_outlasts_a_whole_batch(pump, staff, webhook_settings, monkeypatch):
    """20 deliveries, 8 at a time, 15 s each at worst: 3 rounds, 45 s, and the claim must
    hold longer than that, or another sender takes the rows back and POSTs them again."""
    webhook_settings.WAYBILL_WEBHOOK_TIMEOUT_SECONDS = 15.0
    webhook_settings.WAYBILL_WEBHOOK_BATCH_SIZE = 20
    webhook_settings.WAYBILL_WEBHOOK_CONCURRENCY = 8
    register(staff, "http://127.0.0.1:9/hooks", "inventory.product_updated")
    for version in range(1, 21):
        bring(pump, product_updated(version=version, on_hand=version))
    leases = []

    def post(**kwargs):
        row = WebhookDelivery.objects.get(pk=kwargs["delivery_id"])
        leases.append((row.next_attempt_at - timezone.now()).total_seconds())
        return services.delivery.Outcome(timezone.now(), 1, 200)

    monkeypatch.setattr(services.delivery, "post", post)
    try:
        assert services.webhook_deliveries_send_due() == 20
    finally:
        connections.close_all()  # the pool's threads opened their own
    assert len(leases) == 20 and min(leases) > 3 * 15.0 + 10


# --- where a POST may go (SSRF) ----------------------------------------------------------------
def fake_resolver(monkeypatch, answers: dict[str, list[str]]):
    """``getaddrinfo`` answering for the names in ``answers`` (each call takes the next
    answer, the last one repeats: a name that changes its answer), the real one otherwise."""
    real = socket.getaddrinfo
    calls: dict[str, int] = {}

    def getaddrinfo(host, port, *args, **kwargs):
        if host not in answers:
            return real(host, port, *args, **kwargs)
        n = calls[host] = calls.get(host, 0) + 1
        address = answers[host][min(n, len(answers[host])) - 1]
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        return [(family, socket.SOCK_STREAM, 6, "", (address, port))]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return calls


@pytest.mark.parametrize("address", ["10.0.0.7", "169.254.169.254", "192.168.1.1", "::ffff:10.0.0.7", "fd00::1",
                                     "224.0.0.1", "ff02::1", "64:ff9b::a00:7"])
def test_a_name_that_resolves_to_a_private_address_is_refused_when_sending(pump, alice, monkeypatch, address):
    fake_resolver(monkeypatch, {"hooks.example.com": [address]})
    endpoint = register(alice, "https://hooks.example.com/hooks", "inventory.product_listed")  # text is fine
    bring(pump, envelope(inventory.ProductListed(sku="LAMP-1", name="Lamp", price=Decimal("5")), aggregate_id="LAMP-1"))
    assert services.webhook_deliveries_send_due() == 1
    attempt = WebhookAttempt.objects.get()
    assert attempt.error == "address not allowed" and address in attempt.detail
    [row] = api(alice).get(f"/api/v1/webhooks/{endpoint['id']}/deliveries/").json()
    assert row["last_error"] == "address not allowed" and address not in json.dumps(row)


def test_loopback_allowed_means_loopback_only(pump, staff, monkeypatch):
    fake_resolver(monkeypatch, {"intranet.test": ["10.1.2.3"]})
    register(staff, "http://127.0.0.1:9/hooks", "inventory.product_updated")  # allowed: loopback
    WebhookEndpoint.objects.update(url="http://intranet.test/hooks")  # as if it passed the text check
    bring(pump, product_updated())
    services.webhook_deliveries_send_due()
    assert WebhookAttempt.objects.get().error == "address not allowed"


def test_the_post_goes_to_the_address_that_was_checked(pump, staff, monkeypatch):
    """DNS rebinding: the name answers loopback when checked, then an address where
    nobody listens (it could as well be an internal one). The POST must reach the first."""
    with Receiver() as receiver:
        port = receiver.server.server_address[1]
        calls = fake_resolver(monkeypatch, {"receiver.test": ["127.0.0.1", "127.0.0.2"]})
        register(staff, receiver.url, "inventory.product_updated")
        WebhookEndpoint.objects.update(url=f"http://receiver.test:{port}/hooks")  # plain http: only to loopback
        bring(pump, product_updated())
        assert services.webhook_deliveries_send_due() == 1
    assert calls["receiver.test"] == 1  # resolved once, for the check
    [request] = receiver.requests
    assert request.headers["Host"] == f"receiver.test:{port}"
    assert WebhookDelivery.objects.get().status == Status.DELIVERED


def test_the_owner_never_sees_what_the_receiver_answered(pump, staff, client, django_user_model):
    with Receiver(statuses=(500,)) as receiver:
        receiver.answer = b"internal: db password is hunter2"
        endpoint = register(staff, receiver.url, "inventory.product_updated")
        bring(pump, product_updated())
        services.webhook_deliveries_send_due()
    shown = api(staff).get(f"/api/v1/webhooks/{endpoint['id']}/deliveries/")
    assert shown.json()[0]["last_error"] == "HTTP 500"
    assert b"hunter2" not in shown.content
    # Staff operating the platform see it, in the admin's attempts.
    client.force_login(django_user_model.objects.create_superuser("operator", password="x" * 20))
    page = client.get(reverse("admin:readmodels_webhookdelivery_change", args=[WebhookDelivery.objects.get().pk]))
    assert "hunter2" in page.content.decode()


# --- rights are read, never copied ---------------------------------------------------------------
def test_a_demoted_staff_member_no_longer_gets_customers_events(pump, staff, alice):
    with Receiver() as receiver:
        register(staff, receiver.url + "/staff", "orders.order_placed", "inventory.product_updated")
        bring(pump, order_placed(customer_id=alice.id)[0])  # recorded while staff...
        staff.is_staff = False
        staff.save()
        assert services.webhook_deliveries_send_due() == 0  # ...but not sent once demoted
        bring(pump, order_placed(customer_id=alice.id)[0])
        bring(pump, product_updated())
        assert send_all() == 0
    assert receiver.requests == []
    assert WebhookDelivery.objects.get().last_error == services.NOT_PERMITTED  # only the first was recorded


def test_a_deactivated_user_gets_nothing_even_of_their_own_orders(pump, alice):
    with Receiver() as receiver:
        register(alice, receiver.url, "orders.order_placed")
        bring(pump, order_placed(customer_id=alice.id)[0])
        alice.is_active = False
        alice.save()
        bring(pump, order_placed(customer_id=alice.id)[0])
        assert send_all() == 0
    assert receiver.requests == []
    assert list(WebhookDelivery.objects.values_list("status", flat=True)) == [Status.FAILED]


def test_a_promoted_user_gets_other_customers_events_from_then_on(pump, alice, bob):
    with Receiver() as receiver:
        register(alice, receiver.url, "orders.order_placed")
        bring(pump, order_placed(customer_id=bob.id)[0])
        alice.is_staff = True
        alice.save()
        bring(pump, order_placed(customer_id=bob.id)[0])
        assert send_all() == 1
    assert len(receiver.requests) == 1


# --- retention ---------------------------------------------------------------------------------
def test_finished_deliveries_are_pruned_after_the_retention(pump, staff, webhook_settings, monkeypatch):
    webhook_settings.WAYBILL_WEBHOOK_RETENTION_SECONDS = 3600
    endpoint = register(staff, "http://127.0.0.1:9/hooks", "inventory.product_updated")
    for version in range(1, 6):
        bring(pump, product_updated(version=version))
    rows = list(WebhookDelivery.objects.order_by("created_at"))
    old = timezone.now() - timezone.timedelta(hours=2)
    states = [(Status.DELIVERED, old, None), (Status.FAILED, old, None), (Status.PENDING, old, None),
              (Status.DELIVERED, timezone.now(), None), (Status.FAILED, old, timezone.now())]
    for row, (status, created, redelivered) in zip(rows, states, strict=True):
        WebhookDelivery.objects.filter(pk=row.pk).update(status=status, created_at=created,
                                                         last_redelivered_at=redelivered)
        WebhookAttempt.objects.create(delivery=row, started_at=created, response_ms=1, succeeded=False)
    monkeypatch.setattr(services, "_next_prune", 0.0)
    assert services.webhook_deliveries_prune_due() == 2
    assert services.webhook_deliveries_prune_due() == 0  # not again for a while
    assert {r.pk for r in WebhookDelivery.objects.all()} == {r.pk for r in rows[2:]}
    assert WebhookAttempt.objects.count() == 3
    # A deleted endpoint goes once its history has.
    api(staff).delete(f"/api/v1/webhooks/{endpoint['id']}/")
    WebhookEndpoint.objects.update(deleted_at=old)
    WebhookDelivery.objects.update(status=Status.FAILED, created_at=old, last_redelivered_at=None)
    assert services.webhook_deliveries_prune() == 3
    assert not WebhookEndpoint.objects.exists() and not WebhookAttempt.objects.exists()


def test_the_webhooks_consumer_prunes_periodically():
    from waybill import contexts

    assert services.webhook_deliveries_prune_due in [job.run for job in contexts.get("webhooks").periodic]
