"""The projector: orders' and inventory's messages into query models."""

from apps.inventory import contracts as inventory
from apps.orders import contracts as orders
from waybill.messages import Envelope

from . import services


def on_order_changed(envelope: Envelope, snapshot: orders.OrderSnapshot) -> None:
    services.order_summary_project(
        order_id=snapshot.order_id,
        customer_id=snapshot.customer_id,
        status=snapshot.status,
        reason=snapshot.reason,
        lines=[line.model_dump(mode="json") for line in snapshot.lines],
        total=snapshot.total,
        version=envelope.aggregate_version,
    )


def on_product_updated(envelope: Envelope, document: inventory.ProductUpdated) -> None:
    services.catalog_item_project(
        sku=document.sku, name=document.name, price=document.price,
        available=document.available, version=envelope.aggregate_version,
    )


HANDLERS = {
    orders.OrderPlaced: on_order_changed,
    orders.OrderConfirmed: on_order_changed,
    orders.OrderRejected: on_order_changed,
    orders.OrderCancelled: on_order_changed,
    inventory.ProductUpdated: on_product_updated,
}
