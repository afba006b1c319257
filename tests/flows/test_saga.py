"""The order saga (reserve stock -> charge payment -> confirm, compensated in reverse),
moved step by step by the real relay and consumers, against the real payment sandbox.

Every scenario ends in the same place: every saga terminal, and stock consistent (held
exactly for the CONFIRMED orders, on_hand untouched, every copy of "available" right).
Where a test needs time to pass for a saga, it moves that saga's deadline into the past
(the deadline is database time; ``saga_expire_overdue`` compares it with the database's
clock), or sets a deadline setting to 0 and waits, with a bound, until it has passed.
"""

from __future__ import annotations

import json
import uuid
from collections import defaultdict
from datetime import timedelta
from decimal import Decimal

import httpx
import pytest
from django.db.models.functions import Now
from django.utils import timezone

from apps.inventory import services as inventory
from apps.inventory.models import InboxMessage as InventoryInbox
from apps.inventory.models import Product, Reservation
from apps.orders import payments, services
from apps.orders.models import (
    CircuitState, Order, OrderLine, OrderSaga, OutboxMessage, PaymentInboxMessage, SagaClock,
)
from apps.orders.saga import saga_deadline_bring_forward, saga_expire_overdue
from apps.readmodels.models import CatalogItem, OrderSummary
from launcher.polling import wait_for
from waybill import bus
from waybill.consumer import Outcome
from waybill.models import InboxMessageBase

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")

S = Order.Status
State, Step = OrderSaga.State, OrderSaga.Step
RETRYING = InboxMessageBase.Status.RETRYING
CUSTOMER = 7
ON_HAND = {"KETTLE-1": 5, "LAMP-1": 3, "SOFA-1": 4}


# --- helpers ---------------------------------------------------------------------------------
@pytest.fixture
def shop(pump):
    inventory.product_create(sku="KETTLE-1", name="Kettle", price=Decimal("30.00"), on_hand=5)
    inventory.product_create(sku="LAMP-1", name="Lamp", price=Decimal("20.00"), on_hand=3)
    # Two sofas cost 2150.00: inside the sandbox's decline band (2000.00-2999.99).
    inventory.product_create(sku="SOFA-1", name="Sofa", price=Decimal("1075.00"), on_hand=4)
    pump.settle()


def place(sku: str, quantity: int) -> Order:
    order, _ = services.order_place(customer_id=CUSTOMER, lines=[services.LineRequest(sku, quantity)])
    return order


def saga_of(order: Order) -> OrderSaga:
    return OrderSaga.objects.get(order_id=order.id)


def timeline(order: Order) -> list[tuple[str, str]]:
    return [(s.step, s.event) for s in saga_of(order).timeline.all()]


def status_of(order: Order) -> str:
    order.refresh_from_db()
    return order.status


def sent_by_orders(order: Order, message_type: str) -> list[OutboxMessage]:
    return list(OutboxMessage.objects.filter(aggregate_id=str(order.id), message_type=message_type).order_by("id"))


def charges(sandbox, order: Order) -> list[dict]:
    """The provider's own record of the charges for this order (its HTTP API)."""
    response = httpx.get(f"{sandbox.url}/v1/charges", params={"reference": str(order.id)}, timeout=5)
    response.raise_for_status()
    return response.json()["data"]


def take(pump, context_name: str) -> list[str]:
    """Take every message waiting on a context's queue off it (acked, not applied)."""
    queue = bus.context_queue(pump.consumers[context_name].context)(pump.connection.default_channel)
    bodies = []
    while (message := queue.get(no_ack=False, accept=[bus.JSON])) is not None:
        bodies.append(message.body if isinstance(message.body, str) else message.body.decode())
        message.ack()
    return bodies


def of_type(bodies: list[str], message_type: str) -> list[str]:
    return [body for body in bodies if json.loads(body)["type"] == message_type]


def feed(pump, context_name: str, body: str) -> Outcome:
    """Apply one message as the context's consumer would take it off its queue."""
    return pump.consumers[context_name].receive(body, content_type=bus.JSON)


def deadline_passes(order: Order) -> None:
    """Time passes beyond the saga's current deadline (which is database time)."""
    saga_deadline_bring_forward(order_ids=[order.id])


