"""Replays of the event history and blue/green rebuilds, embedded (the outboxes' archive,
SQLite): invariant 6 (a rebuild from the history equals the live read models, row for
row) after a shuffled scenario with declines, cancellations, duplicates and restarts; no
side effect while replaying (counted); a replay stopped anywhere goes on and applies
nothing twice; what the live consumer applied first is not lost at the switch; replaying
a handler that has not said it may is refused. Services mode: tests/services/test_rebuild_live.py."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import random
import socket
from decimal import Decimal

import pytest
from channels.layers import get_channel_layer
from django.contrib.auth.models import Permission
from django.db import transaction
from django.core.management import CommandError, call_command
from django.urls import reverse

from apps.inventory import services as inventory
from apps.orders import contracts as order_contracts
from apps.orders import services as orders
from apps.orders.models import Order
from apps.readmodels import models as rm
from apps.readmodels import services as readmodels
from apps.readmodels.handlers import PROJECTIONS
from apps.webhooks.models import WebhookDelivery
from waybill import contexts, outbox, rebuild
from waybill.api import Batched, group_send, replay_safe
from waybill.consumer import ContextConsumer
from waybill.history import FIRST, HistoryGone, history
from waybill.replay import Replay, ReplayRefused
from waybill.replaymode import SideEffectWhileReplaying

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")

CUSTOMERS = (7, 8, 9)


def _scenario(pump, seed: int) -> None:
    """Orders from three customers in a seeded order: some run out of stock, some are
    declined (the sandbox declines totals of 2000 to 2999.99), some are cancelled; some
    messages are delivered twice, and the consumers are restarted along the way."""
    rng = random.Random(seed)
    inventory.product_create(sku="LAMP-1", name="Lamp", price=Decimal("20.00"), on_hand=6)
    inventory.product_create(sku="RUG-2", name="Rug", price=Decimal("2500.00"), on_hand=50)
    inventory.product_create(sku="MUG-3", name="Mug", price=Decimal("5.00"), on_hand=100)
    pump.settle()
    for step in range(24):
        sku = rng.choice(["LAMP-1", "LAMP-1", "RUG-2", "MUG-3", "MUG-3"])
        orders.order_place(customer_id=rng.choice(CUSTOMERS), lines=[orders.LineRequest(sku, rng.randint(1, 2))])
        if rng.random() < 0.4:
            pump.settle()
        if step % 6 == 5:
            _duplicate_some(pump, rng)
        if step == 12:
            _restart(pump)
        if rng.random() < 0.3:
            pump.settle()
            confirmed = list(Order.objects.using("orders").filter(status="CONFIRMED").order_by("id"))
            if confirmed:
                order = rng.choice(confirmed)
                orders.order_cancel(order_id=order.id, customer_id=order.customer_id)
    pump.settle()
    inventory.product_update(sku="MUG-3", price=Decimal("6.00"))
    pump.settle()


def _duplicate_some(pump, rng: random.Random) -> None:
    """Publish again a few messages already sent, as a relay that crashed before its
    confirm does: the consumers get them twice, the history holds them twice."""
    pump.settle()
    sent = [row for context in contexts.all_contexts() if context.relay
            for row in context.outbox.objects.using(context.database).filter(sent_at__isnull=False)]
    for row in rng.sample(sent, min(4, len(sent))):
        pump.publish(json.dumps(row.envelope))


def _restart(pump) -> None:
    for name, consumer in list(pump.consumers.items()):
        consumer.close()
        pump.consumers[name] = ContextConsumer(contexts.get(name))


def _projection_rows() -> dict[str, list]:
    """Every row of every projection, as a reader sees it once the dashboard's counters are
    folded; without wall-clock bookkeeping (updated_at) and the deltas' own ids."""
    readmodels.dashboard_publish(force=True)
    rows = {}
    for projection in PROJECTIONS:
        for model in projection.models:
            fields = [f.attname for f in model._meta.concrete_fields if f.attname not in ("updated_at", "id")]
            rows[model.__name__] = sorted(model.objects.using("readmodels").values_list(*fields), key=repr)
    return rows


def _side_effects() -> dict:
    """What leaves the read side or any context: change-log entries and stream positions,
    and every outbox's rows."""
    return {
        "changes": rm.Change.objects.using("readmodels").count(),
        "streams": dict(rm.Stream.objects.using("readmodels").values_list("name", "position")),
        "outboxes": {context.name: context.outbox.objects.using(context.database).count()
                     for context in contexts.all_contexts() if context.relay},
        "webhook deliveries": WebhookDelivery.objects.using("webhooks").count(),
    }


