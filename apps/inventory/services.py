"""Every change to stock. Each service is one transaction on the inventory database and
records its messages through the outbox inside it."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from decimal import Decimal
from uuid import UUID

from django.db import transaction

from waybill.api import Message, outbox_record

from . import contracts, ledger
from .models import Product, Reservation

DB = "inventory"
# How often a reservation reads a product again when another writer appended to its
# ledger between its read and its append (ledger.ConcurrencyConflict).
APPEND_ATTEMPTS = 20
log = logging.getLogger(__name__)


class StockError(ValueError):
    """A stock change the rules refuse; the message is fit to show the caller."""


def _product_publish(product: Product, *, listing_changed: bool = False) -> None:
    """Record the product's state document, and its listing document too when its name
    or price changed (or it is new)."""
    if listing_changed:
        outbox_record(
            context="inventory",
            message=contracts.ProductListed(sku=product.sku, name=product.name, price=product.price),
            aggregate_id=product.sku,
            aggregate_version=product.version,
        )
    outbox_record(
        context="inventory",
        message=contracts.ProductUpdated(
            sku=product.sku, name=product.name, price=product.price, on_hand=product.on_hand,
            reserved=product.reserved, available=product.available,
        ),
        aggregate_id=product.sku,
        aggregate_version=product.version,
    )


def product_create(*, sku: str, name: str, price: Decimal, on_hand: int) -> Product:
    """Create a product. Emits ``inventory.product_listed`` and ``inventory.product_updated``
    (state documents)."""
    with transaction.atomic(using=DB):
        if Product.objects.using(DB).filter(sku=sku).exists():
            raise StockError(f"A product with SKU {sku} already exists.")
        product = Product.objects.using(DB).create(sku=sku, name=name, price=price, on_hand=on_hand)
        ledger.opened(product)
        _product_publish(product, listing_changed=True)
    return product


def product_update(
    *, sku: str, on_hand: int | None = None, name: str | None = None, price: Decimal | None = None
) -> Product:
    """Staff change stock, name or price. ``on_hand`` may not drop below what is reserved.
    Emits ``inventory.product_updated``, and ``inventory.product_listed`` when the name or
    price changed."""
    with transaction.atomic(using=DB):
        product = Product.objects.using(DB).select_for_update().get(sku=sku)
        listing = (product.name, product.price)
        if on_hand is not None and on_hand < product.reserved:
            raise StockError(f"on_hand cannot go below the {product.reserved} units reserved for open orders.")
        product.name = name if name is not None else product.name
        product.price = price if price is not None else product.price
        if on_hand is not None and on_hand != product.on_hand:
            # Stock moves through its ledger (one version for the whole change); the row is locked.
            ledger.append(product, ledger.Change(sku, ledger.Kind.ADJUSTED, on_hand_delta=on_hand - product.on_hand),
                          expected_version=product.version)
            Product.objects.using(DB).filter(pk=product.pk).update(name=product.name, price=product.price)
        else:
            product.version += 1
            product.save(using=DB)
        _product_publish(product, listing_changed=(product.name, product.price) != listing)
    return product


def stock_reserve(*, order_id: UUID, lines: list[contracts.StockLine]) -> Reservation:
    """Hold every line of an order, or none of them.

    Each line is an atomic conditional UPDATE (``on_hand >= reserved + quantity``), so
    however many orders race for the last unit, exactly one gets it. Idempotent per
    order. Emits ``inventory.stock_reserved`` plus ``inventory.product_updated`` per
    product, or ``inventory.stock_reservation_rejected``."""
    with transaction.atomic(using=DB):
        existing = Reservation.objects.using(DB).filter(order_id=order_id).first()
        if existing is not None:
            return existing  # already decided, or cancelled before it arrived
        try:
            with transaction.atomic(using=DB):  # savepoint: a refused line undoes the others
                products = _reserve_lines(order_id, lines)
        except StockError as refused:
            reservation = Reservation.objects.using(DB).create(
                order_id=order_id, status=Reservation.Status.REJECTED, reason=str(refused),
            )
            outbox_record(
                context="inventory",
                message=contracts.StockReservationRejected(order_id=order_id, reason=str(refused)),
                aggregate_id=str(order_id),
                aggregate_version=reservation.version,
            )
            return reservation
        reservation = Reservation.objects.using(DB).create(
            order_id=order_id,
            status=Reservation.Status.RESERVED,
            lines=[line.model_dump() for line in lines],
        )
        outbox_record(
            context="inventory",
            message=contracts.StockReserved(order_id=order_id, lines=lines),
            aggregate_id=str(order_id),
            aggregate_version=reservation.version,
        )
        for product in products:
            _product_publish(product)
    return reservation


def _reserve_lines(order_id: UUID, lines: list[contracts.StockLine]) -> list[Product]:
    # Sorted by SKU so two orders touching the same products lock them in the same
    # order on PostgreSQL and cannot deadlock.
    for line in sorted(lines, key=lambda line: line.sku):
        change = ledger.Change(line.sku, ledger.Kind.RESERVED, reserved_delta=line.quantity, order_id=order_id)
        for _ in range(APPEND_ATTEMPTS):
            product = Product.objects.using(DB).filter(sku=line.sku).first()
            if product is None:
                raise _unknown_sku(line)
            if product.available < line.quantity:
                raise _not_enough(line, available=product.available)
            try:
                # Decided on the version read; the row moves only from that version.
                ledger.append(product, change, expected_version=product.version)
                break
            except ledger.ConcurrencyConflict:
                log.info("stock of %s moved while reserving for %s: read again", line.sku, order_id)
        else:
            raise RuntimeError(f"stock of {line.sku} kept moving: {APPEND_ATTEMPTS} attempts to reserve it")
    return list(Product.objects.using(DB).filter(sku__in=[line.sku for line in lines]))


@dataclass(frozen=True)
class StockRequest:
    """One order's ``stock_reserve`` in ``stock_reserve_many``; ``on_behalf`` is entered
    while what answers it is recorded (the message that asked, for its correlation)."""

    order_id: UUID
    lines: list[contracts.StockLine]
    on_behalf: Callable[[], AbstractContextManager[None]] = contextlib.nullcontext


def stock_reserve_many(*, requests: list[StockRequest]) -> list[Reservation]:
    """``stock_reserve`` for each request in turn, with the same effects and messages, in
    a few statements for them all instead of a few per order (what a consumer's batch of
    ``inventory.reserve_stock`` cost was mostly statements): every product they name is
    locked at once, each order is decided in memory under those locks, and the new
    reservations and the products are each written in one statement.

    Its products are locked in SKU order, as ``stock_reserve``'s updates lock them; within
    a consumer's batch, locks that earlier messages took come first, so a deadlock stays
    possible, as with ``stock_reserve`` there: PostgreSQL detects it, the batch fails as a
    whole and its messages are applied one at a time. So does a duplicate order id (a
    concurrent reservation, or a cancellation's tombstone, written meanwhile): the run's
    savepoint rolls back and the consumer applies each message with ``stock_reserve``."""
    with transaction.atomic(using=DB):
        decided = {r.order_id: r for r in Reservation.objects.using(DB).filter(
            order_id__in=[request.order_id for request in requests])}
        skus = sorted({line.sku for request in requests for line in request.lines})
        products = {p.sku: p for p in Product.objects.using(DB).select_for_update().filter(sku__in=skus).order_by("sku")}
        changed: dict[str, StockRequest] = {}  # sku -> the last request that held some of it
        entries: list[tuple[ledger.Change, int]] = []  # the ledger's, at the versions they take
        created: list[Reservation] = []
        answers: list[tuple[StockRequest, Message, Reservation]] = []
        for request in requests:
            if request.order_id in decided:
                continue  # already decided, or cancelled before it arrived (or twice in this run)
            try:
                entries += _hold(products, request)
            except StockError as refused:
                reservation = Reservation(order_id=request.order_id, status=Reservation.Status.REJECTED,
                                          reason=str(refused))
                answer = contracts.StockReservationRejected(order_id=request.order_id, reason=str(refused))
            else:
                reservation = Reservation(order_id=request.order_id, status=Reservation.Status.RESERVED,
                                          lines=[line.model_dump() for line in request.lines])
                answer = contracts.StockReserved(order_id=request.order_id, lines=request.lines)
                changed.update((line.sku, request) for line in request.lines)
            decided[request.order_id] = reservation
            created.append(reservation)
            answers.append((request, answer, reservation))
        Reservation.objects.using(DB).bulk_create(created)
        Product.objects.using(DB).bulk_update([products[sku] for sku in sorted(changed)], ["reserved", "version"])
        ledger.record(entries, states=products)  # the rows are locked: at the versions they were read
        for request, answer, reservation in answers:
            with request.on_behalf():
                outbox_record(context="inventory", message=answer, aggregate_id=str(request.order_id),
                              aggregate_version=reservation.version)
        # A product's document once, at its last state: what the outbox would have kept of
        # one per reservation (outbox._latest_documents), caused by the last one.
        for sku, request in sorted(changed.items()):
            with request.on_behalf():
                _product_publish(products[sku])
    return [decided[request.order_id] for request in requests]


def _hold(products: dict[str, Product], request: StockRequest) -> list[tuple[ledger.Change, int]]:
    """``_reserve_lines`` in memory, on locked ``products``: all lines or none (and the
    same refusals, in the same SKU order); the ledger's entries, at the versions they take
    the products to."""
    held: dict[str, tuple[int, int]] = {}  # sku -> (reserved, version) if this order's lines pass
    entries = []
    for line in sorted(request.lines, key=lambda line: line.sku):
        product = products.get(line.sku)
        if product is None:
            raise _unknown_sku(line)
        reserved, version = held.get(line.sku, (product.reserved, product.version))
        if product.on_hand < reserved + line.quantity:
            raise _not_enough(line, available=product.on_hand - reserved)
        held[line.sku] = (reserved + line.quantity, version + 1)  # one appended entry per line
        entries.append((ledger.Change(line.sku, ledger.Kind.RESERVED, reserved_delta=line.quantity,
                                      order_id=request.order_id), version + 1))
    for sku, (reserved, version) in held.items():
        products[sku].reserved, products[sku].version = reserved, version
    return entries


# The refusals, worded once for both ways of reserving.
def _unknown_sku(line: contracts.StockLine) -> StockError:
    return StockError(f"Unknown SKU {line.sku}.")


def _not_enough(line: contracts.StockLine, *, available: int) -> StockError:
    return StockError(f"Not enough stock for {line.sku}: {line.quantity} requested, {available} available.")


def stock_release(*, order_id: UUID) -> Reservation:
    """Give an order's held stock back. Idempotent. If nothing was decided for the order
    yet, leaves a tombstone so a late reservation holds nothing. Always emits
    ``inventory.stock_released`` (with the lines given back, empty if none: whoever asked
    gets an answer), plus ``inventory.product_updated`` per product given back to."""
    with transaction.atomic(using=DB):
        reservation = Reservation.objects.using(DB).select_for_update().filter(order_id=order_id).first()
        lines: list[contracts.StockLine] = []
        if reservation is None:
            reservation = Reservation.objects.using(DB).create(order_id=order_id, status=Reservation.Status.CANCELLED)
        elif reservation.status == Reservation.Status.RESERVED:
            lines = [contracts.StockLine.model_validate(line) for line in reservation.lines]
            held = {product.sku: product for product in Product.objects.using(DB).select_for_update().filter(
                sku__in=[line.sku for line in lines]).order_by("sku")}
            for line in sorted(lines, key=lambda line: line.sku):
                product = held[line.sku]  # locked: at the version read
                ledger.append(product, ledger.Change(line.sku, ledger.Kind.RELEASED, reserved_delta=-line.quantity,
                                                     order_id=order_id), expected_version=product.version)
            reservation.status = Reservation.Status.RELEASED
        reservation.version += 1
        reservation.save(using=DB)
        outbox_record(
            context="inventory",
            message=contracts.StockReleased(order_id=order_id, lines=lines),
            aggregate_id=str(order_id),
            aggregate_version=reservation.version,
        )
        for product in Product.objects.using(DB).filter(sku__in=[line.sku for line in lines]):
            _product_publish(product)
    return reservation
