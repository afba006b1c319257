"""The operations console (``waybill.console``, ``waybill.console_admin``), in process with
the real relay, consumers and payment sandbox: one order's flow in causation order, dead
letters grouped by cause and redriven after the cause is fixed, the order check before a
redrive, a blocked outbox key released by a republish or a skip, the consumers' figures,
the sagas board, and who may look and who may act (with every act in the admin's history)."""

from __future__ import annotations

import json
import uuid
from decimal import Decimal

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import Group
from django.db import transaction
from django.test import Client
from django.urls import reverse

from apps.inventory import services as inventory
from apps.inventory.models import OutboxMessage as InventoryOutbox
from apps.inventory.models import Product
from apps.orders.models import Order, OrderSaga, PaymentDeadLetter
from apps.readmodels.models import CatalogItem
from apps.readmodels.models import DeadLetter as ReadDeadLetter
from apps.webhooks import services as webhooks
from tests.poison import order_placed
from waybill import console, operations, rights
from waybill.consumer import Outcome

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")


@pytest.fixture
def people(django_user_model):
    """A customer, an operator (may look) and an operations lead (may act), from the groups
    that migrate made."""
    customer = django_user_model.objects.create_user("carol", password="x" * 20)
    viewer = django_user_model.objects.create_user("olga", password="x" * 20, is_staff=True)
    viewer.groups.add(Group.objects.get(name=rights.OPERATORS))
    lead = django_user_model.objects.create_user("leo", password="x" * 20, is_staff=True)
    lead.groups.add(Group.objects.get(name=rights.LEADS))
    return {"customer": customer, "viewer": viewer, "lead": lead}


@pytest.fixture
def shop(pump):
    inventory.product_create(sku="LAMP-1", name="Lamp", price=Decimal("20.00"), on_hand=10)
    pump.settle()


def as_user(client, user):
    client.force_login(user)
    return client


def place_order(client, customer, sku="LAMP-1", quantity=1) -> str:
    """Through the API, as a shopper does: one request, one correlation id."""
    client.force_login(customer)
    response = client.post("/api/v1/orders/", {"lines": [{"sku": sku, "quantity": quantity}]},
                           content_type="application/json")
    assert response.status_code == 202, response.content
    assert uuid.UUID(response["X-Correlation-ID"])
    return response.json()["id"]


def test_the_flow_of_one_order_shows_every_hop_in_causation_order(client, pump, shop, people):
    webhooks.webhook_endpoint_register(owner_id=people["customer"].pk, owner_is_staff=False,
                                       url="http://127.0.0.1:9/orders-hook", event_types=["orders.order_confirmed"])
    pump.rebind("webhooks")
    order_id = place_order(client, people["customer"])
    pump.settle()
    assert Order.objects.get(id=order_id).status == "CONFIRMED"

    flow = console.flow(order_id)
    types = [hop.type for hop in flow.hops]
    for expected in ("orders.order_placed", "inventory.reserve_stock", "inventory.stock_reserved",
                     "orders.charge_payment", "orders.payment_charged", "orders.order_confirmed"):
        assert expected in types, types
    assert len(flow.correlation_ids) == 1  # the request's placed event and its saga's command: one flow
    position = {hop.message_id: index for index, hop in enumerate(flow.hops)}
    for hop in flow.hops:  # a message's cause comes before it, one level up
        if hop.causation_id and uuid.UUID(hop.causation_id) in position:
            cause = flow.hops[position[uuid.UUID(hop.causation_id)]]
            assert position[cause.message_id] < position[hop.message_id] and hop.depth == cause.depth + 1
    reserve = next(hop for hop in flow.hops if hop.type == "inventory.reserve_stock")
    assert reserve.producer == "orders" and reserve.published_at and reserve.status == "published"
    assert [(d.consumer, d.status) for d in reserve.deliveries] == [("inventory", "processed")]
    charge = next(hop for hop in flow.hops if hop.type == "orders.charge_payment")
    assert [d.consumer for d in charge.deliveries] == ["payments"]
    assert any(note.context == "orders" and "saga step charge_payment" in note.what for note in charge.notes)
    confirmed = next(hop for hop in flow.hops if hop.type == "orders.order_confirmed")
    assert [(n.context, n.what, n.status) for n in confirmed.notes if n.context == "webhooks"] == \
        [("webhooks", "delivery to http://127.0.0.1:9/orders-hook", "pending")]

    # Every way in finds the same flow: a message id, the correlation id, from any row's page.
    assert [h.message_id for h in console.flow(str(charge.message_id)).hops] == [h.message_id for h in flow.hops]
    assert len(console.flow(flow.correlation_ids[0]).hops) == len(flow.hops)
    page = as_user(client, people["viewer"]).get(reverse("admin:waybill_console_flow"), {"q": order_id})
    assert page.status_code == 200
    text = page.content.decode()
    assert text.index("orders.order_placed") < text.index("inventory.stock_reserved") \
        < text.index("orders.payment_charged") < text.index("orders.order_confirmed")
    order_page = client.get(reverse("admin:orders_order_change", args=[order_id])).content.decode()
    assert reverse("admin:waybill_console_flow") + f"?q={order_id}" in order_page


