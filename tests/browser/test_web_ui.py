"""The web UI in a real browser: a customer orders and watches it settle live, staff watch
the stock fall live, and a page outlives a restart of the server and catches up."""

from __future__ import annotations

import json
import re

import httpx
import pytest
from playwright.sync_api import expect

from e2e.harness import DEMO_PASSWORD, DEMO_SKUS, READY_TIMEOUT, Shop, manage, wait_for


def _row(page, sku: str):
    return page.locator(f"tr[data-sku='{sku}']")


def test_a_customer_orders_and_watches_it_settle_while_staff_see_the_stock_fall(
        browser_platform, browse, screenshot):
    shop = Shop(browser_platform)
    sku = shop.create_product(on_hand=9, price="12.50", name="Browser test kettle")

    # Staff first, in their own browser context: the board is live before the order exists.
    board = browse.sign_in(browser_platform, "admin", "/staff/stock/")
    expect(board.locator("#live-status")).to_have_text("Live")
    expect(_row(board, sku).locator("[data-field=available]")).to_have_text("9")
    expect(_row(board, sku).locator("[data-field=reserved]")).to_have_text("0")

    customer = browse.sign_in(browser_platform, "alice", "/")
    expect(customer.get_by_role("link", name="Stock board")).to_have_count(0)  # staff only
    item = _row(customer, sku)
    expect(item.locator("[data-field=available]")).to_have_text("9")
    item.get_by_label("Quantity of Browser test kettle").fill("3")
    item.get_by_role("button", name="Add Browser test kettle to cart").click()
    expect(customer.locator("waybill-cart li[data-sku]")).to_have_text(re.compile(r"3 × Browser test kettle"))
    checkout = customer.get_by_role("button", name="Place order")
    expect(checkout).to_be_enabled()
    checkout.focus()
    customer.keyboard.press("Enter")  # usable by keyboard

    # The tracker follows the placed order without a reload, to its final status.
    tracker = customer.locator("waybill-order-tracker")
    expect(tracker.locator("[data-role=status]")).to_have_text("CONFIRMED")
    expect(tracker.locator("[data-role=timeline] li").first).to_be_visible()
    expect(customer.locator("waybill-cart li[data-sku]")).to_have_count(0)  # emptied on order-placed
    expect(item.locator("[data-field=available]")).to_have_text("6")  # the catalog, live
    order_id = tracker.locator("[data-role=id]").inner_text()
    expect(customer.locator(f"waybill-my-orders li[data-order-id='{order_id}'] .status")).to_have_text("CONFIRMED")
    screenshot(customer, "shop", full_page=True)

    # ...and staff saw the stock fall on their open board, no reload.
    expect(_row(board, sku).locator("[data-field=reserved]")).to_have_text("3")
    expect(_row(board, sku).locator("[data-field=available]")).to_have_text("6")
    screenshot(board, "stock-board", full_page=True)

    # The dashboard counts it, with a live throughput chart drawn inline (SVG).
    board.get_by_role("link", name="Dashboard").click()
    dashboard = board.locator("waybill-dashboard")
    expect(dashboard.locator("[data-status=CONFIRMED] dd")).to_have_text(re.compile(r"[1-9]"))
    expect(dashboard.locator("svg polyline[data-series=confirmed]")).to_have_count(1)
    expect(dashboard.locator("[data-role=sales] svg rect").first).to_be_attached()  # today's sales
    expect(dashboard.locator("tbody tr[data-context=orders]")).to_have_count(1)
    expect(dashboard.locator("[data-role=processes-ok]")).to_be_visible()  # nothing crashing
    expect(dashboard.locator("[data-role=processes-table]")).to_be_hidden()
    screenshot(board, "dashboard", full_page=True)

    # The tracker page of that order, loaded fresh (backend-for-frontend, then the stream).
    customer.goto(f"/track/{order_id}/")
    expect(customer.locator("waybill-order-tracker [data-role=status]")).to_have_text("CONFIRMED")
    screenshot(customer, "order-tracker", full_page=True)


