"""Partitioned ordering: with WAYBILL_PARTITIONS=4 each consumer has four queues, each with
one active consumer thread; messages go to a partition by aggregate. Interleaved changes to
many products must apply in each product's own order, while the partitions share the work."""

from __future__ import annotations

import json
import sqlite3
from collections import defaultdict

import pytest

from .harness import Shop, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("embedded")]

PRODUCTS, CHANGES = 12, 8


def test_interleaved_changes_apply_in_order_per_aggregate_across_parallel_partitions(platform_factory):
    platform = platform_factory("partitions", start=False).start(env={"WAYBILL_PARTITIONS": "4"})
    shop = Shop(platform)
    skus = [shop.create_product(on_hand=100) for _ in range(PRODUCTS)]
    for change in range(1, CHANGES + 1):  # round-robin: every product's changes interleave
        for sku in skus:
            response = shop.admin.patch(f"/api/v1/inventory/products/{sku}/", json={"on_hand": 100 + change})
            assert response.status_code == 200, response.text

    final_version = CHANGES + 1
    wait_for(lambda: all(shop.catalog()[sku]["version"] == final_version for sku in skus), 60,
             "the catalog to show every product's last change")

    with sqlite3.connect(platform.data_dir / "readmodels.sqlite3") as db:
        rows = db.execute(
            "SELECT envelope, processed_by FROM readmodels_inboxmessage "
            "WHERE message_type = 'inventory.product_updated' ORDER BY id"  # id order = commit order
        ).fetchall()
    applied: dict[str, list[int]] = defaultdict(list)
    consumers = set()
    for envelope, processed_by in rows:
        envelope = json.loads(envelope)
        if envelope["aggregate_id"] in skus:
            applied[envelope["aggregate_id"]].append(envelope["aggregate_version"])
            consumers.add(processed_by.rsplit(":", 1)[-1])
    for sku in skus:
        assert applied[sku] == list(range(1, final_version + 1)), f"{sku} applied as {applied[sku]}"
    assert len(consumers) >= 2, f"one partition did everything: {consumers}"
    assert all(".p" in name for name in consumers)