def test_the_trace_id_links_to_the_tracing_back_end(client, pump, shop, people, settings):
    settings.WAYBILL_TRACE_URL_TEMPLATE = "http://traces.example/trace/{trace_id}"
    order_id = place_order(client, people["customer"])
    pump.settle()
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    from apps.orders.models import OutboxMessage

    row = OutboxMessage.objects.filter(aggregate_id=order_id).order_by("id").first()
    row.envelope = {**row.envelope, "traceparent": f"00-{trace_id}-00f067aa0ba902b7-01"}
    row.save(update_fields=["envelope"])
    assert [h.message_id for h in console.flow(trace_id).hops][:1]
    page = as_user(client, people["viewer"]).get(reverse("admin:waybill_console_flow"), {"q": order_id})
    assert f'href="http://traces.example/trace/{trace_id}"' in page.content.decode()


def test_a_poison_message_and_a_handler_bug_are_two_groups_redriven_once_the_cause_is_fixed(
        client, pump, shop, people, settings, payment_sandbox):
    # The handler bug: a wrong provider address (a setting), which the provider answers 404.
    settings.WAYBILL_PAYMENT_GATEWAY_URL = f"{payment_sandbox.url}/wrong-prefix"
    orders = [place_order(client, people["customer"]) for _ in range(3)]
    # The poison: two malformed orders.order_placed from a broken producer.
    for _ in range(2):
        pump.publish(json.dumps(order_placed(payload={"order_id": "not-an-id"})))
    pump.settle()
    assert all(Order.objects.get(id=o).status == "PENDING" for o in orders)

    groups = {group.reason_kind: group for group in console.dead_letter_groups()}
    assert set(groups) == {"permanent", "refused"}, groups
    bug, poison = groups["permanent"], groups["refused"]
    assert (bug.count, bug.consumers, bug.message_type) == (3, {"payments": 3}, "orders.charge_payment")
    assert "payment provider refused the request: 404" in bug.reason
    assert poison.count >= 2 and "readmodels" in poison.consumers and poison.message_type == "orders.order_placed"

    letter = PaymentDeadLetter.objects.order_by("id").first()
    page = as_user(client, people["lead"]).get(reverse("admin:waybill_console_letter", args=["payments", letter.pk]))
    text = page.content.decode()
    assert "PermanentFailure" in text and "Traceback (most recent call last)" in text
    chain = [hop.type for hop in console.cause_chain(letter.envelope)]
    assert chain == ["inventory.stock_reserved", "inventory.reserve_stock"]  # back to the order's request

    settings.WAYBILL_PAYMENT_GATEWAY_URL = payment_sandbox.url  # the cause, fixed
    response = client.post(reverse("admin:waybill_console_redrive", args=[bug.fingerprint]), {"reason": "URL fixed"})
    assert response.status_code == 302
    pump.consumers["payments"].retry_due()
    pump.settle()
    assert [Order.objects.get(id=o).status for o in orders] == ["CONFIRMED"] * 3
    assert {g.reason_kind for g in console.dead_letter_groups()} == {"refused"}

    # The poison is given up with a reason; without one, nothing is discarded.
    discard = reverse("admin:waybill_console_discard", args=[poison.fingerprint])
    client.post(discard, {"reason": ""})
    assert console.dead_letter_groups()
    client.post(discard, {"reason": "a broken producer, fixed upstream"})
    assert console.dead_letter_groups() == []
    assert ReadDeadLetter.objects.filter(discard_reason__contains="a broken producer").exists()

    history = list(LogEntry.objects.filter(user=people["lead"]).values_list("change_message", flat=True))
    assert sum("redrive; why: URL fixed" in m for m in history) == 3
    assert sum("discard; why: a broken producer" in m for m in history) == poison.count


