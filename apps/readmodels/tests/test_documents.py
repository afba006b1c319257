"""The order document, its timeline, the stock board and the dashboard, fed with the
messages the other contexts publish (through the real handlers)."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from apps.inventory import contracts as inventory
from apps.orders import contracts as orders
from apps.readmodels import handlers, selectors, services
from apps.readmodels import models as rm
from apps.readmodels.documents import order_documents, stock_item_document
from apps.readmodels.live import changelog, streams
from waybill import contexts, opsreport
from waybill.consumer import ContextConsumer, Outcome
from waybill.wire import Received
from waybill.messages import Envelope

pytestmark = pytest.mark.django_db(transaction=True, databases=["readmodels"])

T0 = datetime(2026, 11, 26, 9, 30, 5, tzinfo=UTC)
CUSTOMER = 41


def _envelope(message, *, aggregate_id: str, version: int = 1, at: datetime = T0) -> Envelope:
    return Envelope(id=uuid.uuid4(), type=message.message_type, schema_version=message.schema_version,
                    aggregate_id=aggregate_id, aggregate_version=version, occurred_at=at,
                    correlation_id=uuid.uuid4(), payload=message.model_dump(mode="json"))


def _apply(item: tuple[Envelope, object]) -> None:
    envelope, message = item
    handlers.HANDLERS[type(message)](envelope, message)


def _product(sku: str, *, version: int, on_hand: int, reserved: int, at: datetime = T0, price="4.50"):
    message = inventory.ProductUpdated(sku=sku, name=f"Product {sku}", price=Decimal(price), on_hand=on_hand,
                                       reserved=reserved, available=on_hand - reserved)
    return _envelope(message, aggregate_id=sku, version=version, at=at), message


def _euros(amount: str) -> orders.Money:
    return orders.Money(amount=Decimal(amount), currency="EUR")


class History:
    """Messages about orders as the other contexts would publish them, oldest first."""

    def __init__(self):
        self.items: list[tuple[Envelope, object]] = []
        self.clock = T0

    def _tick(self) -> datetime:
        self.clock += timedelta(seconds=7)
        return self.clock

    def add(self, message, *, aggregate_id: str, version: int = 1):
        self.items.append((_envelope(message, aggregate_id=aggregate_id, version=version, at=self._tick()), message))

    def order_event(self, schema, order_id, *, status, version, sku="MUG-2", quantity=2, reason=""):
        message = schema(order_id=order_id, customer_id=CUSTOMER, status=status, reason=reason, total=_euros("9.00"),
                         lines=[orders.OrderLine(sku=sku, name="Mug", quantity=quantity, unit_price=_euros("4.50"))])
        self.add(message, aggregate_id=str(order_id), version=version)

    def stock(self, schema, order_id, **fields):
        self.add(schema(order_id=order_id, **fields), aggregate_id=str(order_id))

    def payment(self, schema, order_id, **fields):
        self.add(schema(order_id=order_id, **fields), aggregate_id=str(order_id))


def _shop_history() -> tuple[History, dict[str, uuid.UUID]]:
    """Four orders: confirmed, rejected for stock, confirmed then cancelled, declined."""
    ids = {name: uuid.uuid4() for name in ("confirmed", "no_stock", "cancelled", "declined")}
    line = [inventory.StockLine(sku="MUG-2", quantity=2)]
    h = History()
    h.items.append(_product("MUG-2", version=1, on_hand=10, reserved=0))
    o = ids["confirmed"]
    h.order_event(orders.OrderPlaced, o, status="PENDING", version=1)
    h.stock(inventory.StockReserved, o, lines=line)
    h.items.append(_product("MUG-2", version=2, on_hand=10, reserved=2, at=h.clock))
    h.payment(orders.PaymentCharged, o, charge_id="ch_1", amount=Decimal("9.00"))
    h.order_event(orders.OrderConfirmed, o, status="CONFIRMED", version=2)
    o = ids["no_stock"]
    h.order_event(orders.OrderPlaced, o, status="PENDING", version=1, sku="LAMP-1", quantity=5)
    h.stock(inventory.StockReservationRejected, o, reason="Not enough stock for LAMP-1.")
    h.order_event(orders.OrderRejected, o, status="REJECTED", version=2, sku="LAMP-1", quantity=5,
                  reason="Not enough stock for LAMP-1.")
    o = ids["cancelled"]
    h.order_event(orders.OrderPlaced, o, status="PENDING", version=1)
    h.stock(inventory.StockReserved, o, lines=line)
    h.items.append(_product("MUG-2", version=3, on_hand=10, reserved=4, at=h.clock))
    h.payment(orders.PaymentCharged, o, charge_id="ch_2", amount=Decimal("9.00"))
    h.order_event(orders.OrderConfirmed, o, status="CONFIRMED", version=2)
    h.order_event(orders.OrderCancelled, o, status="CANCELLED", version=3, reason="Changed my mind.")
    h.stock(inventory.StockReleased, o, lines=line)
    h.items.append(_product("MUG-2", version=4, on_hand=10, reserved=2, at=h.clock))
    h.payment(orders.PaymentRefunded, o, refund_id="re_2", refunded=True)
    o = ids["declined"]
    h.order_event(orders.OrderPlaced, o, status="PENDING", version=1)
    h.stock(inventory.StockReserved, o, lines=line)
    h.payment(orders.PaymentDeclined, o, reason="card declined")
    h.order_event(orders.OrderRejected, o, status="REJECTED", version=2, reason="Payment declined: card declined.")
    h.stock(inventory.StockReleased, o, lines=line)
    h.payment(orders.PaymentRefunded, o, refund_id="re_3", refunded=False)
    report = opsreport.OutboxMeasured(context="orders", pending=3, oldest_pending_age_s=1.5, parked=0,
                                      dead_letters=1, measured_at=h.clock)
    h.items.append((_envelope(report, aggregate_id="outbox.orders", version=1000, at=h.clock), report))
    processes = opsreport.ProcessesSupervised(context="orders", crashing={"orders-relay": "FATAL"}, measured_at=h.clock)
    h.items.append((_envelope(processes, aggregate_id="processes.orders", version=1000, at=h.clock), processes))
    return h, ids


def _wipe() -> None:
    for model in (rm.OrderSummary, rm.CatalogItem, rm.OrderStatusCount, rm.OrderThroughput, rm.DashboardDelta,
                  rm.OutboxGauge, rm.ProcessGauge, rm.Dashboard, rm.Change, rm.Stream):
        model.objects.all().delete()


def _applied_in_order_then_wiped(history: History, now: datetime) -> dict:
    """What a reader sees once ``history`` is applied message by message, in order; then
    the read side is emptied again, for the same history to be applied another way."""
    for item in history.items:
        _apply(item)
    state = _state(now)
    _wipe()
    return state


def _state(now: datetime) -> dict:
    """Everything a reader can see, minus wall-clock bookkeeping (updated_at) and the
    dashboard's own version (how often it was built, not what it says)."""
    services.dashboard_publish(force=True, now=now)
    documents = order_documents(rm.OrderSummary.objects.order_by("order_id"))
    for document in documents:
        document.pop("updated_at")
    dashboard = selectors.dashboard_document(now=now)
    dashboard.pop("version")
    return {"orders": documents, "stock": [stock_item_document(item) for item in selectors.catalog()],
            "dashboard": dashboard}


