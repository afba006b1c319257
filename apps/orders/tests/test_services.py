"""Orders' own rules, in process and without the other contexts: who may cancel, an
Idempotency-Key's retry, and a version that is no longer current. (The choreography they
start is tested in tests/flows/test_choreography.py.)"""

from __future__ import annotations

from decimal import Decimal

import pytest

from apps.orders import services, transitions
from apps.orders.models import Order, ProductCopy

pytestmark = pytest.mark.django_db(databases="__all__")


@pytest.fixture(autouse=True)
def lamp():
    ProductCopy.objects.create(sku="LAMP-1", name="Lamp", price=Decimal("20.00"), version=1)


def _place(quantity, key=""):
    order, _ = services.order_place(customer_id=7, lines=[services.LineRequest("LAMP-1", quantity)], idempotency_key=key)
    return order


def test_another_customer_cannot_cancel():
    order = _place(1)
    assert services.order_cancel(order_id=order.id, customer_id=8) is None
    assert Order.objects.get(id=order.id).status == Order.Status.PENDING


def test_idempotency_key_returns_the_first_order_and_refuses_other_lines():
    first = _place(1, key="k-1")
    assert _place(1, key="k-1").id == first.id
    with pytest.raises(services.OrderConflict):
        _place(2, key="k-1")
    assert Order.objects.count() == 1


def test_stale_version_is_refused():
    order = _place(1)
    transitions.order_confirm(order_id=order.id)  # what the saga does once stock and payment are in
    with pytest.raises(services.OrderVersionMismatch):
        services.order_cancel(order_id=order.id, customer_id=7, expected_versions={1})
    assert Order.objects.get(id=order.id).status == Order.Status.CONFIRMED


def test_an_order_in_another_currency_cannot_be_told_to_a_v1_reader():
    """orders' downcaster (v2 -> v1): a v1 reader assumes EUR, so another currency is refused."""
    from apps.orders import contracts

    euros = {"amount": "9.00", "currency": "EUR"}
    payload = {"order_id": "5f0c9c8e-0000-4000-8000-000000000001", "customer_id": 1, "status": "PENDING",
               "reason": "", "total": euros, "lines": [{"sku": "MUG-2", "name": "Mug", "quantity": 2,
                                                       "unit_price": {"amount": "4.50", "currency": "EUR"}}]}
    assert contracts.money_as_a_bare_amount(payload)["total"] == "9.00"
    assert contracts.money_with_its_currency(contracts.money_as_a_bare_amount(payload)) == payload
    with pytest.raises(ValueError, match="a v1 reader takes amounts in EUR only, not USD"):
        contracts.money_as_a_bare_amount({**payload, "total": {"amount": "9.00", "currency": "USD"}})
