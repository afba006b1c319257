"""The kernel's scheduler: each job runs when due and not before, at its own interval; one
job's failure is logged and never stops the others; and each process runs exactly the
periodic work of the consumers it hosts."""

from __future__ import annotations

import logging
import threading
from decimal import Decimal

import pytest

from apps.inventory import services as inventory
from apps.inventory.models import OutboxMessage as InventoryOutbox
from waybill import contexts
from waybill.consumer import ContextConsumer
from waybill.scheduler import Job, Scheduler, jobs_for, scheduler_for


class Clock:
    """A monotonic clock that moves only when told to."""

    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _counting(name: str, every: float, calls: list[str]) -> Job:
    return Job(name, lambda: calls.append(name), every)


def test_a_job_runs_at_the_first_tick_then_once_per_interval():
    clock, calls = Clock(), []
    scheduler = Scheduler([_counting("tick", 5.0, calls)], clock=clock)
    scheduler.run_due()
    assert calls == ["tick"]
    clock.now += 4.9
    scheduler.run_due()
    assert calls == ["tick"]  # not due yet
    assert scheduler.seconds_to_next() == pytest.approx(0.1)
    clock.now += 0.1
    scheduler.run_due()
    assert calls == ["tick", "tick"]


def test_each_job_keeps_its_own_interval():
    clock, calls = Clock(), []
    scheduler = Scheduler([_counting("often", 1.0, calls), _counting("rarely", 600.0, calls)], clock=clock)
    for _ in range(10):
        scheduler.run_due()
        clock.now += 1.0
    assert calls.count("often") == 10
    assert calls.count("rarely") == 1
    clock.now += 600.0
    scheduler.run_due()
    assert calls.count("rarely") == 2


def test_a_late_tick_runs_a_job_once_not_once_per_missed_interval():
    clock, calls = Clock(), []
    scheduler = Scheduler([_counting("tick", 1.0, calls)], clock=clock)
    scheduler.run_due()
    clock.now += 10.0  # the process was busy, or the tick came late
    scheduler.run_due()
    scheduler.run_due()
    assert calls == ["tick", "tick"]


def test_a_failing_job_is_logged_and_the_others_still_run(caplog):
    clock, calls = Clock(), []

    def broken():
        raise RuntimeError("database is down")

    scheduler = Scheduler([Job("broken", broken, 1.0), _counting("after", 1.0, calls)], name="orders", clock=clock)
    with caplog.at_level(logging.ERROR, logger="waybill.scheduler"):
        ran = scheduler.run_due()
    assert [job.name for job in ran] == ["broken", "after"]
    assert calls == ["after"]
    (record,) = caplog.records
    assert "broken" in record.getMessage() and "orders" in record.getMessage()
    assert record.exc_info and "database is down" in str(record.exc_info[1])
    # It comes due again at its interval, not at once (a failing job must not spin).
    scheduler.run_due()
    assert [job.name for job in scheduler.run_due()] == []
    clock.now += 1.0
    assert [job.name for job in scheduler.run_due()] == ["broken", "after"]


def test_a_job_that_overruns_its_interval_is_reported(caplog):
    clock = Clock()

    def slow():
        clock.now += 3.0

    scheduler = Scheduler([Job("slow", slow, 2.0)], clock=clock)
    with caplog.at_level(logging.WARNING, logger="waybill.scheduler"):
        scheduler.run_due()
    assert "slow took 3.0 s, longer than its interval of 2.0 s" in caplog.text


def test_the_loop_runs_jobs_only_while_its_consumer_is_on_the_bus_and_ends_on_stop():
    ran, stop, connected = threading.Event(), threading.Event(), threading.Event()
    scheduler = Scheduler([Job("tick", ran.set, 0.01)])
    thread = threading.Thread(target=scheduler.run, args=(stop, connected))
    thread.start()
    try:
        assert not ran.wait(0.4)  # disconnected: the saga clock must see the gap
        connected.set()
        assert ran.wait(2.0)
    finally:
        stop.set()
        thread.join(2.0)
    assert not thread.is_alive()


# --- what runs where --------------------------------------------------------------------------

def _jobs(name: str, *, relay_backstop: bool) -> dict[str, float]:
    return {job.name: job.every
            for job in jobs_for(ContextConsumer(contexts.get(name)), relay_backstop=relay_backstop)}


def test_a_context_main_consumer_runs_the_kernel_jobs_and_its_manifest_jobs(settings):
    assert _jobs("orders", relay_backstop=True) == {
        "orders inbox retries": 0.25,
        "orders outbox report": 5.0,
        "orders retention": 600.0,
        "orders relay backstop": settings.WAYBILL_RELAY_SWEEP_SECONDS,
        "orders apps.orders.saga.saga_expire_overdue": 1.0,
    }
    readmodels = _jobs("readmodels", relay_backstop=True)
    assert readmodels["readmodels apps.readmodels.services.dashboard_publish"] == 1.0
    assert readmodels["readmodels apps.readmodels.live.changelog.changes_prune"] == 600.0


def test_embedded_the_relay_thread_sweeps_itself_so_no_backstop_is_scheduled():
    assert "orders relay backstop" not in _jobs("orders", relay_backstop=False)


def test_a_bulkhead_runs_its_own_retries_and_jobs_and_none_of_its_context_outbox_work():
    # payments shares orders' outbox: orders' main consumer reports it and backs its relay up.
    assert _jobs("payments", relay_backstop=True) == {"payments inbox retries": 0.25, "payments retention": 600.0}
    assert not any("saga" in name for name in _jobs("payments", relay_backstop=True))


@pytest.mark.django_db(transaction=True, databases="__all__")
def test_the_relay_backstop_publishes_what_the_relay_left_behind(pump):
    inventory.product_create(sku="BACKSTOP-1", name="Lamp", price=Decimal("5"), on_hand=2)
    assert InventoryOutbox.objects.filter(sent_at__isnull=True).exists()
    scheduler = scheduler_for(ContextConsumer(contexts.get("inventory")), relay_backstop=True)
    backstop = next(job for job in scheduler.jobs if job.name == "inventory relay backstop")
    assert backstop.run() >= 1
    assert not InventoryOutbox.objects.filter(sent_at__isnull=True).exists()
