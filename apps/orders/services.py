"""Every change to orders. Each service is one transaction on the orders database and
records the order's snapshot event through the outbox inside it."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection
from dataclasses import dataclass
from decimal import Decimal
from uuid import UUID

from django.db import IntegrityError, transaction

from waybill.outbox import outbox_record

from . import contracts, saga
from .models import Order, OrderLine, ProductCopy

DB = "orders"


@dataclass(frozen=True)
class LineRequest:
    sku: str
    quantity: int


class OrderError(ValueError):
    """A request the order rules refuse; ``field`` names what was wrong, if anything."""

    def __init__(self, message: str, *, field: str | None = None):
        super().__init__(message)
        self.field = field


class OrderLinesRefused(OrderError):
    """Lines that name a product orders does not know, or one already named by an earlier
    line; ``reasons`` maps each refused line's index to why, in the customer's words."""

    def __init__(self, reasons: dict[int, str]):
        super().__init__(" ".join(f"lines[{index}].sku: {reason}" for index, reason in reasons.items()),
                         field="lines")
        self.reasons = reasons


class OrderConflict(OrderError):
    """The order is not in a state that allows this (e.g. cancelling a rejected order)."""


class OrderVersionMismatch(OrderConflict):
    """The caller acted on a version of the order that is no longer current."""


def _snapshot(order: Order, schema: type[contracts.OrderSnapshot]) -> contracts.OrderSnapshot:
    return schema(
        order_id=order.id,
        customer_id=order.customer_id,
        status=order.status,
        reason=order.reason,
        lines=[
            contracts.OrderLine(sku=line.sku, name=line.name, quantity=line.quantity, unit_price=line.unit_price)
            for line in order.lines.all()
        ],
        total=order.total,
    )


def _record(order: Order, schema: type[contracts.OrderSnapshot]) -> None:
    outbox_record(
        context="orders",
        message=_snapshot(order, schema),
        aggregate_id=str(order.id),
        aggregate_version=order.version,
    )


def _fingerprint(lines: list[LineRequest]) -> str:
    canonical = json.dumps(sorted((line.sku, line.quantity) for line in lines))
    return hashlib.sha256(canonical.encode()).hexdigest()


def order_place(
    *, customer_id: int, lines: list[LineRequest], idempotency_key: str = ""
) -> tuple[Order, bool]:
    """Store a PENDING order priced from our copy of the catalog and start its saga; emits
    ``orders.order_placed`` and the saga's first command, ``inventory.reserve_stock``.

    Returns ``(order, created)``. With an ``idempotency_key``, a retry of the same request
    returns the first order (``created`` False); the same key with other lines is refused.
    Lines naming an unknown SKU, or a SKU twice, are refused with ``OrderLinesRefused``."""
    fingerprint = _fingerprint(lines)
    if idempotency_key:
        existing = Order.objects.using(DB).filter(customer_id=customer_id, idempotency_key=idempotency_key).first()
        if existing is not None:
            return _idempotent_replay(existing, fingerprint), False
    products = {p.sku: p for p in ProductCopy.objects.using(DB).filter(sku__in=[line.sku for line in lines])}
    _lines_check(lines, products)
    try:
        with transaction.atomic(using=DB):
            order = Order.objects.using(DB).create(
                customer_id=customer_id,
                total=sum((products[line.sku].price * line.quantity for line in lines), Decimal("0")),
                idempotency_key=idempotency_key,
                request_fingerprint=fingerprint if idempotency_key else "",
            )
            OrderLine.objects.using(DB).bulk_create(
                OrderLine(order=order, sku=line.sku, name=products[line.sku].name,
                          quantity=line.quantity, unit_price=products[line.sku].price)
                for line in lines
            )
            _record(order, contracts.OrderPlaced)
            saga.saga_start(order=order)
    except IntegrityError:
        if not idempotency_key:
            raise
        # Two retries raced; the other one stored the order first.
        existing = Order.objects.using(DB).get(customer_id=customer_id, idempotency_key=idempotency_key)
        return _idempotent_replay(existing, fingerprint), False
    return order, True


def _lines_check(lines: list[LineRequest], products: dict[str, ProductCopy]) -> None:
    """The one place an order's SKUs are validated: every line names a product from our
    copy of the catalog, each product once. Refuses every bad line at once."""
    reasons: dict[int, str] = {}
    seen: set[str] = set()
    for index, line in enumerate(lines):
        if line.sku not in products:
            reasons[index] = f"Unknown SKU {line.sku}."
        elif line.sku in seen:
            reasons[index] = f"SKU {line.sku} appears twice; give one line per SKU."
        seen.add(line.sku)
    if reasons:
        raise OrderLinesRefused(reasons)


def _idempotent_replay(order: Order, fingerprint: str) -> Order:
    if order.request_fingerprint != fingerprint:
        raise OrderConflict("This Idempotency-Key was already used for a different order.")
    return order


def _transition(order_id: UUID, *, to: str, allowed_from: set[str], reason: str = "",
                schema: type[contracts.OrderSnapshot], customer_id: int | None = None,
                expected_versions: Collection[int] | None = None) -> Order | None:
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
        _record(order, schema)
        if to == Order.Status.CANCELLED:
            saga.saga_on_order_cancelled(order_id=order.id)
    return order


def order_get_locked(*, order_id: UUID) -> Order:
    """The order, locked for the caller's transaction (the saga moves it on)."""
    return Order.objects.using(DB).select_for_update().get(id=order_id)


