"""Orders' published language. Every order event carries the order's whole snapshot
(event-carried state), so no consumer ever has to call orders back."""

from decimal import Decimal
from uuid import UUID

from pydantic import Field

from waybill.messages import Message, message


class OrderLine(Message):
    sku: str
    name: str
    quantity: int = Field(ge=1)
    unit_price: Decimal


class OrderSnapshot(Message):
    order_id: UUID
    customer_id: int
    status: str
    reason: str = ""
    lines: list[OrderLine] = Field(min_length=1)
    total: Decimal


@message("orders.order_placed")
class OrderPlaced(OrderSnapshot):
    """A customer placed the order; it waits for stock (status PENDING)."""


@message("orders.order_confirmed")
class OrderConfirmed(OrderSnapshot):
    """Stock is held for every line (status CONFIRMED)."""


@message("orders.order_rejected")
class OrderRejected(OrderSnapshot):
    """The order cannot be filled; ``reason`` says why (status REJECTED)."""


@message("orders.order_cancelled")
class OrderCancelled(OrderSnapshot):
    """The customer cancelled; any stock held for it is to be released (status CANCELLED)."""
