"""The webhooks queue binds only the types some active endpoint subscribes to (issue 12):
what nobody wants never reaches it, a subscription takes effect once its types are bound
and from then on misses nothing, and a deletion unbinds. The pump publishes as the relay
does (to the exchange, by type) and runs the consumer's bindings job as its scheduler does.
An order end to end: tests/flows/test_webhook_subscriptions.py."""

from __future__ import annotations

from decimal import Decimal

import pytest

from apps.inventory import contracts as inventory
from apps.webhooks import services
from apps.webhooks.models import InboxMessage, WebhookDelivery, WebhookEndpoint
from waybill.api import Envelope

from .support import api, envelope, order_placed, product_updated, register

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")
URL = "https://hooks.example.com/hooks"


def _listed(sku: str = "LAMP-1") -> str:
    return envelope(inventory.ProductListed(sku=sku, name="Lamp", price=Decimal("5")), aggregate_id=sku)


def test_with_no_endpoint_no_event_reaches_the_queue(pump, alice):
    pump.rebind("webhooks")  # its first run binds afresh: nothing
    pump.publish(order_placed(customer_id=alice.id)[0])
    pump.publish(product_updated())
    assert pump.deliver("webhooks") == []
    assert not InboxMessage.objects.exists()


def test_an_endpoint_takes_effect_once_bound_and_then_gets_the_next_event(pump, staff):
    endpoint = register(staff, URL, "inventory.product_updated", bound=False)
    assert endpoint["receiving"] is False
    pump.publish(product_updated(version=1))
    assert pump.deliver("webhooks") == []  # not bound yet: the bus drops it for webhooks

    assert pump.rebind("webhooks")
    assert api(staff).get(f"/api/v1/webhooks/{endpoint['id']}/").json()["receiving"] is True
    pump.publish(product_updated(version=2))
    pump.publish(_listed())  # a type nobody asked for stays unbound
    assert [outcome.value for outcome in pump.deliver("webhooks")] == ["applied"]
    assert list(WebhookDelivery.objects.values_list("event_type", flat=True)) == ["inventory.product_updated"]
    assert not pump.rebind("webhooks")  # nothing changed: not asked again before the next poll


def test_a_type_not_bound_yet_makes_no_delivery_even_if_its_event_arrives(pump, staff):
    """An event brought before the binding (another endpoint's type, or one queued already)
    is applied, but makes no delivery for an endpoint whose type is not bound yet: from the
    moment it is bound, every later event reaches the queue, so deliveries start exactly there."""
    register(staff, URL, "inventory.product_updated", bound=False)
    pump.publish_raw("webhooks", product_updated(version=1))  # straight onto the queue
    assert [outcome.value for outcome in pump.deliver("webhooks")] == ["applied"]
    assert not WebhookDelivery.objects.exists()


def test_deleting_the_last_endpoint_of_a_type_unbinds_it_and_keeps_the_others(pump, staff):
    lamp = register(staff, URL + "/1", "inventory.product_updated", "inventory.product_listed", bound=False)
    register(staff, URL + "/2", "inventory.product_listed", bound=False)
    assert pump.rebind("webhooks")
    assert api(staff).delete(f"/api/v1/webhooks/{lamp['id']}/").status_code == 204
    assert pump.rebind("webhooks")
    assert WebhookEndpoint.objects.get(pk=lamp["id"]).bound_types == []
    pump.publish(product_updated())
    pump.publish(_listed())
    assert [outcome.value for outcome in pump.deliver("webhooks")] == ["applied"]
    assert list(WebhookDelivery.objects.values_list("event_type", flat=True)) == ["inventory.product_listed"]


def test_a_message_queued_before_its_type_was_unbound_is_handled_as_before(pump, staff):
    endpoint = register(staff, URL, "inventory.product_updated", bound=False)
    assert pump.rebind("webhooks")
    body = product_updated()
    pump.publish(body)  # on the queue...
    api(staff).delete(f"/api/v1/webhooks/{endpoint['id']}/")
    assert pump.rebind("webhooks")  # ...then unbound
    assert [outcome.value for outcome in pump.deliver("webhooks")] == ["applied"]  # not refused
    assert InboxMessage.objects.get().message_id == Envelope.model_validate_json(body).id


def test_a_failed_bind_records_nothing_as_bound(staff):
    register(staff, URL, "inventory.product_updated", bound=False)

    def broker_down(types):
        raise ConnectionError("broker down")

    with pytest.raises(ConnectionError):
        services.webhook_bindings_reconcile(bind=broker_down, resync=False)
    assert WebhookEndpoint.objects.get().bound_types == []  # not visible to the handler: retried


def test_the_bound_types_are_what_the_reconcile_binds(staff, alice):
    """What it asks the kernel to bind: the union of the active endpoints' types, no more."""
    register(staff, URL + "/1", "inventory.product_updated", "orders.order_placed", bound=False)
    register(alice, URL + "/2", "orders.order_placed", "orders.order_confirmed", bound=False)
    asked = []
    assert services.webhook_bindings_reconcile(bind=asked.append, resync=False)
    assert asked == [["inventory.product_updated", "orders.order_confirmed", "orders.order_placed"]]
    assert not services.webhook_bindings_reconcile(bind=asked.append, resync=False)  # nothing stale
    assert services.webhook_bindings_reconcile(bind=asked.append, resync=True)  # resync binds anyway
    assert asked[-1] == asked[0]


def test_an_edit_made_behind_the_services_back_is_noticed_from_the_table(staff):
    """Edited types, a deactivation or a reactivation (the admin, a shell) need no word to
    the worker: its poll compares each endpoint's bound types with what it wants."""
    register(staff, URL, "inventory.product_updated", bound=False)
    asked = []
    assert services.webhook_bindings_reconcile(bind=asked.append, resync=False)
    WebhookEndpoint.objects.update(event_types=["inventory.product_listed", "inventory.product_updated"])
    assert services.webhook_bindings_reconcile(bind=asked.append, resync=False)
    assert asked[-1] == ["inventory.product_listed", "inventory.product_updated"]
    WebhookEndpoint.objects.update(active=False)
    assert services.webhook_bindings_reconcile(bind=asked.append, resync=False)
    assert asked[-1] == [] and WebhookEndpoint.objects.get().bound_types == []
    WebhookEndpoint.objects.update(active=True)
    assert not WebhookEndpoint.objects.get().receiving  # not until bound again
    assert services.webhook_bindings_reconcile(bind=asked.append, resync=False)
    assert WebhookEndpoint.objects.get().receiving
