"""Read-model rows as the documents pushed on the change log and sent in snapshots
(one shape for both, so a client treats them alike)."""

from .models import CatalogItem, OrderSummary


def order_document(summary: OrderSummary) -> dict:
    return {"id": str(summary.order_id), "status": summary.status, "reason": summary.reason,
            "lines": summary.lines, "total": str(summary.total), "version": summary.version,
            "updated_at": summary.updated_at.isoformat()}


def catalog_item_document(item: CatalogItem) -> dict:
    return {"sku": item.sku, "name": item.name, "price": str(item.price), "available": item.available,
            "version": item.version}