def test_a_redrive_that_would_apply_a_message_after_a_later_one_is_flagged_first(client, pump, shop, people):
    """readmodels applied the product's later documents; a dead copy of an earlier one
    (here at a schema version nobody reads) would go behind them."""
    inventory.product_update(sku="LAMP-1", name="Lamp 2")
    inventory.product_update(sku="LAMP-1", name="Lamp 3")
    pump.settle()
    older = InventoryOutbox.objects.filter(aggregate_id="LAMP-1", message_type="inventory.product_updated",
                                           aggregate_version=2).get()
    pump.publish_raw("readmodels", json.dumps({**older.envelope, "id": str(uuid.uuid4()), "schema_version": 77}))
    assert pump.deliver("readmodels") == [Outcome.DEAD_LETTERED]
    letter = ReadDeadLetter.objects.get()
    letters = console.open_dead_letters(letter.fingerprint)
    newest = Product.objects.get(sku="LAMP-1").version
    [why] = console.out_of_order(letters).values()
    assert why == f"readmodels already applied inventory.product_updated v{newest} of LAMP-1, committed after this one"

    group = reverse("admin:waybill_console_group", args=[letter.fingerprint])
    assert "out-of-order-warning" in as_user(client, people["lead"]).get(group).content.decode()
    client.post(reverse("admin:waybill_console_redrive", args=[letter.fingerprint]), {})
    letter.refresh_from_db()
    assert letter.replayed_at is None  # left out, as the page said
    client.post(reverse("admin:waybill_console_redrive", args=[letter.fingerprint]), {"include_out_of_order": "1"})
    letter.refresh_from_db()
    assert letter.replayed_at is not None  # the operator chose to


def _parked_product_change(pump, settings) -> tuple[InventoryOutbox, int]:
    """A product document over the size limit, parked, with a later change behind it."""
    settings.WAYBILL_RELAY_MAX_ATTEMPTS = 1
    settings.WAYBILL_MESSAGE_MAX_BYTES = 600
    inventory.product_update(sku="LAMP-1", name="Lamp " + "with a very long name " * 25)
    inventory.product_update(sku="LAMP-1", name="Lamp, renamed")
    pump.relay("inventory")
    rows = InventoryOutbox.objects.filter(aggregate_id="LAMP-1", sent_at__isnull=True).order_by("id")
    return rows.first(), rows.count()


