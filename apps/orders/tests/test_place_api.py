"""Placing an order over the API, in process: the service alone decides whether the lines'
SKUs are sold and named once (one query), and the API answers its refusal as a 400 under
the line's index and field, in the service's words."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.contrib.auth import get_user_model
from rest_framework.test import APIClient

from apps.orders import services
from apps.orders.models import Order, ProductCopy

pytestmark = pytest.mark.django_db(databases="__all__")


@pytest.fixture
def alice():
    ProductCopy.objects.create(sku="LAMP-1", name="Lamp", price=Decimal("20.00"), version=1)
    ProductCopy.objects.create(sku="MUG-2", name="Mug", price=Decimal("4.50"), version=1)
    client = APIClient()
    client.force_authenticate(get_user_model().objects.create_user("alice", password="x" * 20))
    return client


def test_the_service_refuses_every_bad_line_at_once_with_one_query(django_assert_num_queries):
    ProductCopy.objects.create(sku="LAMP-1", name="Lamp", price=Decimal("20.00"), version=1)
    lines = [services.LineRequest("NOPE-1", 1), services.LineRequest("LAMP-1", 1), services.LineRequest("LAMP-1", 2)]
    with django_assert_num_queries(1, using="orders"), pytest.raises(services.OrderLinesRefused) as refused:
        services.order_place(customer_id=7, lines=lines)
    assert refused.value.field == "lines"
    assert refused.value.reasons == {0: "Unknown SKU NOPE-1.", 2: "SKU LAMP-1 appears twice; give one line per SKU."}
    assert not Order.objects.exists()


@pytest.mark.parametrize(("lines", "errors"), [
    pytest.param([{"sku": "NOPE-1", "quantity": 1}], {"0": {"sku": ["Unknown SKU NOPE-1."]}}, id="unknown"),
    pytest.param([{"sku": "MUG-2", "quantity": 1}, {"sku": "MUG-2", "quantity": 3}],
                 {"1": {"sku": ["SKU MUG-2 appears twice; give one line per SKU."]}}, id="twice"),
])
def test_a_refused_sku_is_a_400_naming_the_line_and_field(alice, lines, errors):
    response = alice.post("/api/v1/orders/", {"lines": lines}, format="json")
    assert response.status_code == 400, response.content
    assert response.json() == {"lines": errors}
    assert not Order.objects.exists()


def test_the_serializer_only_shapes_it_never_queries(django_assert_num_queries):
    from apps.orders.api.serializers import OrderPlaceInput

    data = OrderPlaceInput(data={"lines": [{"sku": "NOPE-1", "quantity": 1}]})
    with django_assert_num_queries(0, using="orders"):
        assert data.is_valid(), data.errors  # shaped right; whether NOPE-1 is sold is not its call


def test_good_lines_are_placed(alice):
    lines = [{"sku": "LAMP-1", "quantity": 2}, {"sku": "MUG-2", "quantity": 1}]
    response = alice.post("/api/v1/orders/", {"lines": lines}, format="json")
    assert response.status_code == 202, response.content
    assert (response.json()["total"], response.json()["currency"]) == ("44.50", "EUR")
