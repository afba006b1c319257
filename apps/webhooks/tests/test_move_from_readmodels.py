"""An existing deployment keeps its webhooks: endpoints (with their secrets), deliveries,
attempts, and the consumer's inbox and dead letters move from the readmodels database,
where webhooks kept them as part of readmodels, into the webhooks database; then the old
tables are dropped. ``migrateall`` runs the move; running it again is harmless, and so is
running it again after a crash half way."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta

import pytest
from django.core.management import CommandError, call_command
from django.db import connections
from django.utils import timezone

from apps.webhooks import services
from apps.webhooks.management.commands import webhooks_move_from_readmodels as move
from apps.webhooks.models import DeadLetter, InboxMessage, WebhookAttempt, WebhookDelivery, WebhookEndpoint

from .support import api, send_all

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")
OLD_TABLES = ("readmodels_webhookendpoint", "readmodels_webhookdelivery", "readmodels_webhookattempt",
              "readmodels_webhookinbox", "readmodels_webhookdeadletter")


def old_tables() -> set[str]:
    return set(OLD_TABLES) & set(connections["readmodels"].introspection.table_names())


@pytest.fixture
def old(alice, staff):
    """The readmodels database as a deployment from before the move has it: readmodels'
    migrations created the webhook tables. Made afresh from the same historical models for
    every test: the test database's flush knows nothing of them, so an earlier test's rows
    (or its move) would be found there."""
    models = move.old_models()
    with connections["readmodels"].schema_editor() as editor:
        for model in reversed(models.values()):
            if model._meta.db_table in old_tables():
                editor.delete_model(model)
        for model in models.values():
            editor.create_model(model)
    db = "readmodels"
    now = timezone.now()

    def body(n: int) -> str:
        return json.dumps({"id": str(uuid.uuid4()), "type": "orders.order_placed",
                           "data": {"customer_id": alice.id, "n": n}})

    mine = models["WebhookEndpoint"].objects.using(db).create(
        owner_id=alice.id, url="https://example.com/alice", event_types=["orders.order_placed"],
        secret="whsec_alices-secret", created_at=now - timedelta(days=3))
    gone = models["WebhookEndpoint"].objects.using(db).create(
        owner_id=staff.id, url="https://example.com/ops", event_types=["inventory.product_updated"],
        secret="whsec_ops-secret", active=False, deleted_at=now - timedelta(days=1))
    delivered = models["WebhookDelivery"].objects.using(db).create(
        endpoint=mine, message_id=uuid.uuid4(), event_type="orders.order_placed", body=body(1),
        status="delivered", attempts=2, last_status_code=200, last_response_ms=12, delivered_at=now)
    pending = models["WebhookDelivery"].objects.using(db).create(
        endpoint=mine, message_id=uuid.uuid4(), event_type="orders.order_placed", body=body(2),
        status="pending", attempts=1, next_attempt_at=now - timedelta(seconds=1), last_error="HTTP 500")
    models["WebhookDelivery"].objects.using(db).create(
        endpoint=gone, message_id=uuid.uuid4(), event_type="inventory.product_updated", body=body(3),
        status="failed", last_error="endpoint deleted")
    for delivery, code in ((delivered, 500), (delivered, 200), (pending, 500)):
        models["WebhookAttempt"].objects.using(db).create(
            delivery=delivery, started_at=now, status_code=code, response_ms=7, succeeded=code == 200,
            error="" if code == 200 else "HTTP 500", detail="the receiver said no" if code != 200 else "")
    models["WebhookInbox"].objects.using(db).create(
        message_id=uuid.uuid4(), message_type="orders.order_placed", status="retrying", attempts=1,
        envelope={"type": "orders.order_placed"}, next_attempt_at=now)
    models["WebhookDeadLetter"].objects.using(db).create(
        message_id=None, reason="malformed JSON", body=b"\x00not json", body_size=9, preview="\\x00not json")
    return {"mine": mine, "gone": gone, "delivered": delivered, "pending": pending}


def test_migrateall_moves_endpoints_secrets_and_history_and_drops_the_old_tables(old, alice, monkeypatch):
    call_command("migrateall", verbosity=0)

    assert old_tables() == set()
    endpoints = {e.pk: e for e in WebhookEndpoint.objects.using("webhooks")}
    assert endpoints.keys() == {old["mine"].pk, old["gone"].pk}
    assert endpoints[old["mine"].pk].secret == "whsec_alices-secret"
    assert endpoints[old["gone"].pk].secret == "whsec_ops-secret" and not endpoints[old["gone"].pk].active
    assert endpoints[old["mine"].pk].created_at == old["mine"].created_at
    deliveries = {d.pk: d for d in WebhookDelivery.objects.all()}
    assert len(deliveries) == 3
    assert (deliveries[old["delivered"].pk].status, deliveries[old["delivered"].pk].attempts) == ("delivered", 2)
    assert deliveries[old["pending"].pk].body == old["pending"].body
    assert [a.status_code for a in deliveries[old["delivered"].pk].attempt_log.all()] == [500, 200]
    assert WebhookAttempt.objects.get(delivery_id=old["pending"].pk).detail == "the receiver said no"
    assert InboxMessage.objects.get().status == "retrying"
    assert bytes(DeadLetter.objects.get().body) == b"\x00not json"

    # The moved endpoint is the owner's, as before: listed (never with its secret), and
    # its pending delivery goes out, signed with the same secret.
    listed = api(alice).get("/api/v1/webhooks/").json()
    assert [e["id"] for e in listed] == [str(old["mine"].pk)] and "secret" not in listed[0]
    sent = []

    def post(**kwargs):
        sent.append(kwargs)
        return services.delivery.Outcome(timezone.now(), 3, 200)

    monkeypatch.setattr(services.delivery, "post", post)
    assert send_all() == 1
    assert [(s["delivery_id"], s["secret"]) for s in sent] == [(str(old["pending"].pk), "whsec_alices-secret")]
    assert WebhookAttempt.objects.filter(delivery_id=old["pending"].pk).count() == 2  # new ids after the old

    # Again: nothing to do, nothing changed.
    before = sorted(WebhookDelivery.objects.values_list("id", "status", "attempts"))
    call_command("webhooks_move_from_readmodels", verbosity=0)
    call_command("migrateall", verbosity=0)
    assert sorted(WebhookDelivery.objects.values_list("id", "status", "attempts")) == before
    assert WebhookEndpoint.objects.count() == 2 and WebhookAttempt.objects.count() == 4


def test_operators_keep_their_rights_on_the_webhook_pages(old, django_user_model):
    """An operator who is no superuser may mend deliveries because of a permission named for
    the app; the moved tables' permissions are webhooks' now."""
    from django.contrib.auth.models import Group, Permission
    from django.contrib.contenttypes.models import ContentType

    def permission(app, model, codename):
        content_type, _ = ContentType.objects.get_or_create(app_label=app, model=model)
        return Permission.objects.get_or_create(content_type=content_type, codename=codename,
                                                defaults={"name": codename})[0]

    operator = django_user_model.objects.create_user("operator", is_staff=True)
    operator.user_permissions.add(permission("readmodels", "webhookdelivery", "change_webhookdelivery"))
    on_call = Group.objects.create(name="on call")
    on_call.permissions.add(permission("readmodels", "webhookinbox", "view_webhookinbox"))
    on_call.user_set.add(operator)

    call_command("webhooks_move_from_readmodels", verbosity=0)

    operator = django_user_model.objects.get(pk=operator.pk)  # no cached permissions
    assert operator.has_perm("webhooks.change_webhookdelivery")
    assert operator.has_perm("webhooks.view_inboxmessage")  # through the group, under the inbox's new name
    assert not operator.has_perm("webhooks.change_webhookendpoint")  # nothing more than before


def test_a_move_that_stopped_half_way_finishes_when_run_again(old):
    # As if the first run died after copying the endpoints and one delivery.
    models = move.old_models()
    move.Command()._copy(move.TABLES[0], models["WebhookEndpoint"])
    WebhookDelivery.objects.create(**{f.attname: getattr(old["delivered"], f.attname)
                                      for f in WebhookDelivery._meta.concrete_fields})

    call_command("webhooks_move_from_readmodels", verbosity=0)

    assert old_tables() == set()
    assert WebhookEndpoint.objects.count() == 2
    assert WebhookDelivery.objects.count() == 3 and WebhookAttempt.objects.count() == 3
    assert InboxMessage.objects.count() == 1 and DeadLetter.objects.count() == 1


def test_a_different_row_under_an_old_rows_identity_stops_the_move_and_drops_nothing(old, staff):
    WebhookEndpoint.objects.create(id=old["mine"].pk, owner_id=staff.id, url="https://example.com/other",
                                   event_types=["orders.order_placed"], secret="whsec_another")
    with pytest.raises(CommandError, match="nothing dropped"):
        call_command("webhooks_move_from_readmodels", verbosity=0)
    assert old_tables() == set(OLD_TABLES)
    assert WebhookEndpoint.objects.get(pk=old["mine"].pk).secret == "whsec_another"  # not overwritten


def test_a_row_written_to_the_old_tables_during_the_move_stops_the_drop_and_a_rerun_moves_it(old, monkeypatch):
    models = move.old_models()
    real_copy = move.Command._copy

    def copy_then_an_old_worker_writes(self, table, old_model):
        copied = real_copy(self, table, old_model)
        if table.old == "WebhookDelivery":  # an old readmodels-webhooks-worker, still running
            models["WebhookDelivery"].objects.using("readmodels").create(
                endpoint_id=old["mine"].pk, message_id=uuid.uuid4(), event_type="orders.order_placed",
                body="{}", status="pending")
        return copied

    monkeypatch.setattr(move.Command, "_copy", copy_then_an_old_worker_writes)
    with pytest.raises(CommandError, match="readmodels_webhookdelivery gained 1 rows.*nothing dropped"):
        call_command("webhooks_move_from_readmodels", verbosity=0)
    assert old_tables() == set(OLD_TABLES)

    monkeypatch.undo()
    call_command("webhooks_move_from_readmodels", verbosity=0)
    assert old_tables() == set() and WebhookDelivery.objects.count() == 4


def test_where_the_readmodels_database_is_not_configured_it_does_nothing(monkeypatch, capsys):
    monkeypatch.setattr(move, "OLD_DB", "readmodels-elsewhere")  # as in a webhooks service's own process
    call_command("webhooks_move_from_readmodels")
    assert "not configured here" in capsys.readouterr().out