def test_the_timeline_has_every_step_in_time_order_with_reasons():
    history, ids = _shop_history()
    for item in history.items:
        _apply(item)
    cancelled = selectors.order_summary_for_customer(order_id=ids["cancelled"], customer_id=CUSTOMER)
    steps = [(s["step"], s["status"], s["reason"]) for s in cancelled.timeline]
    assert steps == [
        ("placed", "ok", ""), ("stock_reserved", "ok", ""), ("payment_charged", "ok", ""), ("confirmed", "ok", ""),
        ("cancelled", "ok", "Changed my mind."), ("stock_released", "ok", ""), ("payment_refunded", "ok", ""),
    ]
    assert [s["at"] for s in cancelled.timeline] == sorted(s["at"] for s in cancelled.timeline)
    assert (cancelled.status, cancelled.order_version, cancelled.version) == ("CANCELLED", 3, 7)
    declined = selectors.order_summary_for_customer(order_id=ids["declined"], customer_id=CUSTOMER)
    assert [(s["step"], s["status"]) for s in declined.timeline] == [
        ("placed", "ok"), ("stock_reserved", "ok"), ("payment_declined", "failed"), ("rejected", "failed"),
        ("stock_released", "ok"), ("payment_refunded", "skipped")]
    assert declined.timeline[2]["reason"] == "card declined"
    no_stock = selectors.order_summary_for_customer(order_id=ids["no_stock"], customer_id=CUSTOMER)
    assert [(s["step"], s["reason"]) for s in no_stock.timeline][1] == ("stock_rejected", "Not enough stock for LAMP-1.")


