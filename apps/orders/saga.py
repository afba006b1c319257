"""The order saga (orchestration): reserve stock -> charge payment -> confirm the order.

A failed step compensates the steps before it in reverse: payment declined -> stock
released -> order REJECTED with the reason. Every step has a deadline in database time;
``saga_expire_overdue`` (run about every second by whichever process hosts orders, while
it is connected to the bus) compensates a step that missed it, so a saga ends across
restarts (invariant 5). Deadlines count only time in which orders was running: a broker
outage or a stopped deployment pauses them (``SagaClock``), so an outage of the
infrastructure never rejects an order for lack of an answer.

Each function here is one transaction on the orders database that locks the saga row,
checks that the message is the one the current step waits for, moves the saga on and
records the next command through the outbox. A duplicate, late or reordered message
finds the saga elsewhere and changes nothing, or compensates what it reports (a charge
that succeeded after the saga gave up is refunded).
"""

from __future__ import annotations

import logging
from datetime import timedelta
from uuid import UUID

from django.conf import settings
from django.db import transaction
from django.db.models import F, Subquery
from django.db.models.functions import Coalesce, Least, Now

from apps.inventory import contracts as inventory
from waybill.api import Envelope, Message, outbox_record

from . import contracts
from .models import Order, OrderSaga, SagaClock, SagaStep
from .transitions import order_confirm, order_get_locked, order_reject

log = logging.getLogger(__name__)
DB = "orders"
State, Step, Event = OrderSaga.State, OrderSaga.Step, SagaStep.Event


def _deadline(step: str):
    seconds = {
        Step.RESERVE_STOCK: settings.WAYBILL_SAGA_RESERVE_SECONDS,
        Step.CHARGE_PAYMENT: settings.WAYBILL_SAGA_PAYMENT_SECONDS,
        Step.RELEASE_STOCK: settings.WAYBILL_SAGA_RELEASE_SECONDS,
    }[step]
    return Now() + timedelta(seconds=seconds)


def _send(saga: OrderSaga, message: Message) -> Envelope:
    return outbox_record(context="orders", message=message, aggregate_id=str(saga.order_id),
                         aggregate_version=saga.version)


def _note(saga: OrderSaga, event: str, *, step: str | None = None, reason: str = "",
          sent: Envelope | None = None) -> None:
    SagaStep.objects.using(DB).create(
        saga=saga, step=step or saga.step, event=event, reason=reason,
        message_id=sent.id if sent else None, message_type=sent.type if sent else "",
    )


def _move(saga: OrderSaga, *, state: str | None = None, step: str | None = None, **fields) -> None:
    """Save the saga in its new place, with a fresh deadline for a new waiting step."""
    if state:
        saga.state = state
    if step and step != saga.step:
        saga.step, saga.attempts = step, 1
    terminal = saga.state in OrderSaga.TERMINAL
    saga.deadline_at = None if terminal else _deadline(saga.step)
    saga.version += 1
    saga.updated_at = Now()
    for name, value in fields.items():
        setattr(saga, name, value)
    # The database's clock, not this process's: Django (6.1+) reads the expressions back
    # with the UPDATE's RETURNING, so the saga holds real times without a second query.
    saga.save(using=DB)


def _locked(order_id: UUID) -> OrderSaga | None:
    return OrderSaga.objects.using(DB).select_for_update().filter(order_id=order_id).first()


def saga_lock(*, order_id: UUID) -> None:
    """Lock the saga's row in the caller's transaction. Whoever changes an order and its
    saga together locks the saga first, then the order, so two of them never deadlock."""
    _locked(order_id)


def _release_stock(saga: OrderSaga, *, reason: str, event: str = Event.FAILED) -> None:
    """Begin compensating: give back the stock (the order is rejected once it is back)."""
    _note(saga, event, reason=reason)
    _move(saga, state=State.COMPENSATING, step=Step.RELEASE_STOCK, outcome_reason=reason)
    _note(saga, Event.STARTED, sent=_send(saga, inventory.ReleaseStock(order_id=saga.order_id)))


# --- start -----------------------------------------------------------------------------------
def saga_start(*, order: Order) -> OrderSaga:
    """Called inside ``order_place``'s transaction: the saga commits with the order."""
    saga = OrderSaga(order_id=order.id, step=Step.RESERVE_STOCK, deadline_at=_deadline(Step.RESERVE_STOCK))
    saga.save(using=DB, force_insert=True)
    command = inventory.ReserveStock(
        order_id=order.id,
        lines=[inventory.StockLine(sku=line.sku, quantity=line.quantity) for line in order.lines.all()],
    )
    _note(saga, Event.STARTED, sent=_send(saga, command))
    return saga


