"""Projections: each applies one message, or a consumer's run of them, to its read rows in
one transaction, records a change-log entry for every row it changed (pushed after
commit), and is idempotent.

Read models converge (invariant 6): the result depends on which messages were applied,
never on the order they arrived in. Snapshots and state documents are kept only if newer
than what a row shows (their aggregate version); timeline steps are kept once per message
and sorted by time; counters move only with the statuses they count.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from uuid import UUID

from django.db import IntegrityError, models, transaction
from django.utils import timezone

from waybill.api import replaying

from . import selectors
from .documents import catalog_item_document, order_document, stock_item_document
from .live import changelog
from .models import (
    CatalogItem, Dashboard, DashboardDelta, OrderStatusCount, OrderSummary, OrderThroughput, OutboxGauge, ProcessGauge,
    SaleLine,
)

DB = "readmodels"

# Timeline steps, in the order they happen when two share a timestamp.
STEP_RANK = {
    "placed": 0, "stock_reserved": 1, "stock_rejected": 1, "payment_charged": 2, "payment_declined": 2,
    "confirmed": 3, "rejected": 3, "cancelled": 4, "stock_released": 5, "payment_refunded": 6,
}
# A step's ``status``: how it went.
OK, FAILED, SKIPPED = "ok", "failed", "skipped"
# The order outcomes counted per minute on the dashboard.
THROUGHPUT_EVENTS = ("placed", "confirmed", "rejected", "cancelled")
DASHBOARD_KEY = "dashboard"
DASHBOARD_MIN_SECONDS = 1.0  # the dashboard is pushed at most this often
THROUGHPUT_KEEP = timedelta(hours=2)


def _apply_if_newer(model: type[models.Model], *, key: dict, version: int, values: dict) -> bool:
    """Write ``values`` at ``version`` unless the row already has that version or a later one.

    A conditional UPDATE, then an INSERT if there was no row: when two projectors race for
    a new row (two workers, PostgreSQL), the loser's INSERT fails and it retries the
    conditional UPDATE, so an older version can never overwrite a newer one."""
    rows = model.objects.using(DB)
    if any(field.name == "updated_at" for field in model._meta.fields):
        values = {**values, "updated_at": timezone.now()}  # update() skips auto_now
    for _ in range(2):
        if rows.filter(**key, version__lt=version).update(version=version, **values):
            return True
        if rows.filter(**key).exists():
            return False  # already at this version or newer
        try:
            with transaction.atomic(using=DB):
                rows.create(**key, version=version, **values)
            return True
        except IntegrityError:
            continue  # another projector created it meanwhile: compare versions again
    return False


# --- the order document -----------------------------------------------------------------

@dataclass(frozen=True)
class OrderState:
    """Orders' snapshot of the order, as carried by each of its events."""

    customer_id: int
    status: str
    reason: str
    lines: list[dict]  # [{sku, name, quantity, unit_price}]
    total: Decimal
    currency: str  # ISO 4217, of the total and every unit price
    order_version: int


@dataclass(frozen=True)
class OrderStep:
    """What one message about an order adds to its document: a step of its timeline and,
    from orders' own events, the order's snapshot."""

    order_id: UUID
    message_id: UUID
    occurred_at: datetime
    step: str
    status: str  # how the step went: OK, FAILED or SKIPPED
    reason: str = ""
    state: OrderState | None = None

    def __post_init__(self) -> None:
        if self.step not in STEP_RANK:
            raise ValueError(f"unknown timeline step {self.step!r}")


def order_step_project(
    *, order_id: UUID, message_id: UUID, occurred_at: datetime, step: str, step_status: str,
    reason: str = "", state: OrderState | None = None,
) -> bool:
    """Apply one message about an order (``order_steps_project`` for one step); False
    when it was applied before."""
    return order_steps_project([OrderStep(order_id=order_id, message_id=message_id, occurred_at=occurred_at,
                                          step=step, status=step_status, reason=reason, state=state)])[0]