def test_a_parked_row_is_a_blocked_key_and_republishing_it_releases_the_rows_behind_it(
        client, pump, shop, people, settings):
    head, unsent = _parked_product_change(pump, settings)
    assert unsent >= 2
    [key] = [k for health in console.outbox_health() for k in health.blocked]
    assert (key.context, key.aggregate_id, key.row_id, key.waiting) == ("inventory", "LAMP-1", head.id, unsent - 1)
    assert "over WAYBILL_MESSAGE_MAX_BYTES" in key.last_error
    page = as_user(client, people["lead"]).get(reverse("admin:waybill_console_outbox")).content.decode()
    assert "LAMP-1" in page and "blocked-key" in page

    settings.WAYBILL_MESSAGE_MAX_BYTES = 1_048_576  # the limit, raised
    client.post(reverse("admin:waybill_console_republish", args=["inventory", head.id]))
    pump.settle()
    assert not InventoryOutbox.objects.filter(sent_at__isnull=True).exists()
    assert CatalogItem.objects.get(sku="LAMP-1").name == "Lamp, renamed"
    assert not [k for health in console.outbox_health() for k in health.blocked]
    assert LogEntry.objects.filter(user=people["lead"], change_message__startswith="republish").count() == 1


def test_a_skip_needs_a_reason_and_lets_the_rows_behind_go(client, pump, shop, people, settings):
    head, _ = _parked_product_change(pump, settings)
    skip = reverse("admin:waybill_console_skip", args=["inventory", head.id])
    as_user(client, people["lead"]).post(skip, {"reason": ""})
    assert InventoryOutbox.objects.get(id=head.id).sent_at is None
    client.post(skip, {"reason": "superseded by the rename"})
    head.refresh_from_db()
    assert head.skipped_at and head.first_sent_at is None and "superseded" in head.skip_reason
    # The long name's other document is as large: parked at its turn, it becomes the head.
    pump.relay("inventory")
    [key] = [k for health in console.outbox_health() for k in health.blocked]
    assert key.row_id > head.id and key.aggregate_id == "LAMP-1"
    client.post(reverse("admin:waybill_console_skip", args=["inventory", key.row_id]),
                {"reason": "superseded by the rename"})
    pump.settle()
    assert CatalogItem.objects.get(sku="LAMP-1").name == "Lamp, renamed"
    assert LogEntry.objects.filter(change_message__contains="why: superseded by the rename").exists()


def test_consumers_show_their_queue_and_inbox(client, pump, shop, people):
    with transaction.atomic(using="inventory"):
        inventory.product_update(sku="LAMP-1", name="Lamp 2")
    pump.relay()  # published, not yet consumed
    health = {h.consumer: h for h in console.consumer_health()}
    assert set(health) >= {"inventory", "orders", "payments", "readmodels", "webhooks"}
    readmodels = health["readmodels"]
    assert readmodels.queues[0].name == "waybill.readmodels" and readmodels.queues[0].ready >= 1
    assert readmodels.queues[0].source == "in-memory transport"
    pump.settle()
    after = {h.consumer: h for h in console.consumer_health()}["readmodels"]
    assert after.queues[0].ready == 0 and after.applied_last_minute >= 1 and after.latency_p50 is not None
    page = as_user(client, people["viewer"]).get(reverse("admin:waybill_console_consumers"))
    assert page.status_code == 200 and "waybill.readmodels" in page.content.decode()


def test_the_sagas_board_counts_down_the_open_ones_and_filters_the_finished(
        client, pump, shop, people, payment_sandbox, settings):
    settings.WAYBILL_SAGA_PAYMENT_SECONDS = 600  # far enough that a slow machine still counts down
    done = place_order(client, people["customer"])
    pump.settle()
    payment_sandbox.configure(outage=True)
    waiting = place_order(client, people["customer"])
    pump.settle()
    board = as_user(client, people["viewer"]).get(reverse("admin:orders_ordersaga_board_json")).json()
    [open_saga] = board["open"]
    assert open_saga["order_id"] == waiting and open_saga["step"] == "charge_payment"
    assert 0 < open_saga["seconds_left"] <= 600 and open_saga["to_come"] == ["confirm the order"]
    assert [s["order_id"] for s in board["finished"]] == [done]
    compensated = client.get(reverse("admin:orders_ordersaga_board_json"), {"outcome": "compensated"}).json()
    assert compensated["finished"] == []
    assert client.get(reverse("admin:orders_ordersaga_board")).status_code == 200
    assert OrderSaga.objects.get(order_id=waiting).state == "running"


