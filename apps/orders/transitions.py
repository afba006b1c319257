"""The order's state transitions: each moves one order from one status to the next and
records the snapshot event that says so, through the outbox, in the caller's transaction.

Both the services (placing and cancelling, on the customer's word) and the saga
(confirming and rejecting, on inventory's and payments' answers) move orders through
here, so neither imports the other for it.
"""

from __future__ import annotations

from collections.abc import Collection
from uuid import UUID

from django.db import transaction

from waybill.api import outbox_record

from . import contracts
from .models import Order

DB = "orders"


class OrderError(ValueError):
    """A request the order rules refuse; ``field`` names what was wrong, if anything."""

    def __init__(self, message: str, *, field: str | None = None):
        super().__init__(message)
        self.field = field


class OrderConflict(OrderError):
    """The order is not in a state that allows this (e.g. cancelling a rejected order)."""


class OrderVersionMismatch(OrderConflict):
    """The caller acted on a version of the order that is no longer current."""


def order_snapshot_record(*, order: Order, event: type[contracts.OrderSnapshot]) -> None:
    """Record ``event`` (one of the order's snapshot events) at the order's version."""
    snapshot = event(
        order_id=order.id,
        customer_id=order.customer_id,
        status=order.status,
        reason=order.reason,
        lines=[
            contracts.OrderLine(sku=line.sku, name=line.name, quantity=line.quantity,
                                unit_price=contracts.Money(amount=line.unit_price, currency=order.currency))
            for line in order.lines.all()
        ],
        total=contracts.Money(amount=order.total, currency=order.currency),
    )
    outbox_record(context="orders", message=snapshot, aggregate_id=str(order.id), aggregate_version=order.version)


def order_transition(order_id: UUID, *, to: str, allowed_from: set[str], reason: str = "",
                     event: type[contracts.OrderSnapshot], customer_id: int | None = None,
                     expected_versions: Collection[int] | None = None) -> Order | None:
    """Move the order to ``to`` if its status is one of ``allowed_from``, bump its version
    and record ``event``. None if there is no such order (of ``customer_id``, when given).

    On a customer's behalf (``customer_id`` given) a refused move raises ``OrderConflict``
    (``OrderVersionMismatch`` when the order is not at one of ``expected_versions``); on the
    saga's, a settled order is returned unchanged: the message was late or repeated."""
    with transaction.atomic(using=DB):
        orders = Order.objects.using(DB).select_for_update()
        if customer_id is not None:
            orders = orders.filter(customer_id=customer_id)
        order = orders.filter(id=order_id).first()
        if order is None:
            return None
        if expected_versions is not None and order.version not in expected_versions:
            expected = " or ".join(map(str, sorted(expected_versions))) or "a version it never had"
            raise OrderVersionMismatch(f"The order is at version {order.version}, not {expected}.")
        if order.status not in allowed_from:
            if customer_id is None:
                return order  # a late or repeated message about a settled order: nothing to do
            raise OrderConflict(f"An order that is {order.status} cannot become {to}.")
        order.status, order.reason = to, reason
        order.version += 1
        order.save(using=DB)
        order_snapshot_record(order=order, event=event)
    return order


def order_get_locked(*, order_id: UUID) -> Order:
    """The order, locked for the caller's transaction (the saga moves it on)."""
    return Order.objects.using(DB).select_for_update().get(id=order_id)


def order_confirm(*, order_id: UUID) -> Order | None:
    """Stock is held and paid for: PENDING -> CONFIRMED; emits ``orders.order_confirmed``.
    Called by the saga. An order cancelled meanwhile stays cancelled."""
    S = Order.Status
    return order_transition(order_id, to=S.CONFIRMED, allowed_from={S.PENDING}, event=contracts.OrderConfirmed)


def order_reject(*, order_id: UUID, reason: str) -> Order | None:
    """The order cannot be filled (no stock, payment declined or timed out): PENDING ->
    REJECTED with a reason the customer sees; emits ``orders.order_rejected``. Called by
    the saga once whatever was held has been given back."""
    S = Order.Status
    return order_transition(order_id, to=S.REJECTED, allowed_from={S.PENDING}, reason=reason,
                            event=contracts.OrderRejected)