@pytest.fixture
def pushes(monkeypatch) -> list:
    """Every push to a channel group made while the test runs."""
    sent = []
    layer = get_channel_layer()
    original = layer.group_send

    async def counted(group, message):
        sent.append(group)
        return await original(group, message)

    monkeypatch.setattr(layer, "group_send", counted)
    return sent


def _readmodels():
    return contexts.get("readmodels")


@pytest.mark.parametrize("seed", [1, 2])
def test_a_full_rebuild_equals_the_live_read_models_row_for_row_and_has_no_side_effects(pump, pushes, seed):
    _scenario(pump, seed)
    live = _projection_rows()
    assert live["OrderSummary"] and {row[2] for row in live["OrderSummary"]} >= {"CONFIRMED", "REJECTED", "CANCELLED"}
    before, pushed = _side_effects(), len(pushes)

    row = rebuild.rebuild(_readmodels())

    assert row.status == rm.Rebuild.Status.SWITCHED and row.done >= history().size() > 0
    assert _side_effects() == before and len(pushes) == pushed  # no change, no push, no message
    assert _projection_rows() == live
    assert rebuild.drop_replaced(_readmodels()) == [row.replaced]


def test_a_damaged_projection_is_mended_and_the_others_are_left_alone(pump):
    _scenario(pump, 3)
    live = _projection_rows()
    damaged = rm.OrderSummary.objects.using("readmodels").order_by("order_id").first()
    rm.OrderSummary.objects.using("readmodels").filter(pk=damaged.pk).update(status="PENDING", timeline=[])
    rm.CatalogItem.objects.using("readmodels").filter(sku="MUG-3").update(name="not rebuilt")

    rebuild.rebuild(_readmodels(), ["orders"])

    after = _projection_rows()
    assert after["OrderSummary"] == live["OrderSummary"]
    assert ("MUG-3", "not rebuilt") in [(item[0], item[1]) for item in after["CatalogItem"]]


def test_what_the_live_consumer_applied_before_the_history_had_it_is_kept_at_the_switch(pump):
    _scenario(pump, 4)
    # A message the live consumer applied that the history does not hold (yet): published
    # straight to the bus, as a relay's publish is seen by consumers before it is marked sent.
    sent, _ = orders.order_place(customer_id=7, lines=[orders.LineRequest("MUG-3", 1)])
    unsent = contexts.get("orders").outbox.objects.using("orders").filter(aggregate_id=str(sent.id))
    for row in unsent:
        pump.publish(json.dumps(row.envelope))
    unsent.delete()  # the archive never has it
    pump.deliver("readmodels")
    live = _projection_rows()
    assert str(sent.id) in {str(row[0]) for row in live["OrderSummary"]}

    rebuild.rebuild(_readmodels())

    assert _projection_rows() == live


class _Killed(BaseException):
    """Stands for SIGKILL: nothing after it runs (tests/e2e/test_rebuild_killed.py kills one for real)."""


def test_a_rebuild_stopped_after_any_batch_resumes_there_and_applies_nothing_twice(pump, settings):
    _scenario(pump, 5)
    live = _projection_rows()
    settings.WAYBILL_HISTORY_BATCH = 7

    def killed_after_two_batches(row, progress):
        if progress.read >= 14:
            raise _Killed

    with pytest.raises(_Killed):
        rebuild.rebuild(_readmodels(), on_progress=killed_after_two_batches)
    stopped = rm.Rebuild.objects.using("readmodels").get()
    assert stopped.status == rm.Rebuild.Status.REPLAYING

    read = []
    resumed = rebuild.rebuild(_readmodels(), on_progress=lambda row, progress: read.append(progress.read))
    assert resumed.pk == stopped.pk and resumed.status == rm.Rebuild.Status.SWITCHED
    assert read[-1] == history().size() - 14  # from the batch after the last commit
    assert _projection_rows() == live
    # The green tables' inbox (now beside the replaced tables) holds each message once.
    green = rebuild._Green(_readmodels(), resumed)
    with green.installed():
        applied = list(rm.InboxMessage.objects.using("readmodels").values_list("message_id", flat=True))
        position = rm.ReplayPosition.objects.using("readmodels").get()
    assert len(applied) == len(set(applied)) == position.applied > 0


