"""Old sent outbox rows and processed inbox rows are pruned; nothing still needed is."""

import uuid
from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from apps.inventory import services as inventory
from apps.inventory.models import OutboxMessage as InventoryOutbox
from apps.readmodels.models import InboxMessage as ReadInbox
from waybill import contexts, retention

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")


def _inbox(status, processed_days_ago):
    return ReadInbox.objects.create(
        message_id=uuid.uuid4(), message_type="x.y_happened", status=status, envelope={},
        processed_at=timezone.now() - timedelta(days=processed_days_ago) if processed_days_ago is not None else None)


def test_old_sent_outbox_and_processed_inbox_rows_go_and_nothing_else(pump, settings):
    settings.WAYBILL_OUTBOX_RETENTION_SECONDS = 3600
    settings.WAYBILL_INBOX_RETENTION_SECONDS = 3600
    settings.WAYBILL_HISTORY_MAX_AGE_SECONDS = 3600  # embedded, sent events are the history too
    inventory.product_create(sku="PRUNE-1", name="Old", price=Decimal("1"), on_hand=1)
    pump.relay("inventory")
    InventoryOutbox.objects.update(sent_at=timezone.now() - timedelta(days=2))  # long sent
    inventory.product_update(sku="PRUNE-1", on_hand=2)  # unsent: must stay
    old, fresh = _inbox("processed", 2), _inbox("processed", 0)
    retrying, dead = _inbox("retrying", None), _inbox("dead", 2)

    deleted = retention.prune(contexts.get("inventory")) + retention.prune(contexts.get("readmodels"))

    assert deleted == 3  # inventory's two sent documents, readmodels' old processed row
    assert list(InventoryOutbox.objects.values_list("sent_at", flat=True)) == [None]
    remaining = set(ReadInbox.objects.values_list("id", flat=True))
    assert old.id not in remaining
    assert {fresh.id, retrying.id, dead.id} <= remaining

