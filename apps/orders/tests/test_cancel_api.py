"""Cancelling over the API with If-Match, in process (RFC 9110, 13.1.1): ``*`` matches any
current version, a list matches if one of its tags does, and anything else, malformed or
weak tags included, is a 412 that changes nothing."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.contrib.auth import get_user_model
from rest_framework.test import APIClient

from apps.orders import services
from apps.orders.api.views import _if_match_versions
from apps.orders.models import Order, ProductCopy

pytestmark = pytest.mark.django_db(databases="__all__")


@pytest.mark.parametrize(("header", "versions"), [
    (None, None), ("", None), ("*", None), (" * ", None),
    ('"3"', {3}), ('"1", "3"', {1, 3}), ('W/"3"', set()), ("3", set()), ("not-an-etag", set()),
    ('"3", W/"4", junk', {3}), ('"³"', set()),
])
def test_if_match_names_the_versions_it_accepts(header, versions):
    parsed = _if_match_versions(header)
    assert parsed == (None if versions is None else frozenset(versions))


@pytest.fixture
def alice_order():
    alice = get_user_model().objects.create_user("alice", password="x" * 20)
    ProductCopy.objects.create(sku="LAMP-1", name="Lamp", price=Decimal("20.00"), version=1)
    order, _ = services.order_place(customer_id=alice.id, lines=[services.LineRequest("LAMP-1", 1)])
    client = APIClient()
    client.force_authenticate(alice)
    return client, order


@pytest.mark.parametrize("header", ["not-an-etag", 'W/"1"', '"7"', '"2", "3"', pytest.param('"' + "9" * 5000 + '"', id="5000-digits")])
def test_an_if_match_that_names_no_current_version_is_a_412(alice_order, header):
    client, order = alice_order
    response = client.post(f"/api/v1/orders/{order.id}/cancel/", HTTP_IF_MATCH=header)
    assert response.status_code == 412, response.content
    assert Order.objects.get(id=order.id).status == Order.Status.PENDING


@pytest.mark.parametrize("header", ["*", '"1"', '"7", "1"'])
def test_if_match_star_or_a_list_with_the_current_version_cancels(alice_order, header):
    client, order = alice_order
    response = client.post(f"/api/v1/orders/{order.id}/cancel/", HTTP_IF_MATCH=header)
    assert response.status_code == 202, response.content
    assert response.json()["status"] == "CANCELLED"
