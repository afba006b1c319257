"""The order saga against the payment sandbox, over real HTTP: declines compensate, an
outage opens the circuit and the orders wait, and a payment step whose deadline passed
by the wall clock while every process was down resumes after the restart: saga time stands
still while the platform is down (apps/orders/saga.py, ``SagaClock``)."""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
from pathlib import Path

import httpx
import pytest

from .harness import Shop, free_port, wait_for

pytestmark = pytest.mark.e2e


def test_a_declined_payment_releases_the_stock_and_rejects_the_order(shop):
    # The sandbox declines every total from 2000.00 to 2999.99.
    sku = shop.create_product(on_hand=3, price="1100.00")
    order_id = shop.order(shop.alice, {sku: 2})
    summary = shop.wait_summary(shop.alice, order_id, "REJECTED")
    assert summary["reason"] == "Payment declined: card declined."
    shop.wait_available(sku, 3)
    assert shop.stock(sku)["reserved"] == 0


def _sandbox(port: int, path: str, **body) -> dict:
    url = f"http://127.0.0.1:{port}{path}"
    response = httpx.post(url, json=body) if body else httpx.get(url)
    assert response.status_code == 200, response.text
    return response.json()


def _answers(port: int) -> bool:
    try:
        httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
    except httpx.TransportError:
        return False
    return True


def _kill_listener(port: int) -> None:
    """SIGKILL whatever process listens on ``port`` (Linux: its socket in /proc/net/tcp*,
    then the process holding that socket)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as lines:
            for line in list(lines)[1:]:
                fields = line.split()
                if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "0A":  # 0A: LISTEN
                    inodes.add(f"socket:[{fields[9]}]")
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            if any(os.readlink(fd) in inodes for fd in (proc / "fd").iterdir()):
                os.kill(int(proc.name), signal.SIGKILL)


@pytest.fixture
def sandbox_port() -> int:
    return free_port()


def _private(platform_factory, name, sandbox_port, **env):
    platform = platform_factory(name, start=False)
    platform.start(env={"WAYBILL_PAYMENT_SANDBOX_PORT": str(sandbox_port), **env})
    return platform


def test_an_outage_opens_the_circuit_and_the_orders_wait_then_recover(platform_factory, sandbox_port):
    platform = _private(platform_factory, "outage", sandbox_port,
                        WAYBILL_PAYMENT_BREAKER_FAILURES="3", WAYBILL_PAYMENT_BREAKER_RESET_SECONDS="1")
    shop = Shop(platform)
    sku = shop.create_product(on_hand=5)
    _sandbox(sandbox_port, "/_sandbox/config", outage=True)
    order_id = shop.order(shop.alice, {sku: 2})
    # Refused charges: the breaker opens after three and then fails fast, the order waits.
    wait_for(lambda: _sandbox(sandbox_port, "/_sandbox/stats")["unavailable"] >= 3, 30,
             "three refused charges")
    wait_for(lambda: "payment provider circuit closed -> open" in platform.log_text(), 30,
             "the circuit to open")
    assert shop.summary(shop.alice, order_id)["status"] == "PENDING"
    _sandbox(sandbox_port, "/_sandbox/config", outage=False)
    shop.wait_summary(shop.alice, order_id, "CONFIRMED", timeout=60)
    assert "payment provider circuit half-open -> closed" in platform.log_text()
    charges = httpx.get(f"http://127.0.0.1:{sandbox_port}/v1/charges", params={"reference": order_id}).json()
    assert [c["status"] for c in charges["data"]] == ["succeeded"]  # once, for all the retries


def _saga(data_dir, order_id: str) -> tuple[str, bool] | None:
    """Asked of the orders database itself (the deadline is in database time): the saga's
    step, and whether that step is past its deadline."""
    with sqlite3.connect(data_dir / "orders.sqlite3") as db:
        return db.execute(
            "SELECT step, deadline_at < strftime('%Y-%m-%d %H:%M:%f', 'now') FROM orders_ordersaga "
            "WHERE order_id = ?", (order_id.replace("-", ""),),
        ).fetchone()


def test_a_payment_step_whose_deadline_passed_while_everything_was_down_completes_after_the_restart(
        platform_factory, sandbox_port):
    env = {"WAYBILL_SAGA_PAYMENT_SECONDS": "10"}
    platform = _private(platform_factory, "deadline", sandbox_port, **env)
    shop = Shop(platform)
    sku = shop.create_product(on_hand=5)
    _sandbox(sandbox_port, "/_sandbox/config", outage=True)
    order_id = shop.order(shop.alice, {sku: 2})
    wait_for(lambda: (_saga(platform.data_dir, order_id) or ("",))[0] == "charge_payment", 30,
             "the saga to wait at its payment step")

    platform.kill()  # everything dies: the platform and its sandbox
    # The sandbox dies of its parent's death (a signal), a moment later; until it has, it
    # would answer the restarted platform's charges with its outage. It once outlived that
    # signal by more than 30 s in CI: then it is stopped here, as the machine's death would.
    try:
        wait_for(lambda: not _answers(sandbox_port), 10, "the old sandbox to stop answering")
    except AssertionError:
        _kill_listener(sandbox_port)
        wait_for(lambda: not _answers(sandbox_port), 10, "the old sandbox to stop answering once killed")
    wait_for(lambda: _saga(platform.data_dir, order_id) == ("charge_payment", 1), 30,
             "the payment step's deadline to pass by the wall clock")
    platform.start(env={"WAYBILL_PAYMENT_SANDBOX_PORT": str(sandbox_port), **env})  # the provider is back, too
    shop = Shop(platform)

    # The time the platform was down did not count: the step still had most of its 10 s.
    shop.wait_summary(shop.alice, order_id, "CONFIRMED", timeout=30)
    assert "saga clock: orders could not sweep" in platform.log_text()
    charges = httpx.get(f"http://127.0.0.1:{sandbox_port}/v1/charges", params={"reference": order_id}).json()["data"]
    assert [(c["status"], c["refunded"]) for c in charges] == [("succeeded", False)]
