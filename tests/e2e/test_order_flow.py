"""The shop over real HTTP against one shared ``runplatform``.

Every test that touches stock creates its own product (a unique SKU), so the tests
neither depend on nor disturb each other's numbers, whatever order they run in."""

from __future__ import annotations

import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from .harness import SETTLE_TIMEOUT, wait_for

pytestmark = pytest.mark.e2e

ORDERS = "/api/v1/orders/"


def field_errors(body, *path):
    """The errors at ``path`` in a DRF error body, or fail saying where the path ends.

    DRF reports a list's item errors as a list, or as a dict keyed by the index as a
    string; an int in ``path`` accepts both."""
    node = body
    for step in path:
        if isinstance(step, int) and isinstance(node, list):
            assert step < len(node), f"no item {step} in {node!r} (whole body: {body!r})"
            node = node[step]
        elif isinstance(step, int) and isinstance(node, dict) and str(step) in node:
            node = node[str(step)]
        else:
            assert isinstance(node, dict) and step in node, f"no {step!r} in {node!r} (whole body: {body!r})"
            node = node[step]
    assert node, f"empty errors at {path} in {body!r}"
    return node


# --- the happy path, rejection, cancellation ---------------------------------------------

def test_order_is_confirmed_and_catalog_availability_falls(shop):
    sku = shop.create_product(on_hand=10, price="4.50")

    placed = shop.place(shop.alice, {sku: 3})

    assert placed.status_code == 202, placed.text
    order = placed.json()
    assert order["status"] == "PENDING" and order["version"] == 1
    assert order["total"] == "13.50"
    assert placed.headers["Location"] == f"/api/v1/orders/{order['id']}/"
    summary = shop.wait_summary(shop.alice, order["id"], "CONFIRMED")
    assert summary["id"] == order["id"]
    assert [(line["sku"], line["quantity"]) for line in summary["lines"]] == [(sku, 3)]
    assert summary["total"] == "13.50" and summary["order_version"] == 2 and summary["reason"] == ""
    shop.wait_available(sku, 7)
    stock = shop.stock(sku)
    assert (stock["on_hand"], stock["reserved"], stock["available"]) == (10, 3, 7)
    # The write side agrees, and its ETag is the version.
    detail = shop.alice.get(f"{ORDERS}{order['id']}/")
    assert detail.status_code == 200
    assert detail.json()["status"] == "CONFIRMED"
    assert detail.headers["ETag"] == '"2"'


def test_order_for_more_than_available_is_rejected_with_a_reason_naming_the_sku(shop):
    sku = shop.create_product(on_hand=3)

    order_id = shop.order(shop.alice, {sku: 4})

    summary = shop.wait_summary(shop.alice, order_id, "REJECTED")
    assert sku in summary["reason"], summary
    stock = shop.stock(sku)
    assert (stock["on_hand"], stock["reserved"]) == (3, 0)
    assert shop.catalog()[sku]["available"] == 3
    # A rejected order is settled: it cannot be cancelled any more.
    cancel = shop.alice.post(f"{ORDERS}{order_id}/cancel/")
    assert cancel.status_code == 409, cancel.text


def test_an_order_is_all_or_nothing_across_its_lines(shop):
    plenty = shop.create_product(on_hand=50)
    scarce = shop.create_product(on_hand=1)

    order_id = shop.order(shop.bob, {plenty: 5, scarce: 2})

    summary = shop.wait_summary(shop.bob, order_id, "REJECTED")
    assert scarce in summary["reason"], summary
    assert shop.stock(plenty)["reserved"] == 0, "a rejected order must hold none of its lines"
    assert shop.stock(scarce)["reserved"] == 0