def test_api_refusals_are_shown_not_swallowed(browser_platform, browse):
    shop = Shop(browser_platform)
    sku = shop.create_product(on_hand=2, name="Scarce teapot")

    # Staff: the inventory API refuses a negative stock; its reason is shown and announced.
    staff = browse.sign_in(browser_platform, "admin", "/staff/stock/")
    row = _row(staff, sku)
    expect(row.locator("[data-field=on_hand]")).to_have_text("2")
    row.get_by_label("On hand of Scarce teapot", exact=True).fill("-1")
    row.get_by_role("button", name="Save on hand of Scarce teapot").click()
    expect(staff.locator("waybill-stock-board [role=alert]")).to_contain_text("greater than or equal to 0")
    row.get_by_label("On hand of Scarce teapot", exact=True).fill("5")
    row.get_by_role("button", name="Save on hand of Scarce teapot").click()
    expect(row.locator("[data-field=on_hand]")).to_have_text("5")  # back through the stream
    # Its ledger: the entries that made those numbers, newest first.
    row.get_by_role("button", name="Stock ledger of Scarce teapot").click()
    ledger = staff.locator("waybill-stock-board section[data-role=ledger]")
    expect(ledger.locator("h3")).to_contain_text("5 on hand, 0 reserved")
    expect(ledger.locator("tbody tr td[data-label=Entry]")).to_have_text(["adjusted", "received"])
    expect(ledger.locator("tbody tr td[data-label='On hand']")).to_have_text(["+3", "+2"])

    # Customer: the catalog followed that change live; a rate-limited order says when to retry.
    customer = browse.sign_in(browser_platform, "bob", "/")
    item = _row(customer, sku)
    expect(item.locator("[data-field=available]")).to_have_text("5")
    item.get_by_role("button", name="Add Scarce teapot to cart").click()
    customer.route("**/api/v1/orders/", lambda route: route.fulfill(
        status=429, headers={"Retry-After": "30", "Content-Type": "application/json"},
        body='{"detail": "Request was throttled. Expected available in 30 seconds."}'))
    customer.get_by_role("button", name="Place order").click()
    expect(customer.locator("waybill-checkout [role=alert]")).to_have_text(re.compile("try again in 30 seconds"))
    expect(customer.get_by_role("button", name="Place order")).to_be_disabled()

    # The staff pages are not even served to a customer (and their streams are refused).
    assert customer.goto("/staff/stock/").status == 403


def test_the_shop_fits_a_phone_screen(browser_platform, browse, screenshot):
    customer = browse.sign_in(browser_platform, "bob", "/", width=375, height=800)
    expect(_row(customer, "KETTLE-1").get_by_role("button", name=re.compile("Add .* to cart"))).to_be_visible()
    overflow = customer.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
    assert overflow <= 0, f"the page is {overflow}px wider than a 375px screen"
    screenshot(customer, "shop-phone", full_page=True)


