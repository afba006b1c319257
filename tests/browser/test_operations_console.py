"""The operations console in a real browser, as an operator works with it on a running
embedded platform: orders are pending, the console says why in one screen each (dead
letters grouped by cause, the order's flow, the key that blocks an outbox), the operator
fixes the causes (settings, applied by a restart), redrives and republishes, and the
orders complete while the sagas board follows live.

The causes are real ones: the payment provider rotated its API key (every charge answers
401: a permanent failure of the payments handler), a broken producer put malformed
``orders.order_placed`` messages on the bus (refused by each consumer), and an order too
large for ``WAYBILL_MESSAGE_MAX_BYTES`` is parked in the orders outbox, holding back the
rest of its flow."""

from __future__ import annotations

import json
import sqlite3
import uuid
from datetime import UTC, datetime

from playwright.sync_api import expect

from e2e.harness import Shop, wait_for
from paymentsandbox.process import SandboxProcess

ROTATED_KEY, OLD_KEY = "sk_rotated_key", "sk_revoked_key"
SETTLE = 60


def _rows(data_dir, database: str, sql: str, params=()) -> list[tuple]:
    with sqlite3.connect(data_dir / f"{database}.sqlite3", timeout=30) as db:
        return db.execute(sql, params).fetchall()


def _poison(data_dir) -> None:
    """Two malformed orders.order_placed, written where a broken producer's relay would
    find them: well-formed envelopes whose payloads no consumer can read."""
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
    with sqlite3.connect(data_dir / "orders.sqlite3", timeout=30) as db:
        for _ in range(2):
            message_id, aggregate_id = str(uuid.uuid4()), str(uuid.uuid4())
            envelope = {"id": message_id, "type": "orders.order_placed", "schema_version": 2,
                        "aggregate_id": aggregate_id, "aggregate_version": 1, "occurred_at": now.replace(" ", "T"),
                        "correlation_id": str(uuid.uuid4()), "causation_id": None, "traceparent": None,
                        "payload": {"order_id": "not-an-order-id", "lines": "none"}}
            db.execute(
                "INSERT INTO orders_outboxmessage (message_id, message_type, kind, aggregate_id, aggregate_version,"
                " envelope, created_at, publish_attempts, last_error, skip_reason)"
                " VALUES (?, 'orders.order_placed', 'event', ?, 1, ?, ?, 0, '', '')",
                (message_id.replace("-", ""), aggregate_id, json.dumps(envelope), now))


