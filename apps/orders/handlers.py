"""Orders' reactions: the saga's answers from inventory and from the payments consumer,
and inventory's product documents. Thin calls into the saga and services."""

from apps.inventory import contracts as inventory
from waybill.api import Envelope

from . import contracts, saga, services


def on_stock_reserved(envelope: Envelope, event: inventory.StockReserved) -> None:
    saga.saga_on_stock_reserved(order_id=event.order_id)


def on_stock_reservation_rejected(envelope: Envelope, event: inventory.StockReservationRejected) -> None:
    saga.saga_on_stock_reservation_rejected(order_id=event.order_id, reason=event.reason)


def on_stock_released(envelope: Envelope, event: inventory.StockReleased) -> None:
    saga.saga_on_stock_released(order_id=event.order_id)


def on_payment_charged(envelope: Envelope, event: contracts.PaymentCharged) -> None:
    saga.saga_on_payment_charged(order_id=event.order_id, charge_id=event.charge_id)


def on_payment_declined(envelope: Envelope, event: contracts.PaymentDeclined) -> None:
    saga.saga_on_payment_declined(order_id=event.order_id, reason=event.reason)


def on_payment_refunded(envelope: Envelope, event: contracts.PaymentRefunded) -> None:
    saga.saga_on_payment_refunded(order_id=event.order_id, refund_id=event.refund_id, refunded=event.refunded)


def on_product_listed(envelope: Envelope, document: inventory.ProductListed) -> None:
    services.product_copy_apply(
        sku=document.sku, name=document.name, price=document.price, version=envelope.aggregate_version
    )


HANDLERS = {
    inventory.StockReserved: on_stock_reserved,
    inventory.StockReservationRejected: on_stock_reservation_rejected,
    inventory.StockReleased: on_stock_released,
    contracts.PaymentCharged: on_payment_charged,
    contracts.PaymentDeclined: on_payment_declined,
    contracts.PaymentRefunded: on_payment_refunded,
    inventory.ProductListed: on_product_listed,
}