def test_a_viewer_may_look_but_not_act_and_a_customer_sees_nothing(client, pump, shop, people, settings):
    head, _ = _parked_product_change(pump, settings)
    pages = [reverse(f"admin:waybill_console_{name}") for name in
             ("changelist", "flow", "groups", "outbox", "consumers")]
    acts = [reverse("admin:waybill_console_republish", args=["inventory", head.id]),
            reverse("admin:waybill_console_skip", args=["inventory", head.id]),
            reverse("admin:waybill_console_redrive", args=["f" * 20]),
            reverse("admin:waybill_console_discard", args=["f" * 20])]
    as_user(client, people["viewer"])
    for url in pages:
        assert client.get(url).status_code == 200, url
    assert "Republish" not in client.get(pages[3]).content.decode()
    for url in acts:
        assert client.post(url, {"reason": "because"}).status_code == 403, url
    assert InventoryOutbox.objects.get(id=head.id).sent_at is None
    admin_index = client.get(reverse("admin:index")).content.decode()
    assert "Operations console" in admin_index or "operations console" in admin_index.lower()

    as_user(client, people["customer"])
    for url in [*pages, reverse("admin:orders_ordersaga_board_json")]:
        response = client.get(url)
        assert response.status_code == 302 and "/admin/login/" in response["Location"], url
    for url in acts:
        assert client.post(url, {"reason": "because"}).status_code == 302
    assert InventoryOutbox.objects.get(id=head.id).sent_at is None


def test_a_redrive_never_applies_a_message_twice(client, pump, shop, people):
    """A message refused unread (a version this build did not know) and then applied when
    it came again (republished once its reader shipped): its dead letter is closed by a
    redrive, not retried; a second redrive finds nothing to do."""
    inventory.product_update(sku="LAMP-1", name="Lamp 2")
    pump.relay()
    row = InventoryOutbox.objects.filter(message_type="inventory.product_updated").order_by("-id").first()
    pump.publish_raw("readmodels", json.dumps({**row.envelope, "schema_version": 77}))
    assert pump.deliver("readmodels")[-1] == Outcome.DEAD_LETTERED
    pump.settle()  # the message itself, as published
    assert CatalogItem.objects.get(sku="LAMP-1").name == "Lamp 2"
    [group] = console.dead_letter_groups()
    as_user(client, people["lead"])
    response = client.post(reverse("admin:waybill_console_redrive", args=[group.fingerprint]), follow=True)
    assert "0 dead letters redriven" in response.content.decode()
    assert "1 closed: their consumer had applied them meanwhile" in response.content.decode()
    assert console.dead_letter_groups() == []  # closed: nothing reports it as failing any more
    letter = ReadDeadLetter.objects.get()
    assert operations.dead_letter_replay(dead_letter=letter) == operations.Redrive.NOT_REDRIVABLE
    inbox = pump.consumers["readmodels"]._inbox.get(message_id=row.message_id)
    assert (inbox.status, inbox.attempts) == ("processed", 1)  # applied once, never reopened
    assert LogEntry.objects.filter(change_message__startswith="redrive: closed, already handled").count() == 1


def test_acts_need_the_csrf_token_and_pages_need_the_console_right(pump, shop, people, settings, django_user_model):
    head, _ = _parked_product_change(pump, settings)
    strict = Client(enforce_csrf_checks=True)
    strict.force_login(people["lead"])
    republish = reverse("admin:waybill_console_republish", args=["inventory", head.id])
    assert strict.post(republish).status_code == 403  # no CSRF token
    assert InventoryOutbox.objects.get(id=head.id).publish_attempts >= 1
    staff = django_user_model.objects.create_user("stan", password="x" * 20, is_staff=True)  # no console right
    strict.force_login(staff)
    for name in ("changelist", "flow", "groups", "outbox", "consumers"):
        assert strict.get(reverse(f"admin:waybill_console_{name}")).status_code == 403, name
