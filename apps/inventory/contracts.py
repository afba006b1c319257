"""Inventory's published language: what it tells the others. Frozen once published:
change a message by registering a new schema version beside the old one."""

from decimal import Decimal
from uuid import UUID

from pydantic import Field

from waybill.messages import Kind, Message, message


class StockLine(Message):
    sku: str
    quantity: int = Field(ge=1)


@message("inventory.product_updated", kind=Kind.DOCUMENT)
class ProductUpdated(Message):
    """State document: the product's whole current state, sent when it changes. A newer one
    supersedes it: of the states one consumer batch leaves (stock after each of its
    reservations) only the last is sent, so a receiver sees the versions grow, not each one."""

    sku: str
    name: str
    price: Decimal
    on_hand: int = Field(ge=0)
    reserved: int = Field(ge=0)
    available: int = Field(ge=0)


@message("inventory.product_listed", kind=Kind.DOCUMENT)
class ProductListed(Message):
    """State document of what a shop shows about a product: its name and price. Sent when
    the product is created and whenever its name or price change, never on a stock change,
    so that a context that sells products but does not track stock (orders) is not sent
    a message for every reservation. Versions are the product's, as in ``product_updated``."""

    sku: str
    name: str
    price: Decimal


@message("inventory.reserve_stock", kind=Kind.COMMAND)
class ReserveStock(Message):
    """Hold every line for the order, or none; answered by ``stock_reserved`` or
    ``stock_reservation_rejected``. Idempotent per order."""

    order_id: UUID
    lines: list[StockLine] = Field(min_length=1)


@message("inventory.release_stock", kind=Kind.COMMAND)
class ReleaseStock(Message):
    """Give back whatever is held for the order (nothing, if nothing is), and make sure a
    late ``reserve_stock`` for it holds nothing. Always answered by ``stock_released``."""

    order_id: UUID


@message("inventory.stock_reserved")
class StockReserved(Message):
    """Every line of the order is held for it (all or nothing)."""

    order_id: UUID
    lines: list[StockLine]


@message("inventory.stock_reservation_rejected")
class StockReservationRejected(Message):
    """Nothing was held for the order; ``reason`` is fit to show the customer."""

    order_id: UUID
    reason: str


@message("inventory.stock_released")
class StockReleased(Message):
    """Whatever was held for the order is back in stock (``lines`` empty if nothing was)."""

    order_id: UUID
    lines: list[StockLine]
