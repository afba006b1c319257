"""Projections: each applies one message to one read row, in one transaction, and only
if the message is newer than the row (idempotent and version-checked)."""

from decimal import Decimal
from uuid import UUID

from django.db import transaction

from . import live
from .models import CatalogItem, OrderSummary

DB = "readmodels"


def order_summary_project(
    *, order_id: UUID, customer_id: int, status: str, reason: str, lines: list[dict],
    total: Decimal, version: int,
) -> bool:
    """Apply an order snapshot at ``version``. Returns False (and changes nothing) when the
    summary already shows that version or a later one. Pushes the new summary to the
    customer's browsers once committed."""
    with transaction.atomic(using=DB):
        summary = OrderSummary.objects.using(DB).select_for_update().filter(order_id=order_id).first()
        if summary is not None and summary.version >= version:
            return False
        summary, _ = OrderSummary.objects.using(DB).update_or_create(
            order_id=order_id,
            defaults={"customer_id": customer_id, "status": status, "reason": reason,
                      "lines": lines, "total": total, "version": version},
        )
        pushed = {"id": str(order_id), "status": status, "reason": reason, "lines": lines,
                  "total": str(total), "version": version, "updated_at": summary.updated_at.isoformat()}
        transaction.on_commit(lambda: live.publish_order_summary(customer_id=customer_id, summary=pushed), using=DB)
    return True


def catalog_item_project(*, sku: str, name: str, price: Decimal, available: int, version: int) -> bool:
    """Apply a product's state at ``version``; False when the catalog already has it or newer."""
    with transaction.atomic(using=DB):
        item = CatalogItem.objects.using(DB).select_for_update().filter(sku=sku).first()
        if item is not None and item.version >= version:
            return False
        CatalogItem.objects.using(DB).update_or_create(
            sku=sku, defaults={"name": name, "price": price, "available": available, "version": version},
        )
        pushed = {"sku": sku, "name": name, "price": str(price), "available": available, "version": version}
        transaction.on_commit(lambda: live.publish_catalog_item(item=pushed), using=DB)
    return True
