"""The order saga as a state machine: Hypothesis places, declines and cancels orders,
delivers, duplicates and reorders the messages between orders, inventory and the
payments consumer, lets saga deadlines pass (also while a charge is on its way to the
provider) and takes the payment provider down and up, in any order. After every step stock is never oversold and inventory's numbers agree;
at the end, once everything has settled, every saga ended, every order's status matches
its saga, stock is held exactly for the CONFIRMED orders, and no money is kept for an
order that is not CONFIRMED.

The machine holds the messages itself: after every step it relays every outbox and takes
whatever reached the queues of orders, inventory and payments into its own per-queue
lists (the read side's queue is applied at once), so a rule can apply the head of a
queue, the second before the first, or one already applied again.
"""

from __future__ import annotations

import json
import uuid
from collections import defaultdict
from decimal import Decimal

import httpx
import pytest
from django.db.models.functions import Now
from django.utils import timezone
from hypothesis import HealthCheck, Phase
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule, run_state_machine_as_test

from apps.inventory import models as inventory_models
from apps.inventory import ledger
from apps.inventory import services as inventory
from apps.orders import models as orders_models
from apps.orders import payments, services
from apps.orders.saga import saga_deadline_bring_forward, saga_expire_overdue
from apps.readmodels import models as readmodels_models
from launcher.polling import wait_for
from waybill import bus
from waybill.models import InboxMessageBase

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")

Order, OrderSaga, OrderLine = orders_models.Order, orders_models.OrderSaga, orders_models.OrderLine
Product, Reservation = inventory_models.Product, inventory_models.Reservation
S, State = Order.Status, OrderSaga.State
RETRYING = InboxMessageBase.Status.RETRYING
CUSTOMER = 11
QUEUES = ("orders", "inventory", "payments")  # the saga's conversation; readmodels is applied at once
# (sku, price, on_hand). One SOFA costs 2100.00: inside the sandbox's decline band.
PRODUCTS = (("KETTLE-1", Decimal("30.00"), 6), ("LAMP-1", Decimal("20.00"), 4), ("SOFA-1", Decimal("2100.00"), 3))
ON_HAND = {sku: on_hand for sku, _, on_hand in PRODUCTS}
EVERY_TABLE = (
    orders_models.SagaStep, OrderSaga, OrderLine, Order, orders_models.ProductCopy, orders_models.OutboxMessage,
    orders_models.InboxMessage, orders_models.DeadLetter, orders_models.PaymentInboxMessage,
    orders_models.PaymentDeadLetter, orders_models.CircuitState,
    Reservation, Product, inventory_models.StockEntry, inventory_models.StockSnapshot, inventory_models.OutboxMessage, inventory_models.InboxMessage, inventory_models.DeadLetter,
    readmodels_models.OrderSummary, readmodels_models.CatalogItem, readmodels_models.OutboxMessage,
    readmodels_models.InboxMessage, readmodels_models.DeadLetter,
)
DEAD_LETTERS = (orders_models.DeadLetter, orders_models.PaymentDeadLetter, inventory_models.DeadLetter,
                readmodels_models.DeadLetter)


