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
    """State document: the product's whole current state, sent on every change of it."""

    sku: str
    name: str
    price: Decimal
    on_hand: int = Field(ge=0)
    reserved: int = Field(ge=0)
    available: int = Field(ge=0)


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
    """A held reservation was given back to stock."""

    order_id: UUID
    lines: list[StockLine]
