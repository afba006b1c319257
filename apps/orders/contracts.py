"""Orders' published language. Every order event carries the order's whole snapshot
(event-carried state), so no consumer ever has to call orders back."""

from decimal import Decimal
from uuid import UUID

from pydantic import Field

from waybill.messages import Kind, Message, message


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


# --- payments: commands to orders' own payments consumer (a bulkhead with its own queue
# and workers) and the events it answers with. Internal to orders, but on the bus so that
# a slow payment provider never holds up anything else.


@message("orders.charge_payment", kind=Kind.COMMAND, consumer="payments")
class ChargePayment(Message):
    order_id: UUID
    amount: Decimal
    currency: str = Field(min_length=3, max_length=3)


@message("orders.refund_payment", kind=Kind.COMMAND, consumer="payments")
class RefundPayment(Message):
    order_id: UUID
    reason: str


@message("orders.payment_charged")
class PaymentCharged(Message):
    order_id: UUID
    charge_id: str
    amount: Decimal


@message("orders.payment_declined")
class PaymentDeclined(Message):
    """The provider refused the charge: a business answer, never retried."""

    order_id: UUID
    reason: str


@message("orders.payment_refunded")
class PaymentRefunded(Message):
    order_id: UUID
    refund_id: str
    refunded: bool  # False: there was no successful charge to give back