# --- answers from inventory -------------------------------------------------------------------
def saga_on_stock_reserved(*, order_id: UUID) -> None:
    with transaction.atomic(using=DB):
        saga = _locked(order_id)
        if saga is None:
            return
        if saga.state == State.RUNNING and saga.step == Step.RESERVE_STOCK:
            _note(saga, Event.FINISHED)
            order = order_get_locked(order_id=order_id)
            _move(saga, step=Step.CHARGE_PAYMENT)
            command = contracts.ChargePayment(order_id=order_id, amount=order.total, currency=order.currency)
            _note(saga, Event.STARTED, sent=_send(saga, command))
        elif saga.state == State.COMPENSATED or saga.step == Step.RELEASE_STOCK:
            # Stock was held after the saga gave up (deadline or cancellation): give it back.
            _note(saga, Event.COMPENSATED, step=Step.RESERVE_STOCK, reason="stock held after the saga ended",
                  sent=_send(saga, inventory.ReleaseStock(order_id=order_id)))


def saga_on_stock_reservation_rejected(*, order_id: UUID, reason: str) -> None:
    with transaction.atomic(using=DB):
        saga = _locked(order_id)
        if saga is None or not (saga.state == State.RUNNING and saga.step == Step.RESERVE_STOCK):
            return
        _note(saga, Event.FAILED, reason=reason)
        order_reject(order_id=order_id, reason=reason)
        _move(saga, state=State.COMPENSATED, step=Step.DONE, outcome_reason=reason)  # nothing held


def saga_on_stock_released(*, order_id: UUID) -> None:
    with transaction.atomic(using=DB):
        saga = _locked(order_id)
        if saga is None or not (saga.state == State.COMPENSATING and saga.step == Step.RELEASE_STOCK):
            return
        _note(saga, Event.COMPENSATED)
        order_reject(order_id=order_id, reason=saga.outcome_reason)
        _move(saga, state=State.COMPENSATED, step=Step.DONE)


# --- answers from the payments consumer -----------------------------------------------------
def saga_on_payment_charged(*, order_id: UUID, charge_id: str) -> None:
    with transaction.atomic(using=DB):
        saga = _locked(order_id)
        if saga is None:
            return
        if saga.state == State.RUNNING and saga.step == Step.CHARGE_PAYMENT:
            _note(saga, Event.FINISHED, reason=f"charge {charge_id}")
            order_confirm(order_id=order_id)
            _move(saga, state=State.COMPLETED, step=Step.DONE)
        elif saga.state != State.COMPLETED:
            # The provider took the money after the saga gave up on it: give it back.
            command = contracts.RefundPayment(order_id=order_id, reason="charged after the saga ended")
            _note(saga, Event.COMPENSATED, step=Step.CHARGE_PAYMENT, reason=f"late charge {charge_id}",
                  sent=_send(saga, command))


def saga_on_payment_declined(*, order_id: UUID, reason: str) -> None:
    with transaction.atomic(using=DB):
        saga = _locked(order_id)
        if saga is None or not (saga.state == State.RUNNING and saga.step == Step.CHARGE_PAYMENT):
            return
        _release_stock(saga, reason=f"Payment declined: {reason}.")


def saga_on_payment_refunded(*, order_id: UUID, refund_id: str, refunded: bool) -> None:
    """Note a refund on the timeline, whoever asked for it (the saga or a cancellation)."""
    with transaction.atomic(using=DB):
        saga = _locked(order_id)
        if saga is None:
            return
        _note(saga, Event.COMPENSATED, step="refund_payment",
              reason=f"refund {refund_id}" if refunded else "nothing to refund")


def saga_on_order_cancelled(*, order_id: UUID) -> None:
    """The customer cancelled (inside ``order_cancel``'s transaction). Inventory and the
    payments consumer react to the cancellation event themselves (choreography); the saga
    only stops waiting."""
    saga = _locked(order_id)
    if saga is None or saga.is_terminal:
        return
    _note(saga, Event.COMPENSATED, reason="cancelled by the customer")
    _move(saga, state=State.COMPENSATED, step=Step.DONE, outcome_reason="Cancelled by the customer.")


