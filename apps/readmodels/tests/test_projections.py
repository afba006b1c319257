import uuid
from decimal import Decimal

import pytest

from apps.readmodels import services
from apps.readmodels.models import CatalogItem, OrderSummary

from .snapshots import order_snapshot_project

pytestmark = pytest.mark.django_db(transaction=True, databases=["readmodels"])


def _project(order_id, status, version):
    return order_snapshot_project(
        order_id=order_id, customer_id=1, status=status, reason="", version=version,
        lines=[{"sku": "A-1", "name": "A", "quantity": 1, "unit_price": "1.00"}], total=Decimal("1"),
    )


def test_a_stale_or_repeated_message_never_moves_a_summary_backwards():
    order_id = uuid.uuid4()
    assert _project(order_id, "PENDING", 1)
    assert _project(order_id, "CANCELLED", 3)
    assert _project(order_id, "CONFIRMED", 2)  # arrived late: a step of the timeline, not the status
    assert not _project(order_id, "CANCELLED", 3)  # arrived twice
    summary = OrderSummary.objects.get()
    # Orders' version 3 shown; the document changed three times (the late snapshot still
    # adds its step to the timeline, but not its status).
    assert (summary.status, summary.order_version, summary.version) == ("CANCELLED", 3, 3)
    assert [step["step"] for step in summary.timeline] == ["placed", "cancelled", "confirmed"]


def test_catalog_keeps_the_newest_state():
    assert services.catalog_item_project(sku="A-1", name="A", price=Decimal("1"), on_hand=5, reserved=1, available=4,
                                         version=2)
    assert not services.catalog_item_project(sku="A-1", name="A", price=Decimal("1"), on_hand=9, reserved=0,
                                             available=9, version=1)
    assert CatalogItem.objects.get().available == 4


def test_changes_are_numbered_per_stream_and_resumable():
    from apps.readmodels.live import changelog

    order_id = uuid.uuid4()
    _project(order_id, "PENDING", 1)
    _project(order_id, "CONFIRMED", 2)
    services.catalog_item_project(sku="A-1", name="A", price=Decimal("1"), on_hand=4, reserved=0, available=4,
                                  version=1)
    stream = changelog.customer_stream(1)
    assert changelog.stream_position(stream) == 2
    assert changelog.stream_position(changelog.CATALOG) == 1
    missed = changelog.changes_since(stream=stream, position=1)
    assert [(c["position"], c["version"], c["data"]["status"]) for c in missed] == [(2, 2, "CONFIRMED")]
    assert changelog.changes_since(stream=stream, position=2) == []
    assert changelog.changes_since(stream=stream, position=7) == changelog.Gap(2)  # ahead: a reset log


def test_a_gap_older_than_the_log_asks_for_a_snapshot():
    from datetime import timedelta

    from apps.readmodels.live import changelog

    order_id = uuid.uuid4()
    for version in (1, 2, 3):
        _project(order_id, "PENDING", version)
    assert changelog.changes_prune(older_than=timedelta(seconds=-1)) == 2  # keeps the latest
    stream = changelog.customer_stream(1)
    assert changelog.changes_since(stream=stream, position=0) == changelog.Gap(3)
    assert changelog.changes_since(stream=stream, position=2)[0]["position"] == 3


def test_a_hole_in_the_middle_of_the_log_asks_for_a_snapshot():
    from apps.readmodels.live import changelog
    from apps.readmodels.models import Change

    order_id = uuid.uuid4()
    for version in (1, 2, 3, 4):
        _project(order_id, "PENDING", version)
    stream = changelog.customer_stream(1)
    Change.objects.filter(stream=stream, position=3).delete()  # pruned out of order (clock skew)
    assert changelog.changes_since(stream=stream, position=1) == changelog.Gap(4)
    assert [c["position"] for c in changelog.changes_since(stream=stream, position=3)] == [4]