def test_an_operator_finds_why_orders_wait_fixes_the_causes_and_mends_every_flow(
        platform_factory, browse, screenshot, tmp_path):
    with SandboxProcess(tmp_path / "provider", api_key=ROTATED_KEY) as provider:
        platform = platform_factory("console", start=False)
        # Two failed publishes park a row (in both runs: a parked row waits for an operator).
        common = {"WAYBILL_PAYMENT_GATEWAY_URL": provider.url, "WAYBILL_SAGA_PAYMENT_SECONDS": "900",
                  "WAYBILL_RELAY_MAX_ATTEMPTS": "2"}
        platform.start(env={**common, "WAYBILL_PAYMENT_API_KEY": OLD_KEY, "WAYBILL_MESSAGE_MAX_BYTES": "1500"})
        shop = Shop(platform)
        lamp = shop.create_product(on_hand=20, name="Desk lamp")
        vases = [shop.create_product(on_hand=5, name=f"Hand-thrown stoneware vase no. {i}, " + "glazed " * 22)
                 for i in range(5)]
        waiting = [shop.order(shop.alice, {lamp: 1}) for _ in range(2)]
        large = shop.order(shop.alice, dict.fromkeys(vases, 1))
        _poison(platform.data_dir)
        data = platform.data_dir
        wait_for(lambda: len(_rows(data, "orders", "SELECT id FROM orders_paymentdeadletter")) == 2, SETTLE,
                 "both charges to be dead-lettered (the provider answers 401)")
        wait_for(lambda: len(_rows(data, "readmodels", "SELECT id FROM readmodels_deadletter")) >= 2, SETTLE,
                 "the malformed messages to be dead-lettered by readmodels")
        wait_for(lambda: _rows(data, "orders", "SELECT id FROM orders_outboxmessage WHERE aggregate_id = ? "
                                               "AND publish_attempts >= 2 AND sent_at IS NULL", (large,)),
                 SETTLE, "the large order's first message to be parked")

        # "What is failing, and since when?" -- the overview.
        operator = browse.sign_in(platform, "admin", "/admin/waybill/console/", width=1400, height=1000)
        groups = operator.locator("#dead-letter-groups tr.group")
        expect(groups).to_have_count(2)
        expect(groups.filter(has_text="permanent · PermanentFailure")).to_contain_text("orders.charge_payment")
        expect(groups.filter(has_text="invalid payload for")).to_contain_text("orders.order_placed")
        expect(operator.locator("#blocked-keys tr.blocked-key")).to_contain_text(large)
        screenshot(operator, "console-overview", full_page=True)

        # The handler bug's group, one of its dead letters and its cause chain.
        groups.filter(has_text="PermanentFailure").get_by_role("link").first.click()
        expect(operator.locator(".group-summary")).to_contain_text("payment provider refused the request: 401")
        expect(operator.locator("#group-letters tr.letter")).to_have_count(2)
        screenshot(operator, "console-dead-letter-group", full_page=True)
        operator.locator("#group-letters tr.letter").first.get_by_role("link").first.click()
        chain = operator.locator("#cause-chain")
        expect(chain).to_contain_text("caused by inventory.stock_reserved from inventory")
        expect(chain).to_contain_text("caused by inventory.reserve_stock from orders")
        expect(operator.locator("#letter-traceback")).to_contain_text("PermanentFailure")
        screenshot(operator, "console-dead-letter", full_page=True)

        # "Why is this order pending?" -- its flow, every hop in causation order.
        operator.get_by_label("Order, message, correlation or trace id:").fill(waiting[0])
        operator.get_by_role("button", name="Trace").click()
        hops = operator.locator("#flow tr.hop-row")
        expect(hops.first).to_be_visible()
        types = [row.get_attribute("data-type") for row in hops.all()]
        expected = ["orders.order_placed", "inventory.reserve_stock", "inventory.stock_reserved",
                    "orders.charge_payment"]
        positions = [types.index(t) for t in expected]  # each present, each after its cause
        assert positions == sorted(positions), types
        expect(hops.filter(has=operator.locator("td", has_text="orders.charge_payment"))
               .locator(".status-dead-lettered")).to_have_count(1)
        screenshot(operator, "console-flow", full_page=True)

        # "Which key blocks the outbox?"
        operator.get_by_role("link", name="Outboxes and blocked keys").click()
        blocked = operator.locator("#blocked-keys tr.blocked-key", has_text=large)
        expect(blocked).to_contain_text("over WAYBILL_MESSAGE_MAX_BYTES")
        screenshot(operator, "console-blocked-key", full_page=True)

        # The causes fixed: the provider's new key, the size limit back to its default.
        assert platform.stop() == 0
        # On the same port: the operator's open pages (and their session) carry on.
        platform.start(port=platform.port, env={**common, "WAYBILL_PAYMENT_API_KEY": ROTATED_KEY})
        shop = Shop(platform)
        board = browse.sign_in(platform, "admin", "/admin/orders/ordersaga/board/", width=1400, height=900)
        open_sagas = board.locator("#open-sagas tr.saga")
        for order_id in waiting:
            expect(open_sagas.filter(has_text=order_id[:8])).to_contain_text("charge_payment")
        screenshot(board, "console-sagas-board", full_page=True)

        operator.goto("/admin/waybill/console/dead-letters/")
        operator.locator("#dead-letter-groups tr.group", has_text="PermanentFailure").get_by_role("link").click()
        operator.get_by_role("button", name="Redrive all").click()
        expect(operator.locator(".messagelist")).to_contain_text("2 dead letters redriven")
        for order_id in waiting:
            shop.wait_summary(shop.alice, order_id, "CONFIRMED", timeout=SETTLE)
        # The board moved them to the finished ones by itself, without a reload.
        finished = board.locator("#finished-sagas tr.saga")
        for order_id in waiting:
            expect(finished.filter(has_text=order_id[:8])).to_contain_text("completed")

        operator.goto("/admin/waybill/console/outbox/")
        operator.locator("#blocked-keys tr.blocked-key", has_text=large).get_by_role("button", name="Republish").click()
        expect(operator.locator(".messagelist")).to_contain_text("queued for publishing")
        shop.wait_summary(shop.alice, large, "CONFIRMED", timeout=SETTLE)
        operator.reload()
        expect(operator.locator("#blocked-keys")).to_have_count(0)

        # The poison is given up for good, with the reason on record.
        operator.goto("/admin/waybill/console/dead-letters/")
        operator.locator("#dead-letter-groups tr.group", has_text="invalid payload for").get_by_role("link").click()
        operator.get_by_placeholder("why discard them (required)").fill("a broken producer, fixed upstream")
        operator.get_by_role("button", name="Discard all").click()
        expect(operator.get_by_text("No open dead letters.")).to_be_visible()
        operator.goto("/admin/")
        expect(operator.locator("#recent-actions-module")).to_contain_text("orders.order_placed")