def retry_payments(pump) -> int:
    """Make every waiting payments retry due now and run them (the inbox retry sweep)."""
    PaymentInboxMessage.objects.filter(status=RETRYING).update(next_attempt_at=timezone.now())
    return pump.consumers["payments"].retry_due()


def wait_confirmed_after_breaker_reset(pump, order: Order) -> None:
    """Retry the charge until the breaker lets it through again and the order is CONFIRMED."""
    def confirmed() -> bool:
        retry_payments(pump)
        pump.settle()
        return status_of(order) == S.CONFIRMED

    wait_for(confirmed, timeout=10, interval=0.05, what="confirmation after the breaker's reset")


def assert_settled_and_consistent() -> None:
    """Every saga ended, and stock is held exactly for the CONFIRMED orders."""
    open_sagas = list(OrderSaga.objects.exclude(state__in=OrderSaga.TERMINAL).values_list("order_id", "state", "step"))
    assert open_sagas == []
    held = defaultdict(int)
    for line in OrderLine.objects.filter(order__status=S.CONFIRMED):
        held[line.sku] += line.quantity
    catalog = {item.sku: item.available for item in CatalogItem.objects.all()}
    for product in Product.objects.all():
        assert product.on_hand == ON_HAND[product.sku], product.sku
        assert product.reserved == held[product.sku], product.sku
        assert product.available == product.on_hand - product.reserved
        assert catalog[product.sku] == product.on_hand - product.reserved, product.sku  # the read side agrees
    assert not PaymentInboxMessage.objects.filter(status=RETRYING).exists()


# --- the happy path --------------------------------------------------------------------------
def test_happy_path_confirms_the_order_and_charges_once(pump, shop, payment_sandbox):
    order = place("KETTLE-1", 2)
    assert saga_of(order).state == State.RUNNING and saga_of(order).step == Step.RESERVE_STOCK
    pump.settle()

    assert status_of(order) == S.CONFIRMED
    saga = saga_of(order)
    assert (saga.state, saga.step, saga.deadline_at) == (State.COMPLETED, Step.DONE, None)
    steps = list(saga.timeline.all())
    assert [(s.step, s.event) for s in steps] == [
        ("reserve_stock", "started"), ("reserve_stock", "finished"),
        ("charge_payment", "started"), ("charge_payment", "finished"),
    ]
    # Each "started" names the command it sent, and that very message was applied by its owner.
    [reserve] = sent_by_orders(order, "inventory.reserve_stock")
    [charge] = sent_by_orders(order, "orders.charge_payment")
    assert (steps[0].message_id, steps[0].message_type) == (reserve.message_id, "inventory.reserve_stock")
    assert (steps[2].message_id, steps[2].message_type) == (charge.message_id, "orders.charge_payment")
    assert InventoryInbox.objects.get(message_id=reserve.message_id).status == "processed"
    assert PaymentInboxMessage.objects.get(message_id=charge.message_id).status == "processed"
    assert charge.envelope["payload"]["amount"] == "60.00"

    [provider_charge] = charges(payment_sandbox, order)
    assert (provider_charge["status"], provider_charge["amount"], provider_charge["refunded"]) == (
        "succeeded", "60.00", False)
    assert steps[3].reason == f"charge {provider_charge['id']}"
    assert OrderSummary.objects.get(order_id=order.id).status == "CONFIRMED"
    assert Product.objects.get(sku="KETTLE-1").reserved == 2
    assert_settled_and_consistent()


# --- a failing step compensates the ones before it -------------------------------------------
def test_payment_declined_releases_the_stock_and_rejects(pump, shop, payment_sandbox):
    order = place("SOFA-1", 2)
    assert order.total == Decimal("2150.00")
    pump.settle()

    assert status_of(order) == S.REJECTED
    assert "declined" in order.reason.lower()
    assert order.reason == "Payment declined: card declined."
    saga = saga_of(order)
    assert (saga.state, saga.step) == (State.COMPENSATED, Step.DONE)
    assert timeline(order) == [
        ("reserve_stock", "started"), ("reserve_stock", "finished"),
        ("charge_payment", "started"), ("charge_payment", "failed"),
        ("release_stock", "started"), ("release_stock", "compensated"),
    ]
    [release] = sent_by_orders(order, "inventory.release_stock")
    assert saga.timeline.get(step="release_stock", event="started").message_id == release.message_id
    assert Reservation.objects.get(order_id=order.id).status == Reservation.Status.RELEASED
    [declined] = charges(payment_sandbox, order)
    assert (declined["status"], declined["decline_code"]) == ("declined", "card_declined")
    assert OrderSummary.objects.get(order_id=order.id).reason == "Payment declined: card declined."
    assert_settled_and_consistent()


