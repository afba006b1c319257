"""Inventory's reactions to other contexts' events: thin calls into services."""

from apps.orders import contracts as orders
from waybill.messages import Envelope

from . import contracts, services


def on_order_placed(envelope: Envelope, event: orders.OrderPlaced) -> None:
    services.stock_reserve(
        order_id=event.order_id,
        lines=[contracts.StockLine(sku=line.sku, quantity=line.quantity) for line in event.lines],
    )


def on_order_cancelled(envelope: Envelope, event: orders.OrderCancelled) -> None:
    services.stock_release(order_id=event.order_id)


HANDLERS = {
    orders.OrderPlaced: on_order_placed,
    orders.OrderCancelled: on_order_cancelled,
}