def test_a_change_lost_on_the_way_is_noticed_and_fetched_again(browser_platform, browse):
    """Channels delivers at most once: drop one pushed change between server and page. The
    next change's position skips, so the page asks for what follows its last position."""
    shop = Shop(browser_platform)
    first, second = shop.create_product(on_hand=10), shop.create_product(on_hand=20)
    dropped: list[dict] = []
    sent: list[dict] = []

    def lossy_network(ws):
        server = ws.connect_to_server()

        def to_server(message):
            sent.append(json.loads(message))
            server.send(message)

        def to_page(message):
            frame = json.loads(message)
            if frame.get("type") == "change" and frame.get("key") == first and not dropped:
                dropped.append(frame)  # lost on the way
                return
            ws.send(message)

        ws.on_message(to_server)
        server.on_message(to_page)

    page = browse.page(browser_platform)
    page.route_web_socket(re.compile(r".*/ws/v1/streams/"), lossy_network)
    page.goto("/accounts/login/?next=/staff/stock/")
    page.get_by_label("Username").fill("admin")
    page.get_by_label("Password").fill(DEMO_PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(_row(page, first).locator("[data-field=on_hand]")).to_have_text("10")

    assert shop.admin.patch(f"/api/v1/inventory/products/{first}/", json={"on_hand": 7}).status_code == 200
    # Playwright's callbacks run only while the test calls into Playwright: wait in the page.
    for _ in range(400):
        if dropped:
            break
        page.wait_for_timeout(50)
    assert dropped, "the change of the first product was never pushed"
    expect(_row(page, first).locator("[data-field=on_hand]")).to_have_text("10")  # the page missed it

    assert shop.admin.patch(f"/api/v1/inventory/products/{second}/", json={"on_hand": 21}).status_code == 200
    expect(_row(page, second).locator("[data-field=on_hand]")).to_have_text("21")
    expect(_row(page, first).locator("[data-field=on_hand]")).to_have_text("7")  # fetched again
    resumes = [m for m in sent if m.get("stream") == "stock" and m.get("after") is not None]
    assert resumes and resumes[-1]["after"] == dropped[0]["position"] - 1, (sent, dropped)


def test_a_page_reconnects_after_a_restart_and_catches_up(platform_factory, browse, screenshot):
    platform = platform_factory("restarted")
    shop = Shop(platform)
    shop.wait_available("MUG-2", 120)
    board = browse.sign_in(platform, "admin", "/staff/stock/")
    catalog = browse.sign_in(platform, "bob", "/")
    expect(board.locator("#live-status")).to_have_text("Live")
    expect(_row(board, "MUG-2").locator("[data-field=on_hand]")).to_have_text("120")
    expect(_row(catalog, "MUG-2").locator("[data-field=available]")).to_have_text("120")

    port = platform.port
    assert platform.stop() == 0
    expect(board.locator("#live-status")).to_have_attribute("data-state", "reconnecting")
    # While the server is down, staff change the stock (the service writes the change and
    # its message to the outbox; nothing can push it to the pages now).
    manage(platform.data_dir, "shell", "-c",
           "from apps.inventory.services import product_update; product_update(sku='MUG-2', on_hand=77)")
    expect(_row(board, "MUG-2").locator("[data-field=on_hand]")).to_have_text("120")

    platform.start(port=port)
    # No reload: the pages reconnect by themselves and catch up on what they missed.
    expect(board.locator("#live-status")).to_have_text("Live")
    expect(_row(board, "MUG-2").locator("[data-field=on_hand]")).to_have_text("77")
    expect(_row(board, "MUG-2").locator("[data-field=available]")).to_have_text("77")
    expect(_row(catalog, "MUG-2").locator("[data-field=available]")).to_have_text("77")


@pytest.mark.xdist_group("services")  # shares the services deployment of tests/e2e's services group
def test_in_services_mode_each_context_serves_its_micro_frontend_and_the_shell_composes_them(
        services_deployment, browse):
    deployment = services_deployment
    shop = Shop(deployment)
    wait_for(lambda: DEMO_SKUS <= shop.catalog().keys(), READY_TIMEOUT, "the demo catalog")
    # A context's web process serves its own micro-frontend, and not another context's.
    for context, owned, foreign in [("orders", "orders/catalog.js", "inventory/stock-board.js"),
                                    ("inventory", "inventory/stock-board.js", "readmodels/dashboard.js"),
                                    ("readmodels", "readmodels/order-tracker.js", "orders/cart.js")]:
        direct = f"http://127.0.0.1:{deployment.port_of[f'{context}-web']}/static/"
        served = httpx.get(direct + owned, timeout=10)
        assert served.status_code == 200 and "customElements.define" in served.text, (context, served.status_code)
        assert httpx.get(direct + foreign, timeout=10).status_code == 404, (context, foreign)
    # What they all import by a relative URL (../frontend/helpers.js) is the shell's, through
    # the gateway like the rest of the shell's static files.
    shared = httpx.get(f"{deployment.base_url}/static/frontend/helpers.js", timeout=10)
    assert shared.status_code == 200 and "export function follow" in shared.text, shared.status_code

    # Through the gateway, the shell's page composes them and the order settles live.
    sku = shop.create_product(on_hand=4, name="Services mode mug")
    customer = browse.sign_in(deployment, "alice", "/")
    item = _row(customer, sku)
    expect(item.locator("[data-field=available]")).to_have_text("4")
    item.get_by_role("button", name="Add Services mode mug to cart").click()
    customer.get_by_role("button", name="Place order").click()
    expect(customer.locator("waybill-order-tracker [data-role=status]")).to_have_text("CONFIRMED")
    expect(item.locator("[data-field=available]")).to_have_text("3")