def order_steps_project(steps: list[OrderStep]) -> list[bool]:
    """Apply messages about orders, in turn: add each one's step to its order's timeline
    and, if it carries a snapshot newer than the one shown, take that snapshot. Each
    order's row is read, written and recorded once however many of ``steps`` it has (a
    batch of the history holds many per order), in a few statements for them all.

    Invariants: each message is applied once (a repeat, here or before, is False and
    changes nothing); the timeline is sorted by (time, step), so any arrival order gives
    the same document; the document's ``version`` grows by one per applied message; status
    counts and throughput move in the same transaction (as ``DashboardDelta`` rows).
    Records an ``order`` change on the customer's stream, once the customer is known (a
    message from inventory may arrive before orders' first)."""
    with transaction.atomic(using=DB):
        rows = _order_rows_locked({step.order_id for step in steps})
        applied, deltas, changed = [], [], {}
        for step in steps:
            row = rows[step.order_id]
            step_deltas = _step_apply(row, step)
            applied.append(step_deltas is not None)
            if step_deltas is not None:
                deltas.extend(step_deltas)
                changed[row.order_id] = row
        if deltas:
            DashboardDelta.objects.using(DB).bulk_create(deltas)
        now = timezone.now()
        for row in changed.values():
            row.updated_at = now  # bulk_update skips auto_now
        OrderSummary.objects.using(DB).bulk_update(changed.values(), _ORDER_FIELDS)
        # A replay records no change (the change log says so too): asked here as well, so
        # that it does not build a document, a catalog query per order, only to drop it.
        for order_id, row in changed.items():
            if row.customer_id is not None and not replaying():
                changelog.change_record(stream=changelog.customer_stream(row.customer_id), kind="order",
                                        key=str(order_id), version=row.version, document=order_document(row))
    return applied


# What a step may change on an order's row.
_ORDER_FIELDS = ["customer_id", "status", "reason", "lines", "total", "currency", "order_version", "version", "placed_at",
                 "timeline", "updated_at"]


def _step_apply(row: OrderSummary, step: OrderStep) -> list[DashboardDelta] | None:
    """``step`` applied to ``row`` in memory: the counter deltas it moves, None if the
    row has its message already."""
    message_id = str(step.message_id)
    if any(entry["message_id"] == message_id for entry in row.timeline):
        return None
    at = step.occurred_at.astimezone(UTC)
    entry = {"step": step.step, "status": step.status, "at": at.isoformat(), "reason": step.reason,
             "message_id": message_id}
    row.timeline = sorted([*row.timeline, entry], key=_timeline_order)
    if step.step == "placed":
        row.placed_at = min(row.placed_at, at) if row.placed_at else at
    deltas = []
    state = step.state
    if state is not None and state.order_version > row.order_version:
        if state.status != row.status:
            if row.status:
                deltas.append(DashboardDelta(status=row.status, delta=-1))
            deltas.append(DashboardDelta(status=state.status, delta=1))
        row.customer_id, row.status, row.reason = state.customer_id, state.status, state.reason
        row.lines, row.total, row.currency, row.order_version = state.lines, state.total, state.currency, \
            state.order_version
    if step.step in THROUGHPUT_EVENTS:
        deltas.append(DashboardDelta(event=step.step, minute=at.replace(second=0, microsecond=0)))
    row.version += 1
    return deltas


def _order_rows_locked(order_ids: set[UUID]) -> dict[UUID, OrderSummary]:
    """The orders' rows, locked until the transaction ends: the existing ones in id order
    (as another projector locks them), then the missing ones, created empty (and so locked),
    in id order too."""
    rows = OrderSummary.objects.using(DB)
    for _ in range(2):
        found = {row.order_id: row for row in
                 rows.select_for_update().filter(order_id__in=order_ids).order_by("order_id")}
        missing = [OrderSummary(order_id=order_id) for order_id in sorted(order_ids - found.keys())]
        if not missing:
            return found
        try:
            with transaction.atomic(using=DB):
                rows.bulk_create(missing)
        except IntegrityError:
            continue  # another projector created one meanwhile: lock theirs
        return {**found, **{row.order_id: row for row in missing}}
    raise RuntimeError(f"could not lock the documents of orders {sorted(order_ids)}")


def _timeline_order(entry: dict) -> tuple:
    # The message id breaks ties, so equal times sort the same in every rebuild.
    return entry["at"], STEP_RANK[entry["step"]], entry["message_id"]


# --- sales per product per day ----------------------------------------------------------

CONFIRMED = "CONFIRMED"


