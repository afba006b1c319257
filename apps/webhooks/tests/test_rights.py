"""Who may receive what is read from the owner's account at every send, never copied: a
demoted, deactivated or promoted user gets what their rights say now."""

from __future__ import annotations

import pytest

from apps.webhooks import services
from apps.webhooks.models import WebhookDelivery
from tests.support.webhook_receiver import Receiver

from .support import bring, order_placed, product_updated, register, send_all

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")
Status = WebhookDelivery.Status


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
