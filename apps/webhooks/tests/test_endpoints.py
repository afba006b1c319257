"""The endpoints API: registration and its refusals, privacy, the secret shown once, an
endpoint's deliveries, and the OpenAPI schema."""

from __future__ import annotations

import json

import pytest

from apps.webhooks.models import WebhookEndpoint
from tests.support.webhook_receiver import Receiver

from .support import api, bring, product_updated, register, send_all

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")


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