def test_cancelling_a_confirmed_order_gives_its_stock_back(shop):
    # inventory reads orders.order_cancelled at v1 while orders publishes v2: the stock
    # comes back only if the read path downcast it (a refused one would be a dead letter).
    sku = shop.create_product(on_hand=6)
    order_id = shop.order(shop.alice, {sku: 4})
    shop.wait_summary(shop.alice, order_id, "CONFIRMED")
    shop.wait_available(sku, 2)
    etag = shop.alice.get(f"{ORDERS}{order_id}/").headers["ETag"]

    cancel = shop.alice.post(f"{ORDERS}{order_id}/cancel/", headers={"If-Match": etag})

    assert cancel.status_code == 202, cancel.text
    assert cancel.json()["status"] == "CANCELLED"
    summary = shop.wait_summary(shop.alice, order_id, "CANCELLED")
    assert summary["order_version"] == 3
    shop.wait_available(sku, 6)
    wait_for(lambda: shop.stock(sku)["reserved"] == 0, SETTLE_TIMEOUT, f"{sku} reserved back to 0")
    # Cancelled is final.
    again = shop.alice.post(f"{ORDERS}{order_id}/cancel/")
    assert again.status_code == 409, again.text


def test_cancel_with_a_stale_if_match_is_refused_with_412_and_changes_nothing(shop):
    sku = shop.create_product(on_hand=5)
    order_id = shop.order(shop.alice, {sku: 1})
    shop.wait_summary(shop.alice, order_id, "CONFIRMED")  # version 2 now; "1" is stale

    stale = shop.alice.post(f"{ORDERS}{order_id}/cancel/", headers={"If-Match": '"1"'})

    assert stale.status_code == 412, stale.text
    detail = shop.alice.get(f"{ORDERS}{order_id}/")
    assert detail.json()["status"] == "CONFIRMED" and detail.headers["ETag"] == '"2"'
    assert shop.stock(sku)["reserved"] == 1
    # RFC 9110: an If-Match that matches no current version is a 412, whatever its text.
    for header in ("not-an-etag", 'W/"2"', '"1", "7"'):
        refused = shop.alice.post(f"{ORDERS}{order_id}/cancel/", headers={"If-Match": header})
        assert refused.status_code == 412, (header, refused.text)
    assert shop.alice.get(f"{ORDERS}{order_id}/").json()["status"] == "CONFIRMED"


def test_cancel_with_if_match_star_or_a_list_holding_the_current_version_is_accepted(shop):
    sku = shop.create_product(on_hand=5)
    starred, listed = shop.order(shop.alice, {sku: 1}), shop.order(shop.alice, {sku: 1})
    for order_id in (starred, listed):
        shop.wait_summary(shop.alice, order_id, "CONFIRMED")  # version 2
    assert shop.alice.post(f"{ORDERS}{starred}/cancel/", headers={"If-Match": "*"}).status_code == 202
    assert shop.alice.post(f"{ORDERS}{listed}/cancel/", headers={"If-Match": '"1", "2"'}).status_code == 202


# --- idempotency --------------------------------------------------------------------------

def test_retry_with_the_same_idempotency_key_returns_the_same_single_order(shop):
    sku = shop.create_product(on_hand=10)
    key = f"e2e-{uuid.uuid4()}"

    first = shop.place(shop.alice, {sku: 2}, key=key)
    retry = shop.place(shop.alice, {sku: 2}, key=key)

    assert first.status_code == 202 and retry.status_code == 202, (first.text, retry.text)
    assert "Idempotent-Replayed" not in first.headers
    assert retry.headers.get("Idempotent-Replayed") == "true"
    assert retry.json()["id"] == first.json()["id"]
    order_id = first.json()["id"]
    shop.wait_summary(shop.alice, order_id, "CONFIRMED")
    wait_for(lambda: shop.stock(sku)["reserved"] == 2, SETTLE_TIMEOUT, f"{sku} reserved 2")
    mine = [s for s in shop.alice.get("/api/v1/read/orders/").json() if any(line["sku"] == sku for line in s["lines"])]
    assert [s["id"] for s in mine] == [order_id], "exactly one order for the key"
    shop.wait_available(sku, 8)

    # The key with other lines is a different request: refused, nothing placed.
    conflict = shop.place(shop.alice, {sku: 3}, key=key)
    assert conflict.status_code == 409, conflict.text
    # Keys belong to a customer: bob's identical key is his own, new order.
    bobs = shop.place(shop.bob, {sku: 2}, key=key)
    assert bobs.status_code == 202 and bobs.json()["id"] != order_id, bobs.text
    assert "Idempotent-Replayed" not in bobs.headers
    shop.wait_summary(shop.bob, bobs.json()["id"], "CONFIRMED")
    assert shop.stock(sku)["reserved"] == 4


