"""Read-model rows as the documents pushed on the change log and sent in snapshots
(one shape for both, so a client treats them alike). The REST API and the pages of the
backend-for-frontend return these same documents.

Shapes (H4's micro-frontends and webhooks rely on them):

- ``order``: {id, status, reason, total, currency, version, order_version, placed_at, updated_at,
  lines: [{sku, name, quantity, unit_price, available}],
  timeline: [{step, status, at, reason}]}
- ``catalog_item``: {sku, name, price, available, version}
- ``stock_item``: {sku, name, price, on_hand, reserved, available, version}
- ``dashboard``: {version, orders_by_status: {STATUS: n},
  outboxes: [{context, pending, oldest_pending_age_s, parked, dead_letters, measured_at}],
  throughput: [{minute, placed, confirmed, rejected, cancelled}]}  (last 15 minutes, oldest first)
"""

from __future__ import annotations

from collections.abc import Mapping

from .models import CatalogItem, OrderSummary

TIMELINE_KEYS = ("step", "status", "at", "reason")


def order_document(summary: OrderSummary, products: Mapping[str, CatalogItem] | None = None) -> dict:
    """The order joined with what inventory last said about its products: each line's
    ``available`` is the product's availability when the document was built, at the
    product's ``product_version`` (both None if the catalog does not know it).

    Stock moves far more often than an order does, so a stock change does not record a
    new order version: two documents of one order ``version`` may differ in availability,
    and ``product_version`` says which is newer. A client that shows live availability
    follows the ``catalog`` stream for it. ``products`` maps sku -> CatalogItem; looked up
    when not given."""
    if products is None:
        skus = {line["sku"] for line in summary.lines}
        products = CatalogItem.objects.using("readmodels").in_bulk(skus) if skus else {}
    lines = []
    for line in summary.lines:
        product = products.get(line["sku"])
        lines.append({
            "sku": line["sku"],
            "name": line.get("name") or (product.name if product else ""),
            "quantity": line["quantity"],
            "unit_price": line["unit_price"],
            "available": product.available if product else None,
            "product_version": product.version if product else None,
        })
    return {
        "id": str(summary.order_id), "status": summary.status, "reason": summary.reason,
        "total": None if summary.total is None else str(summary.total), "currency": summary.currency or None,
        "version": summary.version, "order_version": summary.order_version,
        "placed_at": summary.placed_at.isoformat() if summary.placed_at else None,
        "updated_at": summary.updated_at.isoformat() if summary.updated_at else None,
        "lines": lines,
        "timeline": [{key: step[key] for key in TIMELINE_KEYS} for step in summary.timeline],
    }


def order_documents(summaries) -> list[dict]:
    """Documents of several orders, with one catalog query for all their products."""
    summaries = list(summaries)
    skus = {line["sku"] for summary in summaries for line in summary.lines}
    products = CatalogItem.objects.using("readmodels").in_bulk(skus) if skus else {}
    return [order_document(summary, products) for summary in summaries]


def catalog_item_document(item: CatalogItem) -> dict:
    return {"sku": item.sku, "name": item.name, "price": str(item.price), "available": item.available,
            "version": item.version}


def stock_item_document(item: CatalogItem) -> dict:
    return {"sku": item.sku, "name": item.name, "price": str(item.price), "on_hand": item.on_hand,
            "reserved": item.reserved, "available": item.available, "version": item.version}