class SagaMachine(RuleBasedStateMachine):
    # Set by the test function, which owns the fixtures (database, pump, sandbox).
    pump = None
    sandbox = None

    def __init__(self):
        super().__init__()
        self._reset_world()
        self.pending: dict[str, list[str]] = {name: [] for name in QUEUES}
        self.applied: dict[str, list[str]] = {name: [] for name in QUEUES}
        self.placed: list = []
        for sku, price, on_hand in PRODUCTS:
            inventory.product_create(sku=sku, name=sku.title(), price=price, on_hand=on_hand)
        self.pump.settle()  # orders learns the catalog

    # --- plumbing ------------------------------------------------------------------------
    def _reset_world(self) -> None:
        """A fresh shop for each example: every row gone, every queue empty, a closed circuit."""
        for model in EVERY_TABLE:
            model.objects.all().delete()
        for name in (*QUEUES, "readmodels"):
            self._take(name)
        payments.breaker.cache_clear()
        self.sandbox.configure(outage=False, latency_ms=0, failure_rate=0.0)

    def _take(self, name: str) -> list[str]:
        queue = bus.context_queue(self.pump.consumers[name].context)(self.pump.connection.default_channel)
        bodies = []
        while (message := queue.get(no_ack=False, accept=[bus.JSON])) is not None:
            bodies.append(message.body if isinstance(message.body, str) else message.body.decode())
            message.ack()
        return bodies

    def _pull(self) -> None:
        """Relay every outbox; hold what reached the saga's queues, project the rest."""
        self.pump.relay()
        for name in QUEUES:
            self.pending[name].extend(self._take(name))
        self.pump.deliver("readmodels")

    def _apply(self, name: str, body: str) -> None:
        self.pump.consumers[name].receive(body, content_type=bus.JSON)
        self.applied[name].append(body)

    def _retry_payments(self) -> int:
        orders_models.PaymentInboxMessage.objects.filter(status=RETRYING).update(next_attempt_at=timezone.now())
        return self.pump.consumers["payments"].retry_due()

    def _open_sagas(self):
        return OrderSaga.objects.exclude(state__in=OrderSaga.TERMINAL)

    def _nonempty(self) -> list[str]:
        return [name for name in QUEUES if self.pending[name]]

    # --- rules: customers ----------------------------------------------------------------
    @rule(lines=st.dictionaries(st.sampled_from(["KETTLE-1", "LAMP-1"]), st.integers(1, 2), min_size=1, max_size=2))
    def place(self, lines):
        order, _ = services.order_place(
            customer_id=CUSTOMER, lines=[services.LineRequest(sku, qty) for sku, qty in sorted(lines.items())])
        self.placed.append(order.id)
        self._pull()

    @rule()
    def place_declined(self):
        """One sofa: 2100.00, which the provider declines."""
        order, _ = services.order_place(customer_id=CUSTOMER, lines=[services.LineRequest("SOFA-1", 1)])
        self.placed.append(order.id)
        self._pull()

    @precondition(lambda self: self.placed)
    @rule(index=st.integers(0, 1000))
    def cancel(self, index):
        order_id = self.placed[index % len(self.placed)]
        try:
            services.order_cancel(order_id=order_id, customer_id=CUSTOMER)
        except services.OrderConflict:
            pass  # already settled: REJECTED or CANCELLED
        self._pull()

    # --- rules: the bus ----------------------------------------------------------------------
    @precondition(lambda self: self._nonempty())
    @rule(data=st.data())
    def deliver(self, data):
        name = data.draw(st.sampled_from(self._nonempty()), label="queue")
        self._apply(name, self.pending[name].pop(0))
        self._pull()

    @precondition(lambda self: self._nonempty())
    @rule(data=st.data())
    def deliver_queue(self, data):
        """Everything waiting on one queue, in order."""
        name = data.draw(st.sampled_from(self._nonempty()), label="queue")
        waiting, self.pending[name] = self.pending[name], []
        for body in waiting:
            self._apply(name, body)
        self._pull()

    @precondition(lambda self: self._nonempty())
    @rule()
    def catch_up(self):
        """Every consumer takes what is waiting for it (one round: answers wait for the next)."""
        for name in QUEUES:
            waiting, self.pending[name] = self.pending[name], []
            for body in waiting:
                self._apply(name, body)
        self._pull()

    @precondition(lambda self: any(len(self.pending[name]) >= 2 for name in QUEUES))
    @rule(data=st.data())
    def reorder(self, data):
        """The second message waiting on a queue overtakes the first."""
        name = data.draw(st.sampled_from([n for n in QUEUES if len(self.pending[n]) >= 2]), label="queue")
        first, second = self.pending[name].pop(0), self.pending[name].pop(0)
        self._apply(name, second)
        self._apply(name, first)
        self._pull()

    @precondition(lambda self: any(self.applied.values()))
    @rule(data=st.data())
    def duplicate(self, data):
        """The broker delivers again a message that was already applied."""
        name = data.draw(st.sampled_from([n for n in QUEUES if self.applied[n]]), label="queue")
        body = data.draw(st.sampled_from(self.applied[name]), label="message")
        self._apply(name, body)
        self._pull()

    def _charges_that_can_race(self) -> list[str]:
        """ChargePayment commands waiting on the payments queue that would call the
        provider now: their saga still waits for the charge, within its deadline."""
        waiting = {str(o) for o in OrderSaga.objects.filter(
            state=State.RUNNING, step=OrderSaga.Step.CHARGE_PAYMENT, deadline_at__gt=Now(),
        ).values_list("order_id", flat=True)}
        return [body for body in self.pending["payments"]
                if (message := json.loads(body))["type"] == "orders.charge_payment"
                and message["payload"]["order_id"] in waiting]

    @precondition(lambda self: self._charges_that_can_race())
    @rule(data=st.data())
    def charge_races_the_deadline(self, data):
        """The payments worker has checked that the saga wants the charge and its call is
        on the way to the provider; meanwhile, in another process, the saga's deadline
        passes, it compensates, and the timeout refund reaches the provider first."""
        body = data.draw(st.sampled_from(self._charges_that_can_race()), label="charge")
        self.pending["payments"].remove(body)
        order_id = json.loads(body)["payload"]["order_id"]
        client = payments._client()  # what payments._post calls
        real_post, raced = client.post, []

        def post(url, *args, **kwargs):
            if url.endswith("/v1/charges") and not raced:
                raced.append(url)
                saga_deadline_bring_forward(order_ids=[order_id])
                saga_expire_overdue()
                self._pull()
                for refund in [b for b in self.pending["payments"] if order_id in b
                               and json.loads(b)["type"] == "orders.refund_payment"]:
                    self.pending["payments"].remove(refund)
                    self._apply("payments", refund)
            return real_post(url, *args, **kwargs)

        client.post = post
        try:
            self._apply("payments", body)
        finally:
            del client.post  # back to the class's method
        self._pull()

    @rule()
    def retry_payments(self):
        """The payments consumer's retry sweep runs (retries made due at once)."""
        self._retry_payments()
        self._pull()

    # --- rules: time and the provider ---------------------------------------------------------
    @precondition(lambda self: self._open_sagas().exists())
    @rule(index=st.integers(0, 1000))
    def deadline_passes(self, index):
        """Time passes beyond one open saga's deadline; the expiry job runs."""
        open_ids = list(self._open_sagas().order_by("started_at", "order_id").values_list("order_id", flat=True))
        order_id = open_ids[index % len(open_ids)]
        saga_deadline_bring_forward(order_ids=[order_id])
        assert saga_expire_overdue() >= 1
        self._pull()

    @rule(on=st.booleans())
    def provider(self, on):
        """The payment provider goes down, or comes back."""
        self.sandbox.configure(outage=on)

    # --- invariants after every step ------------------------------------------------------
    @invariant()
    def stock_is_never_oversold_and_agrees(self):
        products = list(Product.objects.all())
        assert {p.sku for p in products} == set(ON_HAND)
        held = defaultdict(int)
        for reservation in Reservation.objects.filter(status=Reservation.Status.RESERVED):
            for line in reservation.lines:
                held[line["sku"]] += line["quantity"]
        confirmed = defaultdict(int)
        for line in OrderLine.objects.filter(order__status=S.CONFIRMED):
            confirmed[line.sku] += line.quantity
        catalog = {item.sku: item.available for item in readmodels_models.CatalogItem.objects.all()}
        documents = {}
        for sku, envelope in (inventory_models.OutboxMessage.objects.filter(message_type="inventory.product_updated")
                              .order_by("id").values_list("aggregate_id", "envelope")):
            documents[sku] = envelope["payload"]  # the latest wins
        assert ledger.fold_check() == []  # every row is its ledger's fold, from the start and from a snapshot
        for product in products:
            assert product.on_hand == ON_HAND[product.sku]
            assert 0 <= product.reserved <= product.on_hand, product
            assert product.reserved == held[product.sku], "reserved must be the sum of the held reservations"
            assert product.reserved >= confirmed[product.sku], "a CONFIRMED order always has its stock"
            # The last state document inventory published says the same, and so does the catalog.
            payload = documents[product.sku]
            assert (payload["on_hand"], payload["reserved"], payload["available"]) == (
                product.on_hand, product.reserved, product.on_hand - product.reserved)
            assert catalog[product.sku] == product.on_hand - product.reserved

    @invariant()
    def each_order_has_one_status_and_one_saga(self):
        rows = dict(Order.objects.values_list("id", "status"))
        assert set(rows) == set(self.placed)
        assert all(status in S.values for status in rows.values())
        sagas = dict(OrderSaga.objects.values_list("order_id", "state"))
        assert set(sagas) == set(self.placed)
        for order_id, status in rows.items():
            if status == S.CONFIRMED:
                assert sagas[order_id] == State.COMPLETED
            if sagas[order_id] == State.COMPLETED:
                assert status in (S.CONFIRMED, S.CANCELLED)

    # --- the end: settle everything, then check the outcome ---------------------------------
    def teardown(self):
        self.sandbox.configure(outage=False)
        self._settle()

        open_sagas = list(self._open_sagas().values_list("order_id", "state", "step"))
        assert open_sagas == [], "every saga ends completed or compensated"
        statuses = dict(Order.objects.values_list("id", "status"))
        sagas = dict(OrderSaga.objects.values_list("order_id", "state"))
        for order_id, status in statuses.items():
            expected = {State.COMPLETED: {S.CONFIRMED, S.CANCELLED},
                        State.COMPENSATED: {S.REJECTED, S.CANCELLED}}[sagas[order_id]]
            assert status in expected, (order_id, status, sagas[order_id])
        confirmed = defaultdict(int)
        for line in OrderLine.objects.filter(order__status=S.CONFIRMED):
            confirmed[line.sku] += line.quantity
        for product in Product.objects.all():
            assert product.on_hand == ON_HAND[product.sku]
            assert product.reserved == confirmed[product.sku], product
        # Only the payments consumer charges, and only on a ChargePayment: ask the provider
        # about every order the saga ever sent one for (the others cannot have a charge).
        asked_to_charge = {uuid.UUID(a) for a in orders_models.OutboxMessage.objects.filter(
            message_type="orders.charge_payment").values_list("aggregate_id", flat=True)}
        assert {o for o, status in statuses.items() if status == S.CONFIRMED} <= asked_to_charge
        with httpx.Client(base_url=self.sandbox.url, timeout=5) as provider:
            for order_id in sorted(asked_to_charge):
                response = provider.get("/v1/charges", params={"reference": str(order_id)})
                response.raise_for_status()
                kept = [c for c in response.json()["data"] if c["status"] == "succeeded" and not c["refunded"]]
                if statuses[order_id] == S.CONFIRMED:
                    assert len(kept) == 1, (order_id, response.json())
                else:
                    assert kept == [], f"money kept for a {statuses[order_id]} order: {kept}"
        for model in DEAD_LETTERS:
            assert list(model.objects.values_list("message_type", "reason")) == []

    def _settle(self) -> None:
        """Everything held is delivered, retries run until none is left, and sagas still
        waiting once nothing moves see their deadlines pass."""
        for _ in range(30):
            for name in QUEUES:
                waiting, self.pending[name] = self.pending[name], []
                for body in waiting:
                    self._apply(name, body)
            self.pump.settle()

            def payments_done() -> bool:
                self._retry_payments()
                self.pump.settle()
                return not orders_models.PaymentInboxMessage.objects.filter(status=RETRYING).exists()

            # The circuit may be open from the outage: it lets a call through after its reset time.
            if orders_models.PaymentInboxMessage.objects.filter(status=RETRYING).exists():
                wait_for(payments_done, timeout=10, what="payments retries drained")
            self._pull()
            if any(self.pending.values()):
                continue
            if not self._open_sagas().exists():
                return
            saga_deadline_bring_forward(order_ids=list(self._open_sagas().values_list("order_id", flat=True)))
            saga_expire_overdue()
            self._pull()
        raise AssertionError("the shop did not settle")


def test_saga_state_machine(pump, payment_sandbox, settings):
    settings.WAYBILL_PAYMENT_BREAKER_FAILURES = 3
    settings.WAYBILL_PAYMENT_BREAKER_RESET_SECONDS = 0.05
    payments.breaker.cache_clear()
    SagaMachine.pump, SagaMachine.sandbox = pump, payment_sandbox
    try:
        run_state_machine_as_test(SagaMachine, settings=hsettings(
            max_examples=25,
            stateful_step_count=30,
            deadline=None,
            derandomize=True,
            database=None,
            phases=(Phase.explicit, Phase.generate, Phase.shrink),
            suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                   HealthCheck.filter_too_much],
        ))
    finally:
        SagaMachine.pump = SagaMachine.sandbox = None
        payment_sandbox.configure(outage=False)
