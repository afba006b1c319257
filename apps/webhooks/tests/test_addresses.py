"""Where a POST may go (SSRF): the host is resolved at every send, every address must be
allowed, and the POST goes to the address that was checked (DNS rebinding)."""

from __future__ import annotations

import json
import socket
from decimal import Decimal

import pytest

from apps.inventory import contracts as inventory
from apps.webhooks import services
from apps.webhooks.models import WebhookAttempt, WebhookDelivery, WebhookEndpoint
from tests.support.webhook_receiver import Receiver

from .support import api, bring, envelope, product_updated, register

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")
Status = WebhookDelivery.Status


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