# --- deadlines ---------------------------------------------------------------------------------
def saga_expire_overdue(*, limit: int = 100) -> int:
    """Compensate every saga step past its deadline (database time), after moving the
    deadlines on by any time orders was not sweeping (``saga_clock_tick``). Safe to run
    in several processes at once: each saga is claimed with SKIP LOCKED on PostgreSQL."""
    saga_clock_tick()
    expired = 0
    with transaction.atomic(using=DB):
        overdue = list(
            OrderSaga.objects.using(DB)
            .select_for_update(skip_locked=True)
            .filter(state__in=(State.RUNNING, State.COMPENSATING), deadline_at__lt=Now())
            .order_by("deadline_at")[:limit]
        )
        for saga in overdue:
            try:
                with transaction.atomic(using=DB):  # one saga's failure must not undo the others
                    _expire(saga)
                expired += 1
            except Exception:
                log.exception("could not expire saga %s; trying again at the next sweep", saga.order_id)
    return expired


def saga_clock_tick() -> timedelta:
    """Note that orders is sweeping now; if the last sweep is longer ago than
    ``WAYBILL_SAGA_CLOCK_GAP_SECONDS``, nobody could sweep in between (the broker was
    unreachable, so every orders consumer was disconnected, or no orders process ran), and
    every open deadline moves on by the whole gap. Returns the pause it made up for.

    One row, locked: of several sweepers that see the same gap, the first moves the
    deadlines and the others find a fresh tick."""
    with transaction.atomic(using=DB):
        clock, created = SagaClock.objects.using(DB).select_for_update().get_or_create(pk=1)
        if created:
            return timedelta(0)
        ticked_at, now = (SagaClock.objects.using(DB).filter(pk=clock.pk)
                          .annotate(now=Now()).values_list("ticked_at", "now").get())
        gap = now - ticked_at
        if gap > timedelta(seconds=settings.WAYBILL_SAGA_CLOCK_GAP_SECONDS):
            # Only deadlines still to come when sweeping stopped: one due before that was
            # due while orders ran (or was brought forward by an operator, see below).
            moved = (OrderSaga.objects.using(DB)
                     .filter(state__in=(State.RUNNING, State.COMPENSATING), deadline_at__gt=ticked_at)
                     .update(deadline_at=F("deadline_at") + gap))
            log.warning("saga clock: orders could not sweep for %.1f s (broker unreachable or no orders "
                        "process running); %d open deadlines moved on by that time", gap.total_seconds(), moved)
        else:
            gap = timedelta(0)
        SagaClock.objects.using(DB).filter(pk=clock.pk).update(ticked_at=Now())
    return gap


def _expire(saga: OrderSaga) -> None:
    if saga.step == Step.RESERVE_STOCK:
        _release_stock(saga, reason="Inventory did not answer in time.", event=Event.TIMED_OUT)
    elif saga.step == Step.CHARGE_PAYMENT:
        # The charge may yet go through: refund whatever it took, and give the stock back.
        refund = contracts.RefundPayment(order_id=saga.order_id, reason="payment step timed out")
        _note(saga, Event.COMPENSATED, sent=_send(saga, refund))
        _release_stock(saga, reason="Payment did not complete in time.", event=Event.TIMED_OUT)
    elif saga.step == Step.RELEASE_STOCK:
        # The compensation itself is overdue: ask again (release is idempotent).
        _note(saga, Event.TIMED_OUT, reason="no answer to release_stock; asking again")
        OrderSaga.objects.using(DB).filter(pk=saga.pk).update(attempts=F("attempts") + 1)
        saga.refresh_from_db(fields=["attempts"])
        _move(saga)
        _note(saga, Event.STARTED, sent=_send(saga, inventory.ReleaseStock(order_id=saga.order_id)))


def saga_deadline_bring_forward(*, order_ids: list[UUID]) -> int:
    """An operator's "compensate now": the open sagas' deadlines become now, and the next
    sweep compensates them like any overdue step."""
    # Due before the last sweep, too, so that a pause of the saga clock (saga_clock_tick)
    # never moves it on again. A second back: "now" has millisecond precision on SQLite,
    # and the sweep asks "<".
    last_sweep = Coalesce(Subquery(SagaClock.objects.using(DB).values("ticked_at")[:1]), Now())
    return (
        OrderSaga.objects.using(DB)
        .filter(order_id__in=order_ids, state__in=(State.RUNNING, State.COMPENSATING))
        .update(deadline_at=Least(Now(), last_sweep) - timedelta(seconds=1), updated_at=Now())
    )