def test_a_handler_that_has_not_said_it_may_run_on_replay_is_refused(pump):
    with pytest.raises(ReplayRefused, match="inventory may not replay .*have not said"):
        Replay(contexts.get("inventory"), name="test")
    with pytest.raises(ReplayRefused, match="orders may not replay .*have not said"):
        Replay(contexts.get("orders"), name="test")  # its saga calls a payment provider


def test_a_replayed_handler_that_records_a_message_stops_the_replay_and_leaves_nothing(pump):
    _scenario(pump, 6)
    context = _readmodels()

    @replay_safe
    def breaks_its_promise(envelope, message):
        rm.OrderStatusCount.objects.using("readmodels").create(status="BROKEN", count=1)
        outbox.outbox_record(context="readmodels", message=message, aggregate_id="x", aggregate_version=1)

    context = dataclasses.replace(context, handlers=dict.fromkeys(context.handlers, breaks_its_promise))
    replay = Replay(context, name="test", inbox=False)  # as a rewind: what the live inbox has, again
    with pytest.raises(SideEffectWhileReplaying, match="recording .* outbox while replaying"):
        replay.run()
    assert not rm.OrderStatusCount.objects.using("readmodels").filter(status="BROKEN").exists()
    assert replay.stored_position() is None


def test_batched_handlers_say_replay_safe_explicitly():
    assert Batched(one=print, many=print).replay_safe is False


def test_a_rewind_applies_the_history_again_to_the_live_tables_from_where_it_is_told(pump):
    """As after the read database was restored from a backup: what it lost comes back."""
    _scenario(pump, 7)
    live = _projection_rows()["OrderSummary"]
    lost = rm.OrderSummary.objects.using("readmodels").order_by("order_id")[:3]
    rm.OrderSummary.objects.using("readmodels").filter(pk__in=[row.pk for row in lost]).delete()

    call_command("rewind", consumer="readmodels", to="first", no_progress=True, stdout=io.StringIO())

    assert _projection_rows()["OrderSummary"] == live
    position = rm.ReplayPosition.objects.using("readmodels").get(name="rewind")
    assert position.position["sent"] == [batch for batch in history().read(FIRST)][-1][-1].position["sent"]
    with pytest.raises(CommandError, match="cannot rewind to"):
        call_command("rewind", consumer="readmodels", to="2000-01-01T00:00:00+00:00", no_progress=True)
    with pytest.raises(CommandError, match="inventory may not replay"):
        call_command("rewind", consumer="inventory", to="first", no_progress=True)


