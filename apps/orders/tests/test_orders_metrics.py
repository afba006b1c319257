"""What orders shows machines: sagas counted by state (every state, zeros too) and the
payment provider's breaker as 0 closed, 1 half-open, 2 open, read at each scrape."""

from __future__ import annotations

import uuid

import pytest

from apps.orders import payments
from apps.orders.models import OrderSaga
from tests.support.scrape import Scrape
from waybill import metrics

pytestmark = pytest.mark.django_db(databases="__all__")

State = OrderSaga.State


@pytest.fixture(autouse=True)
def fresh_breaker():
    payments.breaker.cache_clear()
    yield
    payments.breaker.cache_clear()


def scrape() -> Scrape:
    return Scrape(metrics.exposition()[0].decode())


def test_sagas_are_counted_by_state_and_every_state_is_shown():
    for state in (State.RUNNING, State.RUNNING, State.COMPENSATED):
        OrderSaga.objects.create(order_id=uuid.uuid4(), state=state, step=OrderSaga.Step.RESERVE_STOCK)
    scraped = scrape()
    assert {state: scraped.value("waybill_sagas", state=state) for state in State.values} == {
        "running": 2, "compensating": 0, "completed": 0, "compensated": 1}


def test_the_breaker_state_is_a_number_an_alert_can_compare():
    breaker = payments.breaker()

    def state() -> float:
        return scrape().value("waybill_payment_breaker_state", name=payments.BREAKER)

    assert state() == 0
    breaker.open()
    assert state() == 2
    breaker.half_open()
    assert state() == 1
    breaker.close()
    assert state() == 0