def test_out_of_stock_rejects_without_charging(pump, shop, payment_sandbox):
    order = place("LAMP-1", 4)
    pump.settle()

    assert status_of(order) == S.REJECTED
    assert order.reason == "Not enough stock for LAMP-1: 4 requested, 3 available."
    assert (saga_of(order).state, saga_of(order).outcome_reason) == (State.COMPENSATED, order.reason)
    assert timeline(order) == [("reserve_stock", "started"), ("reserve_stock", "failed")]
    assert sent_by_orders(order, "orders.charge_payment") == []
    assert charges(payment_sandbox, order) == []
    assert_settled_and_consistent()


# --- the provider in trouble: circuit breaker, retries from the inbox, deadlines ------------
def test_provider_outage_opens_the_breaker_and_the_saga_waits_then_completes(
        pump, shop, payment_sandbox, settings):
    settings.WAYBILL_PAYMENT_BREAKER_FAILURES = 3
    settings.WAYBILL_PAYMENT_BREAKER_RESET_SECONDS = 0.3
    payments.breaker.cache_clear()
    payment_sandbox.configure(outage=True)
    unavailable = payment_sandbox.stats()["unavailable"]

    order = place("KETTLE-1", 1)
    pump.settle()  # the first charge attempt meets the outage
    assert retry_payments(pump) == 1
    assert retry_payments(pump) == 1  # the third failure in a row opens the circuit
    assert payment_sandbox.stats()["unavailable"] == unavailable + 3
    assert payments.breaker().current_state == "open"
    assert CircuitState.objects.values_list("state", "failures").get(name=payments.BREAKER) == ("open", 3)

    retry_payments(pump)  # fails fast: the open circuit does not call the provider
    assert payment_sandbox.stats()["unavailable"] == unavailable + 3
    [attempt] = PaymentInboxMessage.objects.filter(message_type="orders.charge_payment")
    assert (attempt.status, attempt.attempts) == (RETRYING, 4)
    assert "circuit open" in attempt.last_error

    # Within its deadline, the saga waits at the charge, stock held, order still pending.
    assert status_of(order) == S.PENDING
    saga = saga_of(order)
    assert (saga.state, saga.step) == (State.RUNNING, Step.CHARGE_PAYMENT)
    assert saga.deadline_at > timezone.now()
    assert saga_expire_overdue() == 0
    assert Product.objects.get(sku="KETTLE-1").reserved == 1

    payment_sandbox.configure(outage=False)

    wait_confirmed_after_breaker_reset(pump, order)
    assert payments.breaker().current_state == "closed"
    assert CircuitState.objects.get(name=payments.BREAKER).state == "closed"
    assert saga_of(order).state == State.COMPLETED
    [charge] = charges(payment_sandbox, order)
    assert (charge["status"], charge["refunded"]) == ("succeeded", False)
    assert_settled_and_consistent()


def test_circuit_state_row_shows_what_the_breaker_does(pump, shop, payment_sandbox, settings):
    """Operators read the breaker from the CircuitState row (admin): it must say "open"
    while the breaker is open, and "closed" once the provider is back. (Regression: the
    row used to lag one state behind, recording cb.current_state before pybreaker had
    switched over.)"""
    settings.WAYBILL_PAYMENT_BREAKER_FAILURES = 2
    settings.WAYBILL_PAYMENT_BREAKER_RESET_SECONDS = 0.2
    payments.breaker.cache_clear()
    payment_sandbox.configure(outage=True)
    order = place("KETTLE-1", 1)
    pump.settle()
    retry_payments(pump)
    assert payments.breaker().current_state == "open"
    seen = [CircuitState.objects.get(name=payments.BREAKER).state]

    payment_sandbox.configure(outage=False)

    wait_confirmed_after_breaker_reset(pump, order)
    assert payments.breaker().current_state == "closed"
    seen.append(CircuitState.objects.get(name=payments.BREAKER).state)
    assert seen == ["open", "closed"]  # the bug recorded ["closed", "half-open"]


