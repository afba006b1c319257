"""Orders' published language. Every order event carries the order's whole snapshot
(event-carried state), so no consumer ever has to call orders back."""

from decimal import Decimal
from uuid import UUID

from pydantic import Field

from waybill.messages import Kind, Message, downcaster, message, upcaster


class Money(Message):
    """An amount of money in an ISO 4217 currency (``"12.50"`` and ``"EUR"``)."""

    amount: Decimal
    currency: str = Field(pattern=r"^[A-Z]{3}$")


class OrderLine(Message):
    sku: str
    name: str
    quantity: int = Field(ge=1)
    unit_price: Money


class OrderSnapshot(Message):
    order_id: UUID
    customer_id: int
    status: str
    reason: str = ""
    lines: list[OrderLine] = Field(min_length=1)
    total: Money


@message("orders.order_placed", version=2)
class OrderPlaced(OrderSnapshot):
    """A customer placed the order; it waits for stock (status PENDING)."""


@message("orders.order_confirmed", version=2)
class OrderConfirmed(OrderSnapshot):
    """Stock is held for every line (status CONFIRMED)."""


@message("orders.order_rejected", version=2)
class OrderRejected(OrderSnapshot):
    """The order cannot be filled; ``reason`` says why (status REJECTED)."""


@message("orders.order_cancelled", version=2)
class OrderCancelled(OrderSnapshot):
    """The customer cancelled; any stock held for it is to be released (status CANCELLED)."""


# --- version 1 of the snapshot events: amounts without their currency ---------------------
# Until version 2 an amount was a bare decimal, in the shop's one currency, which was
# LEGACY_CURRENCY. Kept registered: v1 messages still sit in queues, dead letters and the
# history, and are read through the upcaster below; a consumer that still reads v1 is given
# v2 messages through the downcaster.
LEGACY_CURRENCY = "EUR"


class OrderLineV1(Message):
    sku: str
    name: str
    quantity: int = Field(ge=1)
    unit_price: Decimal


class OrderSnapshotV1(Message):
    order_id: UUID
    customer_id: int
    status: str
    reason: str = ""
    lines: list[OrderLineV1] = Field(min_length=1)
    total: Decimal


@message("orders.order_placed", version=1)
class OrderPlacedV1(OrderSnapshotV1):
    """A customer placed the order; it waits for stock (status PENDING)."""


@message("orders.order_confirmed", version=1)
class OrderConfirmedV1(OrderSnapshotV1):
    """Stock is held for every line (status CONFIRMED)."""


@message("orders.order_rejected", version=1)
class OrderRejectedV1(OrderSnapshotV1):
    """The order cannot be filled; ``reason`` says why (status REJECTED)."""


@message("orders.order_cancelled", version=1)
class OrderCancelledV1(OrderSnapshotV1):
    """The customer cancelled; any stock held for it is to be released (status CANCELLED)."""


def money_with_its_currency(payload: dict) -> dict:
    """v1 -> v2: each amount becomes amount and currency, the currency v1's amounts were in."""
    def money(amount) -> dict:
        return {"amount": amount, "currency": LEGACY_CURRENCY}

    return {**payload, "total": money(payload["total"]),
            "lines": [{**line, "unit_price": money(line["unit_price"])} for line in payload["lines"]]}


def money_as_a_bare_amount(payload: dict) -> dict:
    """v2 -> v1, for a consumer still on v1: the amounts alone. A v1 reader assumes
    LEGACY_CURRENCY, so an order in another currency cannot be told to it: refused."""
    def amount(money: dict):
        if money["currency"] != LEGACY_CURRENCY:
            raise ValueError(f"a v1 reader takes amounts in {LEGACY_CURRENCY} only, not {money['currency']}")
        return money["amount"]

    return {**payload, "total": amount(payload["total"]),
            "lines": [{**line, "unit_price": amount(line["unit_price"])} for line in payload["lines"]]}


# The events that carry the order's whole snapshot.
SNAPSHOT_EVENTS = (OrderPlaced, OrderConfirmed, OrderRejected, OrderCancelled)

for _snapshot in SNAPSHOT_EVENTS:
    upcaster(_snapshot.message_type, from_version=1)(money_with_its_currency)
    downcaster(_snapshot.message_type, from_version=2)(money_as_a_bare_amount)


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