@dataclass(frozen=True)
class OrderSale:
    """What an order's snapshot says of its sales: its lines, and whether it is confirmed."""

    order_id: UUID
    order_version: int
    status: str
    occurred_at: datetime
    lines: list[dict]  # [{sku, quantity, unit_price}]
    currency: str


def sales_project(orders: list[OrderSale]) -> int:
    """Keep each order's lines as its newest snapshot says: sold, on the day it was
    confirmed, while it is CONFIRMED; not sold otherwise. Version-gated per order, so any
    arrival order and any repeat give the same rows. Returns the lines it wrote."""
    newest: dict[UUID, OrderSale] = {}
    for order in orders:
        if order.order_id not in newest or order.order_version > newest[order.order_id].order_version:
            newest[order.order_id] = order
    with transaction.atomic(using=DB):
        rows = SaleLine.objects.using(DB)
        existing = {(row.order_id, row.sku): row for row in rows.select_for_update().filter(order_id__in=newest)}
        created, updated = [], []
        for order in newest.values():
            sold = order.status == CONFIRMED
            for line in order.lines:
                values = {"order_version": order.order_version, "sold": sold,
                          "day": order.occurred_at.astimezone(UTC).date() if sold else None,
                          "quantity": line["quantity"], "revenue": Decimal(line["unit_price"]) * line["quantity"],
                          "currency": order.currency}
                row = existing.get((order.order_id, line["sku"]))
                if row is None:
                    created.append(SaleLine(order_id=order.order_id, sku=line["sku"], **values))
                elif row.order_version < order.order_version:
                    for field, value in values.items():
                        setattr(row, field, value)
                    updated.append(row)
        rows.bulk_create(created)
        rows.bulk_update(updated, ["order_version", "sold", "day", "quantity", "revenue", "currency"])
    return len(created) + len(updated)


# --- catalog and stock board ------------------------------------------------------------

@dataclass(frozen=True)
class ProductState:
    """Inventory's state document of a product, at the product's ``version``."""

    sku: str
    name: str
    price: Decimal
    on_hand: int
    reserved: int
    available: int
    version: int


def catalog_item_project(
    *, sku: str, name: str, price: Decimal, on_hand: int, reserved: int, available: int, version: int,
) -> bool:
    """Apply a product's state document at ``version``; False when the catalog already has
    it or newer (``catalog_items_project`` for one document)."""
    return bool(catalog_items_project([ProductState(sku=sku, name=name, price=price, on_hand=on_hand,
                                                    reserved=reserved, available=available, version=version)]))


def catalog_items_project(documents: list[ProductState]) -> int:
    """Apply products' state documents: of several for one product only the newest, since
    each is the product's whole state. Records a ``catalog_item`` change on the catalog
    stream and a ``stock_item`` change on the staff stock board's stream for each product
    it moved; returns how many it moved."""
    newest: dict[str, ProductState] = {}
    for document in documents:
        if document.sku not in newest or document.version > newest[document.sku].version:
            newest[document.sku] = document
    with transaction.atomic(using=DB):
        moved = [sku for sku, document in sorted(newest.items()) if _apply_if_newer(
            CatalogItem, key={"sku": sku}, version=document.version,
            values={"name": document.name, "price": document.price, "on_hand": document.on_hand,
                    "reserved": document.reserved, "available": document.available})]
        # Read back, so the documents show what the rows hold (a price as stored); not in a
        # replay, which records no change (see order_steps_project).
        for item in () if replaying() else CatalogItem.objects.using(DB).filter(sku__in=moved).order_by("sku"):
            changelog.change_record(stream=changelog.CATALOG, kind="catalog_item", key=item.sku, version=item.version,
                                    document=catalog_item_document(item))
            changelog.change_record(stream=changelog.STOCK, kind="stock_item", key=item.sku, version=item.version,
                                    document=stock_item_document(item))
    return len(moved)


# --- operations dashboard ---------------------------------------------------------------

def outbox_gauge_project(
    *, context: str, pending: int, oldest_pending_age_s: float | None, parked: int, dead_letters: int,
    measured_at: datetime, version: int,
) -> bool:
    """Keep a context's newest outbox report; marks the dashboard changed (pushed by
    ``dashboard_publish``, not here: reports and orders would push it far too often)."""
    return _gauge_project(OutboxGauge, context=context, version=version, values={
        "pending": pending, "oldest_pending_age_s": oldest_pending_age_s, "parked": parked,
        "dead_letters": dead_letters, "measured_at": measured_at})