def test_the_admin_shows_a_rebuilds_progress_and_only_an_operator_may_start_one(pump, client, django_user_model,
                                                                               monkeypatch):
    _scenario(pump, 8)
    running = rm.Rebuild.objects.using("readmodels").create(
        projections=["orders"], done=250, total=1000, events_per_s=50.0,
        running_on=f"{socket.gethostname()}:{os.getpid()}")  # this process: alive
    page = reverse("admin:readmodels_rebuild_changelist")
    start = reverse("admin:readmodels_rebuild_start")
    viewer = django_user_model.objects.create_user("viewer", password="x" * 20, is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_rebuild"))
    client.force_login(viewer)
    shown = client.get(page).content.decode()
    assert '<progress max="1000" value="250">' in shown and "250 / 1,000 (25%)" in shown and "15 s" in shown
    assert 'http-equiv="refresh"' in shown  # it follows a running rebuild
    assert "Rebuild all projections" not in shown
    assert client.post(start, {"projection": ""}).status_code == 403

    started = []
    monkeypatch.setattr(rebuild, "start_detached", lambda context, names: started.append((context.name, names))
                        or type("Process", (), {"pid": 4242})())
    client.force_login(django_user_model.objects.create_superuser("operator", password="x" * 20))
    assert "Rebuild all projections" in client.get(page).content.decode()
    refused = client.post(start, {"projection": "catalog"}, follow=True).content.decode()
    assert f"Rebuild {running.pk} is running" in refused and not started  # one at a time
    rm.Rebuild.objects.using("readmodels").filter(pk=running.pk).update(running_on="")  # it died
    assert 'http-equiv="refresh"' not in client.get(page).content.decode()
    assert client.post(start, {"projection": "catalog"}).status_code == 302
    assert client.post(start, {"projection": "nothing"}).status_code == 404
    assert started == [("readmodels", ["catalog"])]  # tests/e2e/test_rebuild_killed.py starts one for real


def test_a_projection_added_later_is_filled_from_the_past(pump, client, django_user_model):
    """Sales per product per day, as if its table had just been added: empty while the
    history holds every order; a rebuild of it alone fills it, and its API serves it."""
    _scenario(pump, 9)
    live = _projection_rows()["SaleLine"]
    assert live
    rm.SaleLine.objects.using("readmodels").all().delete()  # the new projection: nothing yet

    rebuild.rebuild(_readmodels(), ["sales"])

    assert _projection_rows()["SaleLine"] == live
    confirmed = [summary for summary in rm.OrderSummary.objects.using("readmodels") if summary.status == "CONFIRMED"]
    expected = {}
    for summary in confirmed:
        for line in summary.lines:
            expected[line["sku"]] = expected.get(line["sku"], 0) + line["quantity"]
    client.force_login(django_user_model.objects.create_user("staff", password="x" * 20, is_staff=True))
    sold = client.get("/api/v1/read/sales/?days=1").json()
    assert {row["sku"]: row["quantity"] for row in sold} == expected
    assert client.get("/api/v1/read/sales/?days=0").json() == {"days": ["Ensure this value is greater than or "
                                                                        "equal to 1."]}


def test_events_stored_as_an_older_version_replay_through_the_upcasters(pump):
    """Orders' snapshot events stored as v1 (before amounts carried their currency), as a
    history from before the versioning issue holds them: the rebuild reads them as v2."""
    _scenario(pump, 10)
    live = _projection_rows()
    outbox = contexts.get("orders").outbox.objects.using("orders")
    stored_as_v1 = 0
    for row in outbox.filter(message_type__in=[schema.message_type for schema in order_contracts.SNAPSHOT_EVENTS]):
        envelope = {**row.envelope, "schema_version": 1,
                    "payload": order_contracts.money_as_a_bare_amount(row.envelope["payload"])}
        outbox.filter(pk=row.pk).update(envelope=envelope)
        stored_as_v1 += 1
    assert stored_as_v1

    rebuild.rebuild(_readmodels())

    assert _projection_rows() == live


def test_a_rebuild_killed_right_after_its_switch_is_not_resumed_into_the_tables_it_replaced(pump, monkeypatch):
    _scenario(pump, 11)
    damaged = rm.OrderSummary.objects.using("readmodels").order_by("order_id").first()
    rm.OrderSummary.objects.using("readmodels").filter(pk=damaged.pk).update(status="PENDING", timeline=[])
    switch = rebuild._switch

    def switched_then_killed(*args, **kwargs):
        switch(*args, **kwargs)
        raise _Killed

    monkeypatch.setattr(rebuild, "_switch", switched_then_killed)
    with pytest.raises(_Killed):
        rebuild.rebuild(_readmodels(), ["orders"])
    monkeypatch.undo()
    assert list(rm.Rebuild.objects.using("readmodels").values_list("status", flat=True)) == ["switched"]

    rebuild.rebuild(_readmodels(), ["orders"])  # a new one, not a resume of the first
    assert rm.Rebuild.objects.using("readmodels").count() == 2
    mended = rm.OrderSummary.objects.using("readmodels").get(pk=damaged.pk)
    assert mended.status != "PENDING" and mended.timeline


def test_a_replayed_handler_that_pushes_after_its_commit_is_refused_too(pump, pushes):
    _scenario(pump, 12)
    context = _readmodels()

    @replay_safe
    def pushes_on_commit(envelope, message):
        transaction.on_commit(lambda: group_send("catalog", {"type": "change"}), using="readmodels")

    context = dataclasses.replace(context, handlers=dict.fromkeys(context.handlers, pushes_on_commit))
    before = len(pushes)
    with pytest.raises(SideEffectWhileReplaying, match="a push to catalog"):
        Replay(context, name="test", inbox=False).run()
    assert len(pushes) == before


def test_a_rebuild_from_a_history_that_lost_its_oldest_messages_is_refused(pump, settings):
    _scenario(pump, 13)
    settings.WAYBILL_HISTORY_MAX_AGE_SECONDS = 0  # the databases are older than what it keeps
    with pytest.raises(HistoryGone, match="no longer holds everything from the start"):
        rebuild.rebuild(_readmodels())
    assert list(rm.Rebuild.objects.using("readmodels").values_list("status", flat=True)) == ["failed"]
