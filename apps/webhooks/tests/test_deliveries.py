"""Deliveries against a real receiver on loopback: retries with backoff, giving up,
redelivery from the admin, fan-out by audience, a slow receiver that holds up no other
consumer, a POST bounded in time and size, and retention. The pump moves the bus; the
sender (the context's periodic job) is called directly."""

from __future__ import annotations

import json
import socket
import threading
import time
import uuid
from decimal import Decimal

import pytest
from django.contrib import admin
from django.db import connections
from django.test import RequestFactory
from django.urls import reverse
from django.utils import timezone

from apps.inventory import contracts as inventory
from apps.orders import contracts as orders
from apps.webhooks import services
from apps.webhooks.models import WebhookAttempt, WebhookDelivery, WebhookEndpoint
from tests.support.webhook_receiver import Receiver
from waybill.consumer import Outcome
from waybill.messages import parse

from .support import api, bring, envelope, order_placed, product_updated, register, send_all

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")
Status = WebhookDelivery.Status


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
        response = client.post(reverse("admin:webhooks_webhookdelivery_changelist"),
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
        client.get(reverse("admin:webhooks_webhookdelivery_changelist")),
        client.get(reverse("admin:webhooks_webhookdelivery_change", args=[delivery.pk])),
        client.get(reverse("admin:webhooks_webhookendpoint_changelist")),
        client.get(reverse("admin:webhooks_webhookendpoint_change", args=[endpoint["id"]])),
    ]
    assert [page.status_code for page in pages] == [200] * 4
    detail = pages[1].content.decode()
    assert "502" in detail and "200" in detail  # both attempts
    assert all(endpoint["secret"] not in page.content.decode() for page in pages)


# --- bulkhead and fan-out ----------------------------------------------------------------------
def test_a_slow_receiver_holds_up_no_consumer(pump, staff):
    """While a POST hangs, the webhooks consumer keeps recording deliveries, and another
    context's consumer (the read-model projector) keeps applying the same events."""
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
        update = product_updated(on_hand=8, version=2)
        assert bring(pump, update, "readmodels") == [Outcome.APPLIED]
        assert bring(pump, update, "webhooks") == [Outcome.APPLIED]
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


def test_an_event_published_as_v1_reaches_an_endpoint_on_v2_as_v2_and_says_so(pump, staff):
    """An order event from before amounts carried their currency (v1) reaches an endpoint
    registered for the newest version as v2, with the schema_version it is in."""
    placed, order_id = order_placed(customer_id=staff.id)
    as_v1 = json.loads(placed)
    as_v1.update(schema_version=1, payload=orders.money_as_a_bare_amount(as_v1["payload"]))
    with Receiver() as receiver:
        register(staff, receiver.url + "/staff", "orders.order_placed")
        bring(pump, json.dumps(as_v1))
        assert send_all() == 1
    [body] = [json.loads(request.body) for request in receiver.requests]
    assert (body["type"], body["schema_version"], body["data"]["order_id"]) == ("orders.order_placed", 2, order_id)
    assert body["data"]["total"] == {"amount": "5", "currency": "EUR"}


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
    page = client.get(reverse("admin:webhooks_webhookdelivery_change", args=[WebhookDelivery.objects.get().pk]))
    assert "hunter2" in page.content.decode()


# --- retention ---------------------------------------------------------------------------------
def test_finished_deliveries_are_pruned_after_the_retention(pump, staff, webhook_settings):
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
    assert services.webhook_deliveries_prune() == 2
    assert services.webhook_deliveries_prune() == 0  # nothing more is old enough
    assert {r.pk for r in WebhookDelivery.objects.all()} == {r.pk for r in rows[2:]}
    assert WebhookAttempt.objects.count() == 3
    # A deleted endpoint goes once its history has.
    api(staff).delete(f"/api/v1/webhooks/{endpoint['id']}/")
    WebhookEndpoint.objects.update(deleted_at=old)
    WebhookDelivery.objects.update(status=Status.FAILED, created_at=old, last_redelivered_at=None)
    assert services.webhook_deliveries_prune() == 3
    assert not WebhookEndpoint.objects.exists() and not WebhookAttempt.objects.exists()