def process_gauge_project(*, context: str, crashing: dict[str, str], measured_at: datetime, version: int) -> bool:
    """Keep a context's newest word on its crashing processes; marks the dashboard changed."""
    return _gauge_project(ProcessGauge, context=context, version=version,
                          values={"crashing": crashing, "measured_at": measured_at})


def _gauge_project(model: type[models.Model], *, context: str, version: int, values: dict) -> bool:
    with transaction.atomic(using=DB):
        applied = _apply_if_newer(model, key={"context": context}, version=version, values=values)
        if applied:
            _dashboard_row()
            Dashboard.objects.using(DB).filter(key=DASHBOARD_KEY).update(dirty=True)
    return applied


def dashboard_publish(*, now: datetime | None = None, force: bool = False) -> bool:
    """Fold the counter deltas recorded since the last call into the totals and, when
    anything changed, record the dashboard document as a new version on the dashboard
    stream. At most once per ``DASHBOARD_MIN_SECONDS`` unless ``force``; safe in several
    processes (the dashboard row is locked while folding). Runs as readmodels' periodic
    job; returns whether it recorded a change."""
    now = now or timezone.now()
    if not force and not _dashboard_due(now):
        return False  # decided without a transaction: on SQLite a locking one is a write lock
    with transaction.atomic(using=DB):
        _dashboard_row()
        dashboard = Dashboard.objects.using(DB).select_for_update().get(key=DASHBOARD_KEY)
        if not force and dashboard.built_at and (now - dashboard.built_at).total_seconds() < DASHBOARD_MIN_SECONDS:
            return False
        deltas = list(DashboardDelta.objects.using(DB).order_by("id")[:5000])
        if not deltas and not dashboard.dirty:
            return False
        _fold(deltas)
        OrderThroughput.objects.using(DB).filter(minute__lt=now - THROUGHPUT_KEEP).delete()
        dashboard.version += 1
        dashboard.dirty = False
        dashboard.built_at = now
        dashboard.save(using=DB)
        changelog.change_record(stream=changelog.DASHBOARD, kind="dashboard", key=DASHBOARD_KEY,
                              version=dashboard.version,
                              document=selectors.dashboard_document(version=dashboard.version, now=now))
    return True


def _dashboard_due(now: datetime) -> bool:
    """A plain read: is there anything to fold, and is the last build old enough?"""
    dashboard = Dashboard.objects.using(DB).filter(key=DASHBOARD_KEY).values("dirty", "built_at").first()
    if dashboard and dashboard["built_at"] and (now - dashboard["built_at"]).total_seconds() < DASHBOARD_MIN_SECONDS:
        return False
    return bool(dashboard and dashboard["dirty"]) or DashboardDelta.objects.using(DB).exists()


def _dashboard_row() -> None:
    Dashboard.objects.using(DB).get_or_create(key=DASHBOARD_KEY)


def _fold(deltas: list[DashboardDelta]) -> None:
    by_status: Counter[str] = Counter()
    by_minute: defaultdict[datetime, Counter[str]] = defaultdict(Counter)
    for delta in deltas:
        if delta.status:
            by_status[delta.status] += delta.delta
        if delta.event:
            by_minute[delta.minute][delta.event] += 1
    counts = OrderStatusCount.objects.using(DB)
    for status, change in by_status.items():
        if change and not counts.filter(status=status).update(count=models.F("count") + change):
            counts.create(status=status, count=change)
    # A status nobody is in has no row (readers are shown none), so the counts are the same
    # rows however the deltas were cut into folds: a rebuild folds them all at once.
    counts.filter(status__in=list(by_status), count=0).delete()
    minutes = OrderThroughput.objects.using(DB)
    for minute, events in by_minute.items():
        increments = {event: models.F(event) + n for event, n in events.items()}
        if not minutes.filter(minute=minute).update(**increments):
            minutes.create(minute=minute, **events)
    DashboardDelta.objects.using(DB).filter(id__in=[delta.id for delta in deltas]).delete()
