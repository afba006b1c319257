"""What orders shows machines (Prometheus, through the kernel's ``waybill.metrics``): its
sagas by state and the payment provider's circuit breaker, read at each scrape in every
process that hosts orders (the manifest names ``COLLECTORS``)."""

from __future__ import annotations

from collections.abc import Iterable

import pybreaker
from django.db.models import Count
from prometheus_client.core import GaugeMetricFamily, Metric

from . import payments
from .models import OrderSaga

# pybreaker's states as numbers a graph can draw and an alert compare: the worse, the higher.
BREAKER_STATES = {pybreaker.STATE_CLOSED: 0, pybreaker.STATE_HALF_OPEN: 1, pybreaker.STATE_OPEN: 2}


class SagasCollector:
    """``waybill_sagas{state}``: how many order sagas are in each state, every state shown
    (0 too), so a graph of "compensating" starts at zero rather than at its first saga."""

    @staticmethod
    def _family() -> GaugeMetricFamily:
        return GaugeMetricFamily("waybill_sagas", "Order sagas by state.", labels=("state",))

    def describe(self) -> Iterable[Metric]:
        return [self._family()]

    def collect(self) -> Iterable[Metric]:
        # One GROUP BY over the (state, deadline_at) index; order_by() drops the model's
        # ordering, which would otherwise be grouped by too.
        counts = dict(OrderSaga.objects.using(payments.DB).order_by().values_list("state")
                      .annotate(sagas=Count("order_id")))
        family = self._family()
        for state in OrderSaga.State.values:
            family.add_metric([state], counts.get(state, 0))
        return [family]


class PaymentBreakerCollector:
    """``waybill_payment_breaker_state{name}``: 0 closed, 1 half-open, 2 open. The breaker
    this process would call through: in services mode its state is shared in Redis by every
    payments worker, so any orders process tells the same; embedded, it is the process's own."""

    @staticmethod
    def _family() -> GaugeMetricFamily:
        return GaugeMetricFamily("waybill_payment_breaker_state", "The payment provider's circuit breaker: "
                                 "0 closed, 1 half-open, 2 open.", labels=("name",))

    def describe(self) -> Iterable[Metric]:
        return [self._family()]

    def collect(self) -> Iterable[Metric]:
        breaker = payments.breaker()
        family = self._family()
        family.add_metric([breaker.name], BREAKER_STATES[breaker.current_state])
        return [family]


COLLECTORS = (SagasCollector(), PaymentBreakerCollector())