def test_concurrent_retries_with_one_idempotency_key_place_one_order(shop, e2e_platform):
    sku = shop.create_product(on_hand=10)
    key = f"e2e-{uuid.uuid4()}"
    token = e2e_platform.token("alice")
    start = threading.Barrier(6)

    def post(_):
        with httpx.Client(base_url=e2e_platform.base_url, timeout=15,
                          headers={"Authorization": f"Token {token}", "Idempotency-Key": key}) as client:
            start.wait(timeout=10)
            return client.post(ORDERS, json={"lines": [{"sku": sku, "quantity": 1}]})

    with ThreadPoolExecutor(6) as pool:
        responses = list(pool.map(post, range(6)))

    assert {r.status_code for r in responses} == {202}, [r.text for r in responses]
    assert len({r.json()["id"] for r in responses}) == 1
    assert sum("Idempotent-Replayed" not in r.headers for r in responses) == 1
    shop.wait_summary(shop.alice, responses[0].json()["id"], "CONFIRMED")
    wait_for(lambda: shop.stock(sku)["reserved"] == 1, SETTLE_TIMEOUT, f"{sku} reserved 1")


# --- the last unit ----------------------------------------------------------------------

def test_twenty_customers_racing_for_the_last_unit_one_wins(shop, e2e_platform):
    sku = shop.create_product(on_hand=1, price="99.00")
    racers = 20
    tokens = [e2e_platform.token("alice" if i % 2 == 0 else "bob") for i in range(racers)]
    start = threading.Barrier(racers)

    def race(token: str) -> httpx.Response:
        with httpx.Client(base_url=e2e_platform.base_url, timeout=30,
                          headers={"Authorization": f"Token {token}"}) as client:
            start.wait(timeout=10)
            return client.post(ORDERS, json={"lines": [{"sku": sku, "quantity": 1}]})

    with ThreadPoolExecutor(racers) as pool:
        responses = list(pool.map(race, tokens))

    assert [r.status_code for r in responses] == [202] * racers, [r.text for r in responses if r.status_code != 202]
    placed = {r.json()["id"]: ("alice" if i % 2 == 0 else "bob") for i, r in enumerate(responses)}
    assert len(placed) == racers

    def all_settled() -> dict[str, dict] | None:
        seen = {}
        for user in ("alice", "bob"):
            response = shop.client(user).get("/api/v1/read/orders/")
            assert response.status_code == 200, response.text
            seen.update({s["id"]: s for s in response.json() if s["id"] in placed})
        if len(seen) == racers and all(s["status"] in {"CONFIRMED", "REJECTED"} for s in seen.values()):
            return seen
        return None

    summaries = wait_for(all_settled, SETTLE_TIMEOUT, f"all {racers} racing orders to settle")
    statuses = sorted(s["status"] for s in summaries.values())
    assert statuses == ["CONFIRMED"] + ["REJECTED"] * (racers - 1), statuses
    for summary in summaries.values():
        if summary["status"] == "REJECTED":
            assert sku in summary["reason"], summary
    shop.wait_available(sku, 0)
    stock = shop.stock(sku)
    assert (stock["on_hand"], stock["reserved"], stock["available"]) == (1, 1, 0), stock


# --- who may see what -------------------------------------------------------------------

def test_a_customer_cannot_see_or_touch_another_customers_order(shop):
    sku = shop.create_product(on_hand=5, price="31.17")
    order_id = shop.order(shop.alice, {sku: 2})
    shop.wait_summary(shop.alice, order_id, "CONFIRMED")
    secrets = [order_id, sku, "62.34", "31.17"]

    for path in (f"{ORDERS}{order_id}/", f"/api/v1/read/orders/{order_id}/"):
        response = shop.bob.get(path)
        assert response.status_code == 404, (path, response.status_code, response.text)
        assert not [s for s in secrets if s in response.text], (path, response.text)

    bobs_list = shop.bob.get("/api/v1/read/orders/")
    assert bobs_list.status_code == 200
    assert order_id not in {s["id"] for s in bobs_list.json()}
    assert not [s for s in secrets if s in bobs_list.text]

    cancel = shop.bob.post(f"{ORDERS}{order_id}/cancel/")
    assert cancel.status_code == 404, cancel.text
    assert not [s for s in secrets if s in cancel.text], cancel.text
    assert shop.alice.get(f"{ORDERS}{order_id}/").json()["status"] == "CONFIRMED"
    assert order_id in {s["id"] for s in shop.alice.get("/api/v1/read/orders/").json()}


