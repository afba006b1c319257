"""A broker outage is not a business failure: RabbitMQ stops for 60 seconds in the middle
of a burst of orders, with the platform's own saga deadlines (30 s to reserve stock), and
every order completes once it is back, none rejected for lack of an answer, none lost or
applied twice. The web services keep taking orders meanwhile (they wait, committed, in the
outbox), and the saga clock (apps/orders/saga.py) pauses the deadlines while orders cannot
sweep."""

from __future__ import annotations

import threading
import time

import pytest

from .support import assert_applied_once, place, product, query, wait_confirmed

pytestmark = pytest.mark.xdist_group("services")
OUTAGE_SECONDS = 60.0
# The load while the broker is out: an order every this many seconds.
PACE_SECONDS = 1.0
# The suite's deployment runs with 900-second saga deadlines (tests/conftest.py); this test
# needs the platform's own, shorter than the outage.
SAGA_DEADLINES = ("WAYBILL_SAGA_RESERVE_SECONDS", "WAYBILL_SAGA_PAYMENT_SECONDS", "WAYBILL_SAGA_RELEASE_SECONDS")
# The processes that set deadlines: orders-web starts a saga, orders-worker moves it on.
DEADLINE_SETTERS = ("orders-web", "orders-worker")


@pytest.fixture
def default_deadlines(services_deployment):
    deployment = services_deployment
    overridden = {name: deployment.stack.extra.pop(name) for name in SAGA_DEADLINES}
    try:
        for name in DEADLINE_SETTERS:
            deployment.restart(name)
        yield deployment
    finally:
        deployment.stack.extra.update(overridden)
        for name in DEADLINE_SETTERS:
            deployment.restart(name)


@pytest.fixture
def tokens(services_deployment):
    return {user: services_deployment.token(user) for user in ("alice", "admin")}


def test_a_60_second_broker_outage_during_a_burst_rejects_no_order(default_deadlines, tokens, rabbitmq):
    deployment = default_deadlines
    sku = product(deployment, tokens, on_hand=1000)
    readmodels = deployment.stack.database_urls["readmodels"]

    before = place(deployment, tokens, sku, 20)  # in flight when the broker goes
    rabbitmq.stop()
    outage_began = time.monotonic()
    during: list[str] = []
    pace = threading.Event()  # never set: the load generator's pause between orders
    try:
        while time.monotonic() - outage_began < OUTAGE_SECONDS:
            during.extend(place(deployment, tokens, sku, 1))
            pace.wait(PACE_SECONDS)
    finally:
        rabbitmq.start()
    outage = time.monotonic() - outage_began
    assert outage >= OUTAGE_SECONDS and len(during) >= 30, (outage, len(during))

    order_ids = before + during
    wait_confirmed(deployment, order_ids)
    rejected = query(readmodels, "SELECT count(*) FROM readmodels_ordersummary WHERE status = 'REJECTED' "
                                  "AND order_id = ANY(%s::uuid[])", (order_ids,))
    assert rejected == [(0,)]
    assert_applied_once(deployment, sku, order_ids)
    # The orders placed before the outage were 30 s from their deadline by the wall clock
    # when it began: they are confirmed because the saga clock paused, not by luck.
    assert "saga clock: orders could not sweep" in deployment.log_tail("orders-worker", lines=10_000)