def test_a_message_applied_twice_changes_nothing_the_second_time():
    history, ids = _shop_history()
    for item in history.items:
        _apply(item)
    before = _state(T0 + timedelta(minutes=5))
    position = changelog.stream_position(changelog.customer_stream(CUSTOMER))
    for item in history.items:  # the inbox would drop these; the projections must too
        _apply(item)
    assert services.order_step_project(
        order_id=ids["confirmed"], message_id=history.items[1][0].id, occurred_at=T0, step="placed",
        step_status="ok") is False
    assert changelog.stream_position(changelog.customer_stream(CUSTOMER)) == position
    assert _state(T0 + timedelta(minutes=5)) == before


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_any_arrival_order_converges_to_the_in_order_projection(seed):
    """Invariant 6: a rebuild from the history (here: in order) equals the live
    projection, whatever order the messages of different aggregates arrived in (here:
    shuffled, with some delivered twice)."""
    history, _ = _shop_history()
    now = T0 + timedelta(minutes=5)
    in_order = _applied_in_order_then_wiped(history, now)
    shuffled = list(history.items)
    rng = random.Random(seed)
    rng.shuffle(shuffled)
    shuffled += rng.sample(history.items, 5)  # redeliveries
    for n, item in enumerate(shuffled):
        _apply(item)
        if n % 7 == 0:
            services.dashboard_publish(force=True, now=now)  # folds at arbitrary points
    assert _state(now) == in_order


def _as_v1(envelope: Envelope) -> Envelope:
    """An order's snapshot event as orders published it before version 2 (no currency)."""
    if envelope.type not in {schema.message_type for schema in orders.SNAPSHOT_EVENTS}:
        return envelope
    return envelope.model_copy(update={"schema_version": 1,
                                       "payload": orders.money_as_a_bare_amount(envelope.payload)})


@pytest.mark.parametrize("published_as", ["v2", "v1"])
@pytest.mark.parametrize("batch_size", [5, 100])
def test_a_batch_applied_together_equals_each_message_applied_in_turn(batch_size, published_as, caplog):
    """The consumer hands the projector a batch as one run (``Batched``): each order's
    document is written once per batch, each product's newest document only, and the read
    side ends as it would one message at a time; a redelivery, inside a batch or in a later
    one, changes nothing. Orders' events published as v1 (before amounts carried their
    currency) come up through the upcaster with the same effects as v2."""
    history, ids = _shop_history()
    now = T0 + timedelta(minutes=5)
    one_by_one = _applied_in_order_then_wiped(history, now)
    consumer = ContextConsumer(contexts.get("readmodels"))
    delivered = history.items + history.items[:6]  # redeliveries: in the same batch of 100, in the last of 5s
    if published_as == "v1":
        delivered = [(_as_v1(envelope), message) for envelope, message in delivered]
        assert any(envelope.schema_version == 1 for envelope, _ in delivered)
    outcomes = []
    for start in range(0, len(delivered), batch_size):
        outcomes += consumer.handle_batch([Received.of(envelope.to_json(), content_type="application/json")
                                           for envelope, _ in delivered[start:start + batch_size]])
    assert outcomes == [Outcome.APPLIED] * len(history.items) + [Outcome.DUPLICATE] * 6
    # Each batch was one run, applied together: not message by message after a failure.
    assert not [record for record in caplog.records if "failed together" in record.getMessage()]
    assert _state(now) == one_by_one
    if batch_size == 100:
        # One batch: each order recorded once on the customer's stream, at its last version.
        changes = changelog.changes_since(stream=changelog.customer_stream(CUSTOMER), position=0)
        assert sorted(change["key"] for change in changes) == sorted(str(order_id) for order_id in ids.values())
        assert [change["position"] for change in changes] == [1, 2, 3, 4]
        versions = {str(row.order_id): row.version for row in rm.OrderSummary.objects.all()}
        assert {change["key"]: change["version"] for change in changes} == versions


def test_the_order_document_joins_product_names_prices_and_live_availability():
    order_id = uuid.uuid4()
    _apply(_product("MUG-2", version=1, on_hand=10, reserved=0))
    h = History()
    h.order_event(orders.OrderPlaced, order_id, status="PENDING", version=1)
    _apply(h.items[0])
    pushed = changelog.changes_since(stream=changelog.customer_stream(CUSTOMER), position=0)
    assert [c["kind"] for c in pushed] == ["order"]
    document = pushed[0]["data"]
    assert set(document) == {"id", "status", "reason", "total", "currency", "version", "order_version", "placed_at",
                             "updated_at", "lines", "timeline"}
    assert document["lines"] == [{"sku": "MUG-2", "name": "Mug", "quantity": 2, "unit_price": "4.50",
                                  "available": 10, "product_version": 1}]
    assert document["timeline"] == [{"step": "placed", "status": "ok", "at": h.items[0][0].occurred_at.isoformat(),
                                     "reason": ""}]
    assert (document["status"], document["total"], document["version"]) == ("PENDING", "9.00", 1)
    _apply(_product("MUG-2", version=2, on_hand=10, reserved=2))
    sub = streams.Subscription("orders", changelog.customer_stream(CUSTOMER))
    _, (current,) = streams.snapshot(sub)
    # What inventory says now, and from which version of the product.
    assert (current["lines"][0]["available"], current["lines"][0]["product_version"]) == (8, 2)


