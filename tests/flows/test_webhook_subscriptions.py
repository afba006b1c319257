"""Issue 12, one order end to end: the webhooks consumer takes only the events some
endpoint wants. With none, an order's events never reach its queue (its inbox gets none of
them) while every other consumer gets what it always did; an endpoint for a type makes the
next such event reach it; deleting it unbinds the type again."""

from decimal import Decimal

import pytest

from apps.inventory import services as inventory
from apps.orders import services as orders
from apps.readmodels.models import InboxMessage as ReadInbox
from apps.webhooks import services as webhooks
from apps.webhooks.models import InboxMessage as WebhookInbox
from apps.webhooks.models import WebhookDelivery

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")


@pytest.fixture
def shop(pump):
    inventory.product_create(sku="LAMP-1", name="Lamp", price=Decimal("20.00"), on_hand=10)
    pump.settle()


def _order(pump) -> str:
    order, _ = orders.order_place(customer_id=7, lines=[orders.LineRequest("LAMP-1", 1)])
    pump.settle()
    return str(order.id)


def test_no_endpoint_no_webhooks_consumption_and_an_endpoint_gets_the_next_event(pump, shop, django_user_model):
    staff = django_user_model.objects.create_user("ops", password="x" * 20, is_staff=True)
    pump.rebind("webhooks")
    first = _order(pump)
    assert ReadInbox.objects.filter(envelope__aggregate_id=first).exists()  # the order went through
    assert not WebhookInbox.objects.exists()  # and webhooks consumed none of it

    endpoint = webhooks.webhook_endpoint_register(owner_id=staff.id, owner_is_staff=True, url="https://example.com/h",
                                                  event_types=["orders.order_confirmed"])
    assert pump.rebind("webhooks")
    second = _order(pump)
    assert list(WebhookInbox.objects.values_list("message_type", "envelope__aggregate_id")) == [
        ("orders.order_confirmed", second)]
    assert list(WebhookDelivery.objects.values_list("event_type", flat=True)) == ["orders.order_confirmed"]

    webhooks.webhook_endpoint_delete(endpoint=endpoint)
    assert pump.rebind("webhooks")
    _order(pump)
    assert WebhookInbox.objects.count() == 1  # unbound again