def order_confirm(*, order_id: UUID) -> Order | None:
    """Stock is held and paid for: PENDING -> CONFIRMED; emits ``orders.order_confirmed``.
    Called by the saga. An order cancelled meanwhile stays cancelled."""
    S = Order.Status
    return _transition(order_id, to=S.CONFIRMED, allowed_from={S.PENDING}, schema=contracts.OrderConfirmed)


def order_reject(*, order_id: UUID, reason: str) -> Order | None:
    """The order cannot be filled (no stock, payment declined or timed out): PENDING ->
    REJECTED with a reason the customer sees; emits ``orders.order_rejected``. Called by
    the saga once whatever was held has been given back."""
    S = Order.Status
    return _transition(order_id, to=S.REJECTED, allowed_from={S.PENDING}, reason=reason,
                       schema=contracts.OrderRejected)


def order_cancel(*, order_id: UUID, customer_id: int, expected_versions: Collection[int] | None = None) -> Order | None:
    """The customer cancels a PENDING or CONFIRMED order; emits ``orders.order_cancelled``,
    on which inventory releases the stock and the payments consumer refunds the charge
    (choreography), and the saga stops waiting. Returns None if the customer has no such order;
    raises ``OrderVersionMismatch`` if the order's version is not one of ``expected_versions``
    (``None``: any will do) and ``OrderConflict`` if the order is already settled."""
    S = Order.Status
    with transaction.atomic(using=DB):
        # The saga's row first, then the order's: the order in which the saga's own
        # handlers lock them, so a cancellation racing a saga step cannot deadlock.
        saga.saga_lock(order_id=order_id)
        return _transition(order_id, to=S.CANCELLED, allowed_from={S.PENDING, S.CONFIRMED},
                           reason="Cancelled by the customer.", schema=contracts.OrderCancelled,
                           customer_id=customer_id, expected_versions=expected_versions)


def product_copy_apply(*, sku: str, name: str, price: Decimal, version: int) -> None:
    """Keep our copy of a product current; an older state document never overwrites a newer one."""
    with transaction.atomic(using=DB):
        copy = ProductCopy.objects.using(DB).select_for_update().filter(sku=sku).first()
        if copy is None:
            ProductCopy.objects.using(DB).create(sku=sku, name=name, price=price, version=version)
        elif version > copy.version:
            copy.name, copy.price, copy.version = name, price, version
            copy.save(using=DB)