def test_the_scheduler_sends_often_and_prunes_every_few_minutes():
    from waybill import contexts

    jobs = {job.run: job.every for job in contexts.get("webhooks").periodic}
    assert jobs == {services.webhook_deliveries_send_due: 0.25, services.webhook_deliveries_prune: 300.0}


def test_each_endpoint_gets_the_version_it_registered_for_and_one_it_cannot_be_given_is_recorded(pump, staff):
    """A new version of an event never changes what a receiver gets: an endpoint keeps the
    version it registered for (the newest by default), converted by the producer's steps;
    an order v1 cannot express (another currency) is a failed delivery with the reason."""
    with Receiver() as receiver:
        register(staff, receiver.url + "/newest", "orders.order_placed")
        response = api(staff).post("/api/v1/webhooks/", {
            "url": receiver.url + "/v1", "event_types": ["orders.order_placed"],
            "schema_versions": {"orders.order_placed": 1}}, format="json")
        assert response.status_code == 201 and response.json()["schema_versions"] == {"orders.order_placed": 1}
        services.webhook_bindings_reconcile(bind=lambda types: None, resync=False)
        placed, order_id = order_placed(customer_id=staff.id)
        bring(pump, placed)
        in_dollars = json.loads(placed)
        in_dollars["id"] = str(uuid.uuid4())
        for money in (in_dollars["payload"]["total"], *(line["unit_price"] for line in in_dollars["payload"]["lines"])):
            money["currency"] = "USD"
        bring(pump, json.dumps(in_dollars))
        assert send_all() == 3
    bodies = {(request.path, json.loads(request.body)["id"]): json.loads(request.body) for request in receiver.requests}
    placed_id = json.loads(placed)["id"]
    assert bodies[("/hooks/newest", placed_id)]["schema_version"] == 2
    v1 = bodies[("/hooks/v1", placed_id)]
    assert (v1["schema_version"], v1["data"]["total"], v1["data"]["order_id"]) == (1, "5", order_id)
    refused = WebhookDelivery.objects.get(message_id=in_dollars["id"], status=Status.FAILED)
    assert (refused.last_error, refused.body, refused.next_attempt_at) == (services.NOT_EXPRESSIBLE, "", None)
    bring(pump, json.dumps(in_dollars))  # brought again: still one delivery per endpoint
    assert WebhookDelivery.objects.filter(message_id=in_dollars["id"]).count() == 2
    listed = {e["url"].rsplit("/", 1)[-1]: e["schema_versions"] for e in api(staff).get("/api/v1/webhooks/").json()}
    assert listed == {"newest": {"orders.order_placed": 2}, "v1": {"orders.order_placed": 1}}
    assert services.webhook_deliveries_redeliver(delivery_ids=[refused.id], by="ops") == 0


def test_a_schema_version_that_does_not_exist_is_a_400_on_the_field(staff):
    response = api(staff).post("/api/v1/webhooks/", {
        "url": "https://hooks.example.com/x", "event_types": ["orders.order_placed"],
        "schema_versions": {"orders.order_placed": 7}}, format="json")
    assert response.status_code == 400
    assert response.json() == {"schema_versions": ["orders.order_placed has versions [1, 2], not 7."]}


def test_an_endpoint_from_before_versions_were_chosen_gets_v1(pump, staff):
    with Receiver() as receiver:
        register(staff, receiver.url + "/old", "orders.order_placed")
        WebhookEndpoint.objects.update(schema_versions={})  # as moved from readmodels, or before 0004
        assert api(staff).get("/api/v1/webhooks/").json()[0]["schema_versions"] == {"orders.order_placed": 1}
        placed, _ = order_placed(customer_id=staff.id)
        bring(pump, placed)
        assert send_all() == 1
    [request] = receiver.requests
    assert json.loads(request.body)["schema_version"] == 1
