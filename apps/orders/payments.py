"""Orders' payments consumer: charges and refunds at the external payment provider.

It is a bulkhead: its own queue (``waybill.payments``), inbox and workers (a thread of its
own embedded, a Celery worker of its own in services mode), so a slow or failing provider
cannot hold up stock reservation or anything else orders does.

Every call carries an idempotency key derived from the order, so a retried charge never
charges twice, and runs outside any database transaction (``ExternalCall``). A circuit
breaker (pybreaker) stops calling a provider that keeps failing or timing out; while it is
open, charges fail fast and are retried with backoff from the inbox, and the saga's
deadline decides when to give up.
"""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass
from functools import cache

import httpx
import pybreaker
from django.conf import settings
from django.db.models.functions import Now

from waybill.api import Envelope, ExternalCall, PermanentFailure, outbox_record

from . import contracts
from .models import CircuitState, OrderSaga
from .saga import saga_clock_tick

log = logging.getLogger(__name__)
DB = "orders"
BREAKER = "payment-provider"


class PaymentUnavailable(Exception):
    """The provider is down, slow or fenced off by the breaker: try again later."""


@dataclass(frozen=True)
class ChargeResult:
    succeeded: bool
    charge_id: str = ""
    decline_code: str = ""
    skipped: bool = False  # the saga no longer wants this charge


class _RecordState(pybreaker.CircuitBreakerListener):
    """Keeps the breaker's state in the orders database, where the admin shows it."""

    def state_change(self, cb, old_state, new_state):
        log.warning("payment provider circuit %s -> %s", old_state.name if old_state else None, new_state.name)
        # new_state, not cb.current_state: the breaker switches over after telling us.
        _record_state(cb, state=new_state.name)

    def failure(self, cb, exc):
        _record_state(cb, state=cb.current_state)


def _record_state(cb: pybreaker.CircuitBreaker, *, state: str) -> None:
    CircuitState.objects.using(DB).update_or_create(
        name=BREAKER,
        defaults={"state": state, "failures": cb.fail_counter, "changed_at": Now(),
                  "process": f"{socket.gethostname()}:{os.getpid()}"},
    )


@cache
def breaker() -> pybreaker.CircuitBreaker:
    storage = None
    if settings.WAYBILL_REDIS_URL:
        # Shared by every payments worker: one opens it for all.
        import redis

        storage = pybreaker.CircuitRedisStorage(
            pybreaker.STATE_CLOSED, redis.Redis.from_url(settings.WAYBILL_REDIS_URL), namespace="waybill"
        )
    return pybreaker.CircuitBreaker(
        name=BREAKER,
        fail_max=settings.WAYBILL_PAYMENT_BREAKER_FAILURES,
        reset_timeout=settings.WAYBILL_PAYMENT_BREAKER_RESET_SECONDS,
        state_storage=storage,
        listeners=[_RecordState()],
    )


@cache
def _client() -> httpx.Client:
    # One pooled client per process: httpx.post() builds a client and an SSL context on
    # every call, about 23 ms of CPU per charge (bench/pipeline's profile).
    return httpx.Client()


def _post(path: str, body: dict, *, idempotency_key: str) -> dict:
    """One call to the provider through the breaker. Timeouts and 5xx count as failures."""

    def call() -> dict:
        headers = {"Idempotency-Key": idempotency_key}
        if settings.WAYBILL_PAYMENT_API_KEY:
            headers["Authorization"] = f"Bearer {settings.WAYBILL_PAYMENT_API_KEY}"
        response = _client().post(f"{settings.WAYBILL_PAYMENT_GATEWAY_URL}{path}", json=body, headers=headers,
                                  timeout=settings.WAYBILL_PAYMENT_TIMEOUT_SECONDS)
        if response.status_code >= 500:
            raise PaymentUnavailable(f"provider answered {response.status_code}")
        if response.status_code >= 400:
            # Our request is wrong; no retry can fix it. Not the provider's failure either.
            return {"_refused": f"{response.status_code} {response.text[:500]}"}
        return response.json()

    try:
        answer = breaker().call(call)
    except pybreaker.CircuitBreakerError as exc:
        raise PaymentUnavailable(f"circuit open: {exc}") from None
    except httpx.HTTPError as exc:
        raise PaymentUnavailable(f"{type(exc).__name__}: {exc}") from None
    if "_refused" in answer:
        raise PermanentFailure(f"payment provider refused the request: {answer['_refused']}")
    return answer


# --- charge ----------------------------------------------------------------------------------
def _saga_waits_for_charge(order_id) -> bool:
    return OrderSaga.objects.using(DB).filter(
        order_id=order_id, state=OrderSaga.State.RUNNING, step=OrderSaga.Step.CHARGE_PAYMENT,
        deadline_at__gte=Now(),  # past it, the saga is about to compensate: charging would only mean a refund
    ).exists()


def _charge(envelope: Envelope, command: contracts.ChargePayment) -> ChargeResult:
    # A deadline that looks past may only be waiting for the saga clock to make up for an
    # outage (after a restart this consumer can run before, or during, the first sweep):
    # tick it, then ask again.
    waiting = _saga_waits_for_charge(command.order_id)
    if not waiting:
        saga_clock_tick()
        waiting = _saga_waits_for_charge(command.order_id)
    if not waiting:
        return ChargeResult(succeeded=False, skipped=True)  # gave up meanwhile: do not charge
    answer = _post("/v1/charges", {"amount": f"{command.amount:.2f}", "currency": command.currency,
                                   "reference": str(command.order_id)},
                   idempotency_key=f"charge-{command.order_id}")
    return ChargeResult(succeeded=answer["status"] == "succeeded", charge_id=answer["id"],
                        decline_code=answer.get("decline_code") or "")


def _record_charge(envelope: Envelope, command: contracts.ChargePayment, result: ChargeResult) -> None:
    if result.skipped:
        return
    if result.succeeded:
        message = contracts.PaymentCharged(order_id=command.order_id, charge_id=result.charge_id, amount=command.amount)
    else:
        message = contracts.PaymentDeclined(order_id=command.order_id, reason=result.decline_code.replace("_", " "))
    outbox_record(context="orders", message=message, aggregate_id=str(command.order_id),
                  aggregate_version=envelope.aggregate_version)


# --- refund ----------------------------------------------------------------------------------
def _refund(envelope: Envelope, message: contracts.RefundPayment | contracts.OrderCancelled) -> dict:
    # Keyed by the request (the message), not the order: a redelivery repeats harmlessly,
    # while a later refund request (a charge that landed after the first refund found
    # nothing) is a new request and gives that charge back too.
    return _post("/v1/refunds", {"reference": str(message.order_id)},
                 idempotency_key=f"refund-{message.order_id}-{envelope.id}")


def _record_refund(envelope: Envelope, message, answer: dict) -> None:
    outbox_record(
        context="orders",
        message=contracts.PaymentRefunded(order_id=message.order_id, refund_id=answer["id"],
                                          refunded=answer["status"] == "refunded"),
        aggregate_id=str(message.order_id), aggregate_version=envelope.aggregate_version,
    )


HANDLERS = {
    contracts.ChargePayment: ExternalCall(call=_charge, record=_record_charge),
    contracts.RefundPayment: ExternalCall(call=_refund, record=_record_refund),
    # Choreography: a cancelled order's money goes back without anyone orchestrating it.
    contracts.OrderCancelled: ExternalCall(call=_refund, record=_record_refund),
}