def test_outage_past_the_deadline_compensates_and_never_charges(pump, shop, payment_sandbox):
    payment_sandbox.configure(outage=True)
    order = place("KETTLE-1", 2)
    pump.settle()
    [attempt] = PaymentInboxMessage.objects.filter(message_type="orders.charge_payment")
    assert attempt.status == RETRYING and "503" in attempt.last_error

    deadline_passes(order)
    assert saga_expire_overdue() == 1
    saga = saga_of(order)
    assert (saga.state, saga.step) == (State.COMPENSATING, Step.RELEASE_STOCK)
    [refund] = sent_by_orders(order, "orders.refund_payment")
    assert refund.envelope["payload"]["reason"] == "payment step timed out"
    compensated = saga.timeline.get(step="charge_payment", event="compensated")
    assert compensated.message_id == refund.message_id

    pump.settle()  # the stock comes back; the refund meets the outage too
    assert status_of(order) == S.REJECTED
    assert order.reason == "Payment did not complete in time."
    assert saga_of(order).state == State.COMPENSATED
    assert Product.objects.get(sku="KETTLE-1").reserved == 0
    assert timeline(order) == [
        ("reserve_stock", "started"), ("reserve_stock", "finished"),
        ("charge_payment", "started"), ("charge_payment", "compensated"), ("charge_payment", "timed_out"),
        ("release_stock", "started"), ("release_stock", "compensated"),
    ]

    payment_sandbox.configure(outage=False)

    def retries_done() -> bool:
        retry_payments(pump)
        pump.settle()
        return not PaymentInboxMessage.objects.filter(status=RETRYING).exists()

    wait_for(retries_done, timeout=10, interval=0.05, what="payments retries drained")
    # The provider is back, but the saga no longer wants the money: the retry skipped it.
    assert charges(payment_sandbox, order) == []
    [refunded] = sent_by_orders(order, "orders.payment_refunded")
    assert refunded.envelope["payload"]["refunded"] is False  # there was nothing to give back
    assert timeline(order)[-1] == ("refund_payment", "compensated")
    assert_settled_and_consistent()


def test_payment_deadline_zero_skips_the_charge_and_compensates(pump, shop, payment_sandbox, settings):
    settings.WAYBILL_SAGA_PAYMENT_SECONDS = 0
    total_before = payment_sandbox.stats()["charges"]["total"]
    order = place("KETTLE-1", 1)
    pump.settle()  # the charge command arrives after its deadline: not sent to the provider
    assert payment_sandbox.stats()["charges"]["total"] == total_before
    assert status_of(order) == S.PENDING

    wait_for(saga_expire_overdue, timeout=5, what="the payment deadline")
    pump.settle()
    assert status_of(order) == S.REJECTED and order.reason == "Payment did not complete in time."
    assert len(sent_by_orders(order, "orders.refund_payment")) == 1
    assert charges(payment_sandbox, order) == []
    assert_settled_and_consistent()


def test_reserve_deadline_compensates_and_the_late_reservation_is_released(pump, shop, settings):
    settings.WAYBILL_SAGA_RESERVE_SECONDS = 0
    order = place("LAMP-1", 2)
    pump.relay()  # ReserveStock waits on inventory's queue; inventory does not answer

    wait_for(saga_expire_overdue, timeout=5, what="the reserve deadline")
    saga = saga_of(order)
    assert (saga.state, saga.step, saga.outcome_reason) == (
        State.COMPENSATING, Step.RELEASE_STOCK, "Inventory did not answer in time.")
    assert timeline(order) == [
        ("reserve_stock", "started"), ("reserve_stock", "timed_out"), ("release_stock", "started")]
    assert status_of(order) == S.PENDING

    pump.settle()  # inventory wakes up: it reserves late, then releases
    assert Reservation.objects.get(order_id=order.id).status == Reservation.Status.RELEASED
    assert status_of(order) == S.REJECTED
    assert order.reason == "Inventory did not answer in time."
    assert saga_of(order).state == State.COMPENSATED
    assert ("release_stock", "compensated") in timeline(order)
    assert Product.objects.get(sku="LAMP-1").reserved == 0
    assert sent_by_orders(order, "orders.charge_payment") == []
    assert_settled_and_consistent()


