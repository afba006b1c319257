"""Projections: each applies one message to one read row, in one transaction, and only
if the message is newer than the row (idempotent and version-checked)."""

from decimal import Decimal
from uuid import UUID

from django.db import IntegrityError, models, transaction
from django.utils import timezone

from . import changes
from .serializers_live import catalog_item_document, order_document
from .models import CatalogItem, OrderSummary

DB = "readmodels"


def _apply_if_newer(model: type[models.Model], *, key: dict, version: int, values: dict) -> bool:
    """Write ``values`` at ``version`` unless the row already has that version or a later one.

    A conditional UPDATE, then an INSERT if there was no row: when two projectors race for
    a new row (two workers, PostgreSQL), the loser's INSERT fails and it retries the
    conditional UPDATE, so an older version can never overwrite a newer one."""
    rows = model.objects.using(DB)
    values = {**values, "updated_at": timezone.now()}  # update() skips auto_now
    for _ in range(2):
        if rows.filter(**key, version__lt=version).update(version=version, **values):
            return True
        if rows.filter(**key).exists():
            return False  # already at this version or newer
        try:
            with transaction.atomic(using=DB):
                rows.create(**key, version=version, **values)
            return True
        except IntegrityError:
            continue  # another projector created it meanwhile: compare versions again
    return False


def order_summary_project(
    *, order_id: UUID, customer_id: int, status: str, reason: str, lines: list[dict],
    total: Decimal, version: int,
) -> bool:
    """Apply an order snapshot at ``version``. Returns False (and changes nothing) when the
    summary already shows that version or a later one. Pushes the new summary to the
    customer's browsers once committed."""
    with transaction.atomic(using=DB):
        applied = _apply_if_newer(
            OrderSummary, key={"order_id": order_id}, version=version,
            values={"customer_id": customer_id, "status": status, "reason": reason, "lines": lines, "total": total},
        )
        if applied:
            summary = OrderSummary.objects.using(DB).get(order_id=order_id)
            changes.change_record(stream=changes.customer_stream(customer_id), kind="order", key=str(order_id),
                                  version=version, document=order_document(summary))
    return applied


def catalog_item_project(*, sku: str, name: str, price: Decimal, available: int, version: int) -> bool:
    """Apply a product's state at ``version``; False when the catalog already has it or newer."""
    with transaction.atomic(using=DB):
        applied = _apply_if_newer(
            CatalogItem, key={"sku": sku}, version=version,
            values={"name": name, "price": price, "available": available},
        )
        if applied:
            item = CatalogItem.objects.using(DB).get(sku=sku)
            changes.change_record(stream=changes.CATALOG, kind="catalog_item", key=sku, version=version,
                                  document=catalog_item_document(item))
    return applied
