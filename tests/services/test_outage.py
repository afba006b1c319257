"""Outages of the infrastructure, on the services deployment.

A broker outage is not a business failure: RabbitMQ stops for 60 seconds in the middle of a
burst of orders, with the platform's own saga deadlines (30 s to reserve stock), and every
order completes once it is back, none rejected for lack of an answer, none lost or applied
twice. The web services keep taking orders meanwhile (they wait, committed, in the outbox),
and the saga clock (apps/orders/saga.py) pauses the deadlines while orders cannot sweep.

A database restart loses nothing either: requests meanwhile get a 503 and are retried by
their clients with the same Idempotency-Key, every process rides it out (same pids), and
every accepted order completes once."""

from __future__ import annotations

import time
import uuid

import httpx
import pytest

from launcher.polling import wait_for

from .support import assert_applied_once, in_history, place, product, query, wait_confirmed

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


def test_a_60_second_broker_outage_during_a_burst_rejects_no_order(default_deadlines, tokens, rabbitmq, on_the_broker):
    deployment = default_deadlines
    sku = product(deployment, tokens, on_hand=1000)
    readmodels = deployment.stack.database_urls["readmodels"]

    before = place(deployment, tokens, sku, 20)  # in flight when the broker goes
    rabbitmq.stop()
    outage_began = time.monotonic()
    during: list[str] = []
    try:
        while time.monotonic() - outage_began < OUTAGE_SECONDS:
            during.extend(place(deployment, tokens, sku, 1))
            time.sleep(PACE_SECONDS)  # the load's pace, not a wait for anything
    finally:
        rabbitmq.start()
    assert len(during) >= 30, f"only {len(during)} orders placed during the outage"

    order_ids = before + during
    wait_confirmed(deployment, order_ids)
    rejected = query(readmodels, "SELECT count(*) FROM readmodels_ordersummary WHERE status = 'REJECTED' "
                                  "AND order_id = ANY(%s::uuid[])", (order_ids,))
    assert rejected == [(0,)]
    assert_applied_once(deployment, sku, order_ids)
    # The event history outlived the broker's restart: it has every order's placement, of
    # those published before the outage too.
    assert in_history(order_ids) == set(order_ids)
    # The orders placed before the outage were 30 s from their deadline by the wall clock
    # when it began: they are confirmed because the saga clock paused, not by luck.
    # Whichever orders consumer swept first after the outage (the payments consumer ticks
    # the clock too, before it skips a charge that looks late).
    assert "saga clock: orders could not sweep" in (
        deployment.log_tail("orders-worker", lines=10_000) + deployment.log_tail("orders-payments-worker", lines=10_000))


def _place_until_accepted(deployment, tokens, sku: str, key: str, give_up_after: float) -> str:
    """What a client does while the database is away: the same request with the same
    Idempotency-Key until it is accepted (202). Anything but 202 or a 503 is a failure."""
    with deployment.client("alice") as alice:
        def accepted():
            try:
                response = alice.post("/api/v1/orders/", json={"lines": [{"sku": sku, "quantity": 1}]},
                                      headers={"Idempotency-Key": key})
            except httpx.TransportError:
                return None
            assert response.status_code in (202, 503), (response.status_code, response.text[:300])
            assert response.headers["content-type"].startswith("application/json"), response.text[:300]
            return response.json()["id"] if response.status_code == 202 else None

        return wait_for(accepted, give_up_after, f"order {key} to be accepted")


def test_a_database_restart_during_a_burst_loses_nothing_and_no_process_dies(services_deployment, tokens, postgres):
    deployment = services_deployment
    sku = product(deployment, tokens, on_hand=1000)
    pids = deployment.pids()
    before = place(deployment, tokens, sku, 20)

    alice = deployment.client("alice")  # signed in while signing in works
    postgres.stop()
    try:
        # While it is away the web services refuse with a 503 in JSON (once the connection
        # pool has waited for it); nothing is half done.
        with alice:
            response = alice.post("/api/v1/orders/", json={"lines": [{"sku": sku, "quantity": 1}]})
        assert response.status_code == 503, (response.status_code, response.text[:300])
        assert response.headers["content-type"].startswith("application/json")
    finally:
        postgres.start()
    after = [_place_until_accepted(deployment, tokens, sku, f"db-restart-{uuid.uuid4()}", 60) for _ in range(20)]

    order_ids = before + after
    wait_confirmed(deployment, order_ids)
    assert_applied_once(deployment, sku, order_ids)
    assert deployment.pids() == pids
    assert set(deployment.states().values()) == {"RUNNING"}