def _orders_stopped_sweeping(seconds_ago: float, *, deadline_in: float, order: Order) -> None:
    """Orders' last sweep was ``seconds_ago`` (nothing swept since: the broker was out),
    and the saga's deadline was ``deadline_in`` seconds after that sweep."""
    SagaClock.objects.update(ticked_at=Now() - timedelta(seconds=seconds_ago))
    OrderSaga.objects.filter(order_id=order.id).update(
        deadline_at=Now() - timedelta(seconds=seconds_ago - deadline_in))


def test_an_outage_pauses_the_deadlines_so_a_late_answer_still_confirms(pump, shop, payment_sandbox):
    order = place("LAMP-1", 1)
    pump.relay()  # ReserveStock is on its way; inventory has not answered
    assert saga_expire_overdue() == 0

    # A 60-second outage began 20 s into the 30-second reserve step: by the wall clock its
    # deadline passed 50 s ago, but orders could not sweep, so saga time stood still.
    _orders_stopped_sweeping(60, deadline_in=10, order=order)
    assert saga_expire_overdue() == 0
    saga = saga_of(order)
    assert saga.state == State.RUNNING
    left = (saga.deadline_at - timezone.now()).total_seconds()
    assert 8 < left <= 10, left  # the 10 s the step still had when the outage began

    pump.settle()  # the answer arrives after the outage
    assert status_of(order) == S.CONFIRMED
    assert ("reserve_stock", "timed_out") not in timeline(order)
    assert_settled_and_consistent()


def test_time_the_platform_ran_still_counts_after_an_outage(pump, shop, settings):
    first, second = place("LAMP-1", 1), place("KETTLE-1", 1)
    pump.relay()
    assert saga_expire_overdue() == 0
    # ``first``'s deadline passed before orders stopped sweeping (an operator brought it
    # forward): the outage gives it no extra time. A short pause moves nothing either.
    saga_deadline_bring_forward(order_ids=[first.id])
    _orders_stopped_sweeping(60, deadline_in=-5, order=first)
    assert saga_expire_overdue() == 1
    assert saga_of(first).step == Step.RELEASE_STOCK

    settings.WAYBILL_SAGA_CLOCK_GAP_SECONDS = 120
    _orders_stopped_sweeping(60, deadline_in=10, order=second)
    assert saga_expire_overdue() == 1  # under the gap: an ordinary pause between sweeps
    assert saga_of(second).outcome_reason == "Inventory did not answer in time."


def test_bringing_a_deadline_forward_during_an_outage_is_not_undone_by_the_clock(pump, shop):
    order = place("LAMP-1", 1)
    pump.relay()
    assert saga_expire_overdue() == 0
    _orders_stopped_sweeping(60, deadline_in=10, order=order)
    saga_deadline_bring_forward(order_ids=[order.id])  # the operator's "compensate now", mid-outage
    assert saga_expire_overdue() == 1
    assert saga_of(order).outcome_reason == "Inventory did not answer in time."


def test_a_charge_arriving_after_an_outage_before_any_sweep_is_made_not_skipped(pump, shop, payment_sandbox):
    """After a restart the payments consumer may see the charge before orders has swept
    once: a deadline that only looks past (the outage's time not yet made up for) must not
    make it skip the charge."""
    order = place("KETTLE-1", 1)
    pump.relay()
    pump.deliver("inventory")
    pump.relay()
    pump.deliver("orders")  # stock reserved: the saga asks for the charge
    assert saga_of(order).step == Step.CHARGE_PAYMENT
    assert saga_expire_overdue() == 0
    _orders_stopped_sweeping(120, deadline_in=30, order=order)  # by the wall clock, 90 s late

    pump.relay()
    assert pump.deliver("payments") == [Outcome.APPLIED]  # before any sweep
    pump.settle()
    assert status_of(order) == S.CONFIRMED
    [charge] = charges(payment_sandbox, order)
    assert (charge["status"], charge["refunded"]) == ("succeeded", False)


