"""Stopping the platform, cleanly or not, loses no order and applies none twice.

Each test runs its own platform (``platform_factory``): they kill and restart it. The
embedded broker lives in the process's memory, so a kill loses every queued message;
what must bring them back is the outbox (durable) and the start-up recovery, and what
must stop a re-delivered message from acting twice is the inbox."""

from __future__ import annotations

import sqlite3
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from .harness import SETTLE_TIMEOUT, Platform, Shop, wait_for

pytestmark = pytest.mark.e2e

# Demo products with stock for every order below: KETTLE-1 25, MUG-2 120, TEA-4 200.
ORDERS = [
    ("alice", {"MUG-2": 3}),
    ("bob", {"TEA-4": 5, "MUG-2": 1}),
    ("alice", {"KETTLE-1": 2}),
    ("bob", {"MUG-2": 4}),
    ("alice", {"TEA-4": 7, "KETTLE-1": 1}),
    ("bob", {"KETTLE-1": 3}),
    ("alice", {"MUG-2": 2, "TEA-4": 1}),
    ("bob", {"TEA-4": 10}),
]


def _place_all(shop: Shop) -> dict[str, str]:
    """Place every order of ORDERS at once; returns order id -> customer."""
    clients = {user: shop.client(user) for user in ("alice", "bob")}  # log in before the burst

    def place(entry):
        user, lines = entry
        return shop.order(clients[user], lines), user

    with ThreadPoolExecutor(len(ORDERS)) as pool:
        return dict(pool.map(place, ORDERS))


def _expected_reserved() -> Counter:
    reserved: Counter = Counter()
    for _, lines in ORDERS:
        reserved.update(lines)
    return reserved


def _assert_each_order_applied_once(shop: Shop, placed: dict[str, str]) -> None:
    for order_id, user in placed.items():
        summary = shop.wait_summary(shop.client(user), order_id, "CONFIRMED")
        # Placed (1) then confirmed (2): a second confirmation would be refused, but a
        # summary at another version would mean an extra or a lost step.
        assert summary["order_version"] == 2, summary
        detail = shop.client(user).get(f"/api/v1/orders/{order_id}/").json()
        assert (detail["status"], detail["version"]) == ("CONFIRMED", 2), detail
    demo_on_hand = {"KETTLE-1": 25, "MUG-2": 120, "TEA-4": 200}
    for sku, quantity in _expected_reserved().items():
        stock = wait_for(lambda: (s := shop.stock(sku))["reserved"] == quantity and s, SETTLE_TIMEOUT,
                         f"{sku} reserved to be {quantity}")
        assert (stock["on_hand"], stock["reserved"]) == (demo_on_hand[sku], quantity), stock
        shop.wait_available(sku, demo_on_hand[sku] - quantity)


def _query(data_dir: Path, database: str, sql: str) -> list[tuple]:
    """Read a stopped platform's SQLite file (read-only)."""
    uri = f"file:{data_dir / f'{database}.sqlite3'}?mode=ro"
    with sqlite3.connect(uri, uri=True) as connection:
        return connection.execute(sql).fetchall()


def _assert_durable_state(platform: Platform, placed: dict[str, str]) -> None:
    """What the stopped platform left on disk: one reservation per order, every message
    processed, nothing dead-lettered."""
    assert not platform.running
    reservations = _query(platform.data_dir, "inventory", "SELECT order_id, status FROM inventory_reservation")
    assert len(reservations) == len(placed), reservations
    assert {status for _, status in reservations} == {"reserved"}
    for database in ("orders", "inventory", "readmodels", "webhooks"):
        dead = _query(platform.data_dir, database, f"SELECT message_type, reason FROM {database}_deadletter")
        assert dead == [], f"{database} dead-lettered: {dead}"
        stuck = _query(platform.data_dir, database,
                       f"SELECT message_type, status, last_error FROM {database}_inboxmessage "
                       "WHERE status != 'processed'")
        assert stuck == [], f"{database} inbox has unprocessed messages: {stuck}"


def test_orders_placed_just_before_a_sigkill_settle_exactly_once_after_restart(platform_factory):
    platform = platform_factory("crashing")
    placed = _place_all(Shop(platform))

    assert platform.kill() == -9  # at once; the test below makes "still moving" certain
    first_run = len(platform.log_text())

    platform.start()
    shop = Shop(platform)
    _assert_each_order_applied_once(shop, placed)
    restart_log = platform.log_text()[first_run:]
    assert "stopped uncleanly" in restart_log, "the restart did not recover the killed run's messages"

    assert platform.stop() == 0, platform.log_tail()
    _assert_durable_state(platform, placed)


def test_messages_published_but_not_consumed_when_killed_are_recovered(platform_factory):
    """The deterministic version of the test above: the first run has no inventory
    consumer (WAYBILL_CONTEXTS), so every order is certainly still PENDING, its
    ``order_placed`` message published and waiting in the in-memory queue, when the
    process dies. Only the restart's recovery can bring those messages back."""
    platform = platform_factory("half-running")
    # A full run first, so orders learns the demo products from inventory's messages.
    for sku in _expected_reserved():
        Shop(platform).wait_orderable(sku)
    assert platform.stop() == 0, platform.log_tail()
    platform.start(env={"WAYBILL_CONTEXTS": "orders,readmodels"})
    shop = Shop(platform)
    placed = _place_all(shop)
    for order_id, user in placed.items():
        assert shop.wait_summary(shop.client(user), order_id, "PENDING")["order_version"] == 1

    assert platform.kill() == -9
    first_run = len(platform.log_text())

    platform.start()
    _assert_each_order_applied_once(Shop(platform), placed)
    assert "stopped uncleanly" in platform.log_text()[first_run:]
    assert platform.stop() == 0, platform.log_tail()
    _assert_durable_state(platform, placed)


def test_sigint_stops_cleanly_with_orders_in_flight_and_loses_nothing(platform_factory):
    platform = platform_factory("stopping")
    placed = _place_all(Shop(platform))

    code = platform.stop()

    assert code == 0, platform.log_tail()
    assert "Waybill stopped." in platform.log_text()
    first_run = len(platform.log_text())
    platform.start()
    shop = Shop(platform)
    _assert_each_order_applied_once(shop, placed)
    assert "stopped uncleanly" not in platform.log_text()[first_run:]
    assert platform.stop() == 0, platform.log_tail()
    _assert_durable_state(platform, placed)