def test_an_inventory_answer_before_the_order_is_kept_until_the_order_arrives():
    order_id = uuid.uuid4()
    h = History()
    h.order_event(orders.OrderPlaced, order_id, status="PENDING", version=1)
    h.stock(inventory.StockReserved, order_id, lines=[inventory.StockLine(sku="MUG-2", quantity=2)])
    _apply(h.items[1])
    assert selectors.order_summaries_for_customer(customer_id=CUSTOMER).count() == 0  # nobody's yet
    assert changelog.stream_position(changelog.customer_stream(CUSTOMER)) == 0
    _apply(h.items[0])
    (document,) = selectors.order_documents_for_customer(customer_id=CUSTOMER)
    assert [s["step"] for s in document["timeline"]] == ["placed", "stock_reserved"]
    assert document["version"] == 2


def test_dashboard_counts_orders_per_status_and_throughput_and_is_pushed_coalesced():
    history, _ = _shop_history()
    for item in history.items:
        _apply(item)
    now = history.clock + timedelta(seconds=30)
    assert services.dashboard_publish(now=now)
    assert not services.dashboard_publish(now=now + timedelta(seconds=5))  # nothing changed since
    (change,) = changelog.changes_since(stream=changelog.DASHBOARD, position=0)
    assert (change["kind"], change["key"], change["version"]) == ("dashboard", "dashboard", 1)
    dashboard = change["data"]
    assert set(dashboard) == {"version", "orders_by_status", "outboxes", "crashing_processes", "throughput"}
    assert dashboard["orders_by_status"] == {"CANCELLED": 1, "CONFIRMED": 1, "REJECTED": 2}
    assert dashboard["outboxes"] == [{"context": "orders", "pending": 3, "oldest_pending_age_s": 1.5, "parked": 0,
                                      "dead_letters": 1, "measured_at": history.clock.isoformat()}]
    assert dashboard["crashing_processes"] == [{"name": "orders-relay", "context": "orders", "state": "FATAL",
                                                "measured_at": history.clock.isoformat()}]
    assert len(dashboard["throughput"]) == 15
    totals = {event: sum(m[event] for m in dashboard["throughput"])
              for event in ("placed", "confirmed", "rejected", "cancelled")}
    assert totals == {"placed": 4, "confirmed": 2, "rejected": 2, "cancelled": 1}
    assert rm.DashboardDelta.objects.count() == 0  # folded

    # Many order changes within a second make one push, not one each.
    h = History()
    h.clock = history.clock
    for _ in range(5):
        h.order_event(orders.OrderPlaced, uuid.uuid4(), status="PENDING", version=1)
    for item in h.items:
        _apply(item)
    later = now + timedelta(seconds=10)
    assert services.dashboard_publish(now=later)
    assert not services.dashboard_publish(now=later + timedelta(milliseconds=300))
    assert changelog.stream_position(changelog.DASHBOARD) == 2
    assert selectors.dashboard_document(now=later)["orders_by_status"]["PENDING"] == 5


def test_the_stock_board_gets_every_product_state():
    _apply(_product("MUG-2", version=1, on_hand=10, reserved=0))
    _apply(_product("MUG-2", version=2, on_hand=10, reserved=3))
    _apply(_product("MUG-2", version=1, on_hand=10, reserved=0))  # late: ignored
    board = changelog.changes_since(stream=changelog.STOCK, position=0)
    assert [(c["kind"], c["version"], c["data"]["reserved"]) for c in board] == [("stock_item", 1, 0),
                                                                                 ("stock_item", 2, 3)]
    assert board[-1]["data"] == {"sku": "MUG-2", "name": "Product MUG-2", "price": "4.50", "on_hand": 10,
                                 "reserved": 3, "available": 7, "version": 2}


def test_old_changes_are_pruned_by_a_periodic_job_every_ten_minutes(settings):
    settings.WAYBILL_CHANGES_RETENTION_SECONDS = -1  # everything is old
    (job,) = [job for job in contexts.get("readmodels").periodic if job.run is changelog.changes_prune]
    assert job.every == 600.0
    for version in (1, 2, 3):
        _apply(_product("MUG-2", version=version, on_hand=10, reserved=version))
    assert job.run() == 4  # of 3 catalog and 3 stock changes, each stream keeps its latest
    assert job.run() == 0  # each stream's latest change stays