def test_release_overtaking_the_late_reservation_holds_nothing(pump, shop, settings):
    settings.WAYBILL_SAGA_RESERVE_SECONDS = 0
    order = place("LAMP-1", 3)
    pump.relay()
    wait_for(saga_expire_overdue, timeout=5, what="the reserve deadline")
    pump.relay()
    waiting = take(pump, "inventory")
    [reserve] = of_type(waiting, "inventory.reserve_stock")
    [release] = of_type(waiting, "inventory.release_stock")

    assert feed(pump, "inventory", release) == Outcome.APPLIED  # leaves a tombstone
    assert feed(pump, "inventory", reserve) == Outcome.APPLIED  # which holds nothing
    assert Reservation.objects.get(order_id=order.id).status == Reservation.Status.CANCELLED
    assert Product.objects.get(sku="LAMP-1").reserved == 0
    pump.settle()
    assert status_of(order) == S.REJECTED and order.reason == "Inventory did not answer in time."
    assert_settled_and_consistent()


# --- duplicate, reordered and late messages ---------------------------------------------------
def test_duplicate_stock_reserved_charges_once(pump, shop, payment_sandbox):
    order = place("KETTLE-1", 1)
    pump.relay()
    pump.deliver("inventory")
    pump.relay()
    waiting = take(pump, "orders")
    [reserved] = of_type(waiting, "inventory.stock_reserved")
    for body in waiting:
        feed(pump, "orders", body)
    pump.publish_raw("orders", reserved)  # the broker delivers it again
    assert pump.deliver("orders") == [Outcome.DUPLICATE]
    feed_again = feed(pump, "orders", reserved)
    assert feed_again == Outcome.DUPLICATE

    assert len(sent_by_orders(order, "orders.charge_payment")) == 1
    pump.settle()
    assert status_of(order) == S.CONFIRMED
    assert len(charges(payment_sandbox, order)) == 1
    assert timeline(order).count(("charge_payment", "started")) == 1
    assert_settled_and_consistent()


def test_stock_released_nobody_asked_for_is_ignored(pump, shop, payment_sandbox):
    order = place("KETTLE-1", 2)
    pump.relay()
    pump.deliver("inventory")
    pump.relay()
    pump.deliver("orders")  # the saga now waits for the charge, stock held
    assert saga_of(order).step == Step.CHARGE_PAYMENT

    stray = {
        "id": str(uuid.uuid4()), "type": "inventory.stock_released", "schema_version": 1,
        "aggregate_id": str(order.id), "aggregate_version": 99, "occurred_at": timezone.now().isoformat(),
        "correlation_id": str(uuid.uuid4()), "causation_id": None, "traceparent": None,
        "payload": {"order_id": str(order.id), "lines": [{"sku": "KETTLE-1", "quantity": 2}]},
    }
    pump.publish_raw("orders", json.dumps(stray))
    assert pump.deliver("orders") == [Outcome.APPLIED]  # applied, and changes nothing
    saga = saga_of(order)
    assert (saga.state, saga.step) == (State.RUNNING, Step.CHARGE_PAYMENT)
    assert status_of(order) == S.PENDING
    assert Product.objects.get(sku="KETTLE-1").reserved == 2

    pump.settle()
    assert status_of(order) == S.CONFIRMED
    assert_settled_and_consistent()


def test_payment_charged_after_the_saga_compensated_is_refunded(pump, shop, payment_sandbox):
    order = place("KETTLE-1", 1)
    pump.relay()
    pump.deliver("inventory")
    pump.relay()
    pump.deliver("orders")
    pump.relay()
    pump.deliver("payments")  # the provider takes the money ...
    pump.relay()
    held = take(pump, "orders")  # ... but the news is slow to reach the saga
    [charged] = of_type(held, "orders.payment_charged")

    deadline_passes(order)
    assert saga_expire_overdue() == 1
    pump.settle()
    assert saga_of(order).state == State.COMPENSATED
    assert status_of(order) == S.REJECTED

    assert feed(pump, "orders", charged) == Outcome.APPLIED
    refunds = sent_by_orders(order, "orders.refund_payment")
    assert [r.envelope["payload"]["reason"] for r in refunds] == [
        "payment step timed out", "charged after the saga ended"]
    late = saga_of(order).timeline.filter(step="charge_payment", event="compensated").last()
    assert late.message_id == refunds[1].message_id and late.reason.startswith("late charge ch_")
    for body in held:
        if body != charged:
            feed(pump, "orders", body)
    pump.settle()
    assert status_of(order) == S.REJECTED
    [charge] = charges(payment_sandbox, order)
    assert (charge["status"], charge["refunded"]) == ("succeeded", True)
    assert_settled_and_consistent()


