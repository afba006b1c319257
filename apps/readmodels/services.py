"""Projections: each applies one message to one read row, in one transaction, and only
if the message is newer than the row (idempotent and version-checked)."""

from decimal import Decimal
from uuid import UUID

from django.db import transaction

from .models import CatalogItem, OrderSummary

DB = "readmodels"


def order_summary_project(
    *, order_id: UUID, customer_id: int, status: str, reason: str, lines: list[dict],
    total: Decimal, version: int,
) -> bool:
    """Apply an order snapshot at ``version``. Returns False (and changes nothing) when the
    summary already shows that version or a later one."""
    with transaction.atomic(using=DB):
        summary = OrderSummary.objects.using(DB).select_for_update().filter(order_id=order_id).first()
        if summary is not None and summary.version >= version:
            return False
        OrderSummary.objects.using(DB).update_or_create(
            order_id=order_id,
            defaults={"customer_id": customer_id, "status": status, "reason": reason,
                      "lines": lines, "total": total, "version": version},
        )
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
    return True
