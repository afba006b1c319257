"""Every change a customer or inventory asks of orders: placing and cancelling an order,
keeping our copy of the catalog. Each service is one transaction on the orders database and
records the order's snapshot event through the outbox inside it. The moves the saga makes
(confirm, reject) are in ``transitions.py``, which both use."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection
from dataclasses import dataclass
from decimal import Decimal
from uuid import UUID

from django.conf import settings
from django.db import IntegrityError, transaction

from . import contracts, saga
from .models import Order, OrderLine, ProductCopy
# The errors belong to the transitions, which raise them too; callers catch them here.
from .transitions import OrderConflict, OrderError, OrderVersionMismatch  # noqa: F401
from .transitions import order_snapshot_record, order_transition

DB = "orders"


@dataclass(frozen=True)
class LineRequest:
    sku: str
    quantity: int


class OrderLinesRefused(OrderError):
    """Lines that name a product orders does not know, or one already named by an earlier
    line; ``reasons`` maps each refused line's index to why, in the customer's words."""

    def __init__(self, reasons: dict[int, str]):
        super().__init__(" ".join(f"lines[{index}].sku: {reason}" for index, reason in reasons.items()),
                         field="lines")
        self.reasons = reasons


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
                currency=settings.WAYBILL_CURRENCY,
                idempotency_key=idempotency_key,
                request_fingerprint=fingerprint if idempotency_key else "",
            )
            OrderLine.objects.using(DB).bulk_create(
                OrderLine(order=order, sku=line.sku, name=products[line.sku].name,
                          quantity=line.quantity, unit_price=products[line.sku].price)
                for line in lines
            )
            order_snapshot_record(order=order, event=contracts.OrderPlaced)
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
        order = order_transition(order_id, to=S.CANCELLED, allowed_from={S.PENDING, S.CONFIRMED},
                                 reason="Cancelled by the customer.", event=contracts.OrderCancelled,
                                 customer_id=customer_id, expected_versions=expected_versions)
        # On the customer's behalf a refused move raises: an order returned was cancelled now.
        if order is not None:
            saga.saga_on_order_cancelled(order_id=order.id)
        return order


def product_copy_apply(*, sku: str, name: str, price: Decimal, version: int) -> None:
    """Keep our copy of a product current; an older state document never overwrites a newer one."""
    with transaction.atomic(using=DB):
        copy = ProductCopy.objects.using(DB).select_for_update().filter(sku=sku).first()
        if copy is None:
            ProductCopy.objects.using(DB).create(sku=sku, name=name, price=price, version=version)
        elif version > copy.version:
            copy.name, copy.price, copy.version = name, price, version
            copy.save(using=DB)