@pytest.mark.parametrize(
    "method, path",
    [
        ("POST", ORDERS),
        ("GET", f"{ORDERS}00000000-0000-0000-0000-000000000000/"),
        ("POST", f"{ORDERS}00000000-0000-0000-0000-000000000000/cancel/"),
        ("GET", "/api/v1/read/orders/"),
        ("GET", "/api/v1/read/orders/00000000-0000-0000-0000-000000000000/"),
        ("GET", "/api/v1/inventory/products/"),
    ],
)
def test_no_credentials_is_401(shop, method, path):
    response = shop.anonymous.request(method, path, json={"lines": [{"sku": "MUG-2", "quantity": 1}]})
    assert response.status_code == 401, response.text
    assert response.headers.get("WWW-Authenticate", "").startswith("Token")

    bad_token = shop.anonymous.request(method, path, headers={"Authorization": "Token not-a-real-token"})
    assert bad_token.status_code == 401, bad_token.text


@pytest.mark.parametrize(
    "method, path, body",
    [
        ("GET", "/api/v1/inventory/products/", None),
        ("POST", "/api/v1/inventory/products/", {"sku": "E2E-FORBIDDEN", "name": "x", "price": "1.00", "on_hand": 1}),
        ("GET", "/api/v1/inventory/products/MUG-2/", None),
        ("PATCH", "/api/v1/inventory/products/MUG-2/", {"on_hand": 0}),
    ],
)
def test_a_customer_gets_403_on_staff_endpoints(shop, method, path, body):
    response = shop.alice.request(method, path, json=body)
    assert response.status_code == 403, response.text
    assert shop.stock("MUG-2")["on_hand"] == 120, "a refused PATCH changed the stock"
    assert shop.admin.get("/api/v1/inventory/products/E2E-FORBIDDEN/").status_code == 404


def test_the_catalog_is_public(shop):
    response = shop.anonymous.get("/api/v1/read/catalog/")
    assert response.status_code == 200
    item = {i["sku"]: i for i in response.json()}["KETTLE-1"]
    assert set(item) == {"sku", "name", "price", "available", "version"}


# --- staff stock changes ----------------------------------------------------------------

def test_staff_change_on_hand_and_the_catalog_follows_but_not_below_reserved(shop):
    sku = shop.create_product(on_hand=5)

    raised = shop.admin.patch(f"/api/v1/inventory/products/{sku}/", json={"on_hand": 9})
    assert raised.status_code == 200, raised.text
    assert raised.json()["on_hand"] == 9
    shop.wait_available(sku, 9)

    order_id = shop.order(shop.bob, {sku: 3})
    shop.wait_summary(shop.bob, order_id, "CONFIRMED")
    shop.wait_available(sku, 6)

    too_low = shop.admin.patch(f"/api/v1/inventory/products/{sku}/", json={"on_hand": 2})
    assert too_low.status_code == 400, too_low.text
    assert field_errors(too_low.json(), "on_hand")
    stock = shop.stock(sku)
    assert (stock["on_hand"], stock["reserved"]) == (9, 3)

    exactly_reserved = shop.admin.patch(f"/api/v1/inventory/products/{sku}/", json={"on_hand": 3})
    assert exactly_reserved.status_code == 200, exactly_reserved.text
    shop.wait_available(sku, 0)

    negative = shop.admin.patch(f"/api/v1/inventory/products/{sku}/", json={"on_hand": -1})
    assert negative.status_code == 400 and field_errors(negative.json(), "on_hand"), negative.text
    missing = shop.admin.patch("/api/v1/inventory/products/E2E-NO-SUCH-SKU/", json={"on_hand": 1})
    assert missing.status_code == 404, missing.text


