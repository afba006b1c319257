"""The stock ledger (``models.StockEntry``): a product's stock is event-sourced. Every change
is an entry appended with the version its writer expects the product to be at, and the
product row, the ledger's inline projection, moves in the same transaction, so that
reservations keep their atomic no-oversell guarantee (the row's conditional update and its
check constraint) and readers read one row, not a fold.

Why by hand: the maintained Python event stores (eventsourcing, for one) keep their own
tables and their own notion of an aggregate, and would take the product row, which the
reservations lock and update atomically with the reservation itself, out of the
transaction. What is needed is small: an append with an expected version, a fold, and
snapshots."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from uuid import UUID

from django.db import transaction
from django.db.models import F, Max, Sum

from .models import Product, StockEntry, StockSnapshot

DB = "inventory"
# A snapshot of a product's stock once it has moved this many versions past its last one.
SNAPSHOT_EVERY = 50
Kind = StockEntry.Kind


class ConcurrencyConflict(Exception):
    """The product is no longer at the version its writer read: read again and retry."""


@dataclass(frozen=True)
class Stock:
    on_hand: int
    reserved: int
    version: int


@dataclass(frozen=True)
class Change:
    """One entry to append to ``sku``'s ledger: what it does to on hand and reserved."""

    sku: str
    kind: str
    on_hand_delta: int = 0
    reserved_delta: int = 0
    order_id: UUID | None = None


def append(product: Product, change: Change, *, expected_version: int) -> Product:
    """Append ``change`` to the product's ledger at ``expected_version + 1`` and move the
    product row with it, inside the caller's transaction. Raises ``ConcurrencyConflict`` if
    the row is not at ``expected_version`` any more (another writer appended first), and
    the database refuses a change that would reserve more than is on hand (an
    IntegrityError of the row's check constraint). ``product`` is updated in place."""
    moved = Product.objects.using(DB).filter(pk=product.pk, version=expected_version).update(
        on_hand=F("on_hand") + change.on_hand_delta, reserved=F("reserved") + change.reserved_delta,
        version=expected_version + 1)
    if not moved:
        raise ConcurrencyConflict(f"{product.sku} moved past version {expected_version}")
    product.on_hand += change.on_hand_delta
    product.reserved += change.reserved_delta
    product.version = expected_version + 1
    record([(change, product.version)], states={product.sku: product})
    return product


def record(entries: Iterable[tuple[Change, int]], *, states: dict[str, Product]) -> None:
    """Write ``entries`` (a change and the version it takes the product to) whose product
    rows the caller has moved under its lock, and the snapshots due: ``states`` holds each
    product as it is after its last entry here (for a snapshot at that version)."""
    rows = [StockEntry(sku=change.sku, version=version, kind=change.kind, on_hand_delta=change.on_hand_delta,
                       reserved_delta=change.reserved_delta, order_id=change.order_id) for change, version in entries]
    StockEntry.objects.using(DB).bulk_create(rows)  # (sku, version) is unique: a second writer fails here
    skus = sorted({row.sku for row in rows})
    last = dict(StockSnapshot.objects.using(DB).filter(sku__in=skus).values("sku").annotate(
        version=Max("version")).values_list("sku", "version"))
    # Due once a product has crossed a multiple of SNAPSHOT_EVERY since its last snapshot
    # (versions skip: a name or price change takes one without an entry); taken at the
    # version it is at now, whose state the caller holds.
    StockSnapshot.objects.using(DB).bulk_create(
        StockSnapshot(sku=sku, version=states[sku].version, on_hand=states[sku].on_hand, reserved=states[sku].reserved)
        for sku in skus if states[sku].version // SNAPSHOT_EVERY > last.get(sku, 0) // SNAPSHOT_EVERY)


def opened(product: Product, kind: str = Kind.RECEIVED) -> None:
    """A new product's first entry: its stock at its first version."""
    record([(Change(product.sku, kind, on_hand_delta=product.on_hand, reserved_delta=product.reserved),
             product.version)], states={product.sku: product})


def fold(sku: str, *, from_snapshot: bool = True, up_to: int | None = None) -> Stock:
    """The product's stock as its ledger says: from its last snapshot (at or before
    ``up_to``) plus the entries after it, or from its first entry."""
    entries = StockEntry.objects.using(DB).filter(sku=sku)
    snapshots = StockSnapshot.objects.using(DB).filter(sku=sku)
    if up_to is not None:
        entries, snapshots = entries.filter(version__lte=up_to), snapshots.filter(version__lte=up_to)
    start = Stock(0, 0, 0)
    if from_snapshot and (snapshot := snapshots.order_by("-version").first()) is not None:
        start = Stock(snapshot.on_hand, snapshot.reserved, snapshot.version)
    tail = entries.filter(version__gt=start.version).aggregate(
        on_hand=Sum("on_hand_delta", default=0), reserved=Sum("reserved_delta", default=0))
    last = entries.order_by("-version").values_list("version", flat=True).first() or start.version
    return Stock(start.on_hand + tail["on_hand"], start.reserved + tail["reserved"], last)


def fold_check() -> list[str]:
    """Every product's row against its ledger folded from the first entry, and against its
    last snapshot plus the entries after it: what differs (nothing, when all is well)."""
    problems = []
    with transaction.atomic(using=DB):
        connection = transaction.get_connection(DB)
        if connection.vendor == "postgresql":
            # One view of rows and ledger for the whole check, so that a reservation that
            # commits meanwhile is no false alarm (READ COMMITTED would see it halfway).
            with connection.cursor() as cursor:
                cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        for product in Product.objects.using(DB).order_by("sku"):
            full = fold(product.sku, from_snapshot=False)
            if (full.on_hand, full.reserved) != (product.on_hand, product.reserved):
                problems.append(f"{product.sku}: the row says {product.on_hand} on hand, {product.reserved} reserved; "
                                f"its ledger folds to {full.on_hand}, {full.reserved} (v{full.version})")
            if fold(product.sku) != full:
                problems.append(f"{product.sku}: its last snapshot plus the entries after it differ from the full fold")
    return problems


def entries_of(sku: str, *, limit: int = 200) -> list[StockEntry]:
    """The product's latest entries, newest first (the staff stock board shows them)."""
    return list(StockEntry.objects.using(DB).filter(sku=sku).order_by("-version")[:limit])
