"""Orders' reactions to inventory's messages: thin calls into services."""

from apps.inventory import contracts as inventory
from waybill.messages import Envelope

from . import services


def on_stock_reserved(envelope: Envelope, event: inventory.StockReserved) -> None:
    services.order_confirm(order_id=event.order_id)


def on_stock_reservation_rejected(envelope: Envelope, event: inventory.StockReservationRejected) -> None:
    services.order_reject(order_id=event.order_id, reason=event.reason)


def on_product_updated(envelope: Envelope, document: inventory.ProductUpdated) -> None:
    services.product_copy_apply(
        sku=document.sku, name=document.name, price=document.price, version=envelope.aggregate_version
    )


HANDLERS = {
    inventory.StockReserved: on_stock_reserved,
    inventory.StockReservationRejected: on_stock_reservation_rejected,
    inventory.ProductUpdated: on_product_updated,
}