def test_staff_cannot_create_a_product_twice_or_with_a_bad_sku(shop):
    sku = shop.create_product(on_hand=1)
    again = shop.admin.post("/api/v1/inventory/products/",
                            json={"sku": sku, "name": "again", "price": "1.00", "on_hand": 1})
    assert again.status_code == 400 and field_errors(again.json(), "sku"), again.text
    bad = shop.admin.post("/api/v1/inventory/products/",
                          json={"sku": "lower case", "name": "x", "price": "1.00", "on_hand": 1})
    assert bad.status_code == 400 and field_errors(bad.json(), "sku"), bad.text


# --- validation ---------------------------------------------------------------------------

LINE = {"sku": "MUG-2", "quantity": 1}


@pytest.mark.parametrize(
    "body, path",
    [
        pytest.param({"lines": [{"sku": "E2E-NO-SUCH-SKU", "quantity": 1}]}, ("lines", 0, "sku"), id="unknown-sku"),
        pytest.param({"lines": [{"sku": "MUG-2", "quantity": 0}]}, ("lines", 0, "quantity"), id="quantity-zero"),
        pytest.param({"lines": [{"sku": "MUG-2", "quantity": -3}]}, ("lines", 0, "quantity"), id="quantity-negative"),
        pytest.param({"lines": [{"sku": "MUG-2", "quantity": 101}]}, ("lines", 0, "quantity"), id="quantity-101"),
        pytest.param({"lines": [{"sku": "MUG-2", "quantity": "many"}]}, ("lines", 0, "quantity"), id="quantity-text"),
        pytest.param({"lines": [{"quantity": 1}]}, ("lines", 0, "sku"), id="sku-missing"),
        pytest.param({"lines": []}, ("lines",), id="empty-lines"),
        pytest.param({}, ("lines",), id="no-lines"),
        pytest.param({"lines": "MUG-2"}, ("lines",), id="lines-not-a-list"),
        pytest.param({"lines": [{"sku": f"SKU-{i}", "quantity": 1} for i in range(21)]}, ("lines",),
                     id="21-lines"),
        pytest.param({"lines": [LINE, LINE]}, ("lines", 1, "sku"), id="sku-twice"),
    ],
)
def test_invalid_orders_get_400_naming_the_field(shop, body, path):
    response = shop.alice.post(ORDERS, json=body)
    assert response.status_code == 400, response.text
    assert field_errors(response.json(), *path)


def test_exactly_the_limits_are_accepted(shop):
    skus = [shop.create_product(on_hand=200) for _ in range(2)]
    order_id = shop.order(shop.alice, {skus[0]: 100, skus[1]: 1})
    shop.wait_summary(shop.alice, order_id, "CONFIRMED")


def test_malformed_json_is_400(shop):
    response = shop.alice.post(ORDERS, content=b'{"lines": [', headers={"Content-Type": "application/json"})
    assert response.status_code == 400, response.text
    assert "JSON parse error" in response.json()["detail"]


def test_an_overlong_idempotency_key_is_400_naming_the_header(shop):
    response = shop.place(shop.alice, {"MUG-2": 1}, key="k" * 201)
    assert response.status_code == 400, response.text
    assert field_errors(response.json(), "Idempotency-Key")


# --- the platform's own endpoints -----------------------------------------------------

def test_openapi_schema_docs_and_health(shop):
    schema = shop.anonymous.get("/api/schema/", params={"format": "json"})
    assert schema.status_code == 200, schema.text[:500]
    document = schema.json()
    assert document["openapi"].startswith("3.")
    assert "/api/v1/orders/" in document["paths"]
    assert "/api/v1/read/orders/{order_id}/" in document["paths"]

    yaml = shop.anonymous.get("/api/schema/")
    assert yaml.status_code == 200 and "/api/v1/orders/" in yaml.text

    docs = shop.anonymous.get("/api/docs/")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()

    health = shop.anonymous.get("/healthz")
    assert health.status_code == 200 and health.json()["status"] == "ok"
    ready = shop.anonymous.get("/readyz")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"