def test_cancelling_a_confirmed_order_releases_the_stock_and_refunds(pump, shop, payment_sandbox):
    order = place("KETTLE-1", 3)
    pump.settle()
    assert status_of(order) == S.CONFIRMED
    assert Product.objects.get(sku="KETTLE-1").reserved == 3

    services.order_cancel(order_id=order.id, customer_id=CUSTOMER)
    assert saga_of(order).state == State.COMPLETED  # the saga ended; choreography does the rest
    pump.settle()
    assert status_of(order) == S.CANCELLED
    assert Product.objects.get(sku="KETTLE-1").reserved == 0
    assert Reservation.objects.get(order_id=order.id).status == Reservation.Status.RELEASED
    [charge] = charges(payment_sandbox, order)
    assert (charge["status"], charge["refunded"]) == ("succeeded", True)
    [refunded] = sent_by_orders(order, "orders.payment_refunded")
    assert refunded.envelope["payload"]["refunded"] is True
    assert_settled_and_consistent()


def test_cancelling_while_the_charge_is_waiting_stops_the_saga(pump, shop, payment_sandbox):
    payment_sandbox.configure(outage=True)
    order = place("KETTLE-1", 1)
    pump.settle()
    assert saga_of(order).step == Step.CHARGE_PAYMENT
    services.order_cancel(order_id=order.id, customer_id=CUSTOMER)
    assert (saga_of(order).state, saga_of(order).outcome_reason) == (State.COMPENSATED, "Cancelled by the customer.")
    payment_sandbox.configure(outage=False)

    def retries_done() -> bool:
        retry_payments(pump)
        pump.settle()
        return not PaymentInboxMessage.objects.filter(status=RETRYING).exists()

    wait_for(retries_done, timeout=10, interval=0.05, what="payments retries drained")
    assert status_of(order) == S.CANCELLED
    assert charges(payment_sandbox, order) == []  # the retried charge saw the saga had stopped
    assert_settled_and_consistent()


def test_a_charge_landing_after_the_timeout_refund_is_still_refunded(pump, shop, payment_sandbox, monkeypatch):
    """The payments worker checked that the saga still wanted the charge; while its HTTP
    call is on the way, the deadline passes on another process, the saga compensates and
    the timeout refund runs first (nothing to refund yet). Then the charge lands. The
    saga's late-charge refund must give the money back. (Regression: refunds were keyed
    by order, so the provider replayed the first "nothing to refund" for the second.)"""
    order = place("KETTLE-1", 1)
    pump.relay()
    pump.deliver("inventory")
    pump.relay()
    pump.deliver("orders")
    pump.relay()  # ChargePayment waits on the payments queue
    client = payments._client()
    real_post = client.post
    interleaved = []

    def post(url, *args, **kwargs):
        if url.endswith("/v1/charges") and not interleaved:
            interleaved.append(url)
            # Meanwhile, elsewhere: the deadline passes and the timeout refund runs first.
            deadline_passes(order)
            assert saga_expire_overdue() == 1
            pump.relay()
            assert Outcome.APPLIED in pump.deliver("payments")
        return real_post(url, *args, **kwargs)

    monkeypatch.setattr(client, "post", post)
    pump.deliver("payments")  # the charge lands after the refund
    monkeypatch.undo()
    assert interleaved
    pump.settle()

    assert status_of(order) == S.REJECTED
    assert len(sent_by_orders(order, "orders.refund_payment")) == 2  # the saga did ask again
    [charge] = charges(payment_sandbox, order)
    assert charge["status"] == "succeeded"
    assert charge["refunded"], "the late charge was never refunded"
