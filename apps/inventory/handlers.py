"""Inventory's reactions: commands from orders' saga, and the cancellation event
(choreography: nobody orchestrates giving back a cancelled order's stock)."""

from apps.orders import contracts as orders
from waybill.api import Batched, BatchItem, Envelope

from . import contracts, services


def on_reserve_stock(envelope: Envelope, command: contracts.ReserveStock) -> None:
    services.stock_reserve(order_id=command.order_id, lines=command.lines)


def on_reserve_stock_many(items: list[BatchItem]) -> None:
    services.stock_reserve_many(requests=[
        services.StockRequest(order_id=item.message.order_id, lines=item.message.lines, on_behalf=item.handling)
        for item in items
    ])


def on_release_stock(envelope: Envelope, command: contracts.ReleaseStock) -> None:
    services.stock_release(order_id=command.order_id)


def on_order_cancelled(envelope: Envelope, event: orders.OrderCancelledV1) -> None:
    services.stock_release(order_id=event.order_id)


HANDLERS = {
    contracts.ReserveStock: Batched(one=on_reserve_stock, many=on_reserve_stock_many),
    contracts.ReleaseStock: on_release_stock,
    # Still on v1: inventory needs the order's id alone, so it has not moved to v2 (money
    # with its currency). orders publishes v2; the consumer's read path gives inventory v1
    # through orders' downcaster: every cancellation, in both modes and in the end-to-end
    # tests, is a consumer on v1 beside a producer on v2.
    orders.OrderCancelledV1: on_order_cancelled,
}
