"""Bad bodies on every write endpoint, in process: deep JSON is a 400, a body over the limit
a 413, both JSON naming the limit; never a 500, never HTML under /api/, with DEBUG on or off
(config/api.py)."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from rest_framework.authtoken.models import Token

pytestmark = pytest.mark.django_db(databases="__all__")

# 20 KB of nesting, as in issue 10: deep enough to raise RecursionError in json.load.
DEEP = b'{"lines": ' + b"[" * 10_000 + b"]" * 10_000 + b"}"


def oversized(settings) -> bytes:
    # Valid JSON, one byte over the limit: refused for its size alone.
    return b'{"x": "' + b"a" * (settings.WAYBILL_REQUEST_MAX_BYTES - 8) + b'"}'


@pytest.fixture
def staff_client(db) -> Client:
    user = get_user_model().objects.create_user("ops", password="x" * 20, is_staff=True)
    return Client(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=user).key}")


# Every write endpoint that reads a body, the anonymous one included (cancel reads none).
WRITES = [
    ("post", "/api/v1/auth/token/"),
    ("post", "/api/v1/orders/"),
    ("post", "/api/v1/webhooks/"),
    ("post", "/api/v1/inventory/products/"),
    ("patch", "/api/v1/inventory/products/KETTLE-1/"),
]


def _send(client: Client, method: str, path: str, body: bytes):
    return getattr(client, method)(path, data=body, content_type="application/json")


def _assert_json_detail(response, status: int, *words: str) -> None:
    assert response.status_code == status, (response.status_code, response.content[:300])
    assert response["Content-Type"] == "application/json", response["Content-Type"]
    detail = response.json()["detail"]
    for word in words:
        assert word in detail, detail


@pytest.mark.parametrize("debug", [False, True], ids=["debug-off", "debug-on"])
@pytest.mark.parametrize(("method", "path"), WRITES)
def test_deep_json_is_a_400_naming_the_limit(staff_client, settings, method, path, debug):
    settings.DEBUG = debug
    _assert_json_detail(_send(staff_client, method, path, DEEP), 400, "nested deeper than", "WAYBILL_JSON_MAX_DEPTH")


@pytest.mark.parametrize(("method", "path"), WRITES)
def test_a_body_over_the_limit_is_a_413_in_json(staff_client, settings, method, path):
    _assert_json_detail(_send(staff_client, method, path, oversized(settings)), 413, "WAYBILL_REQUEST_MAX_BYTES")


def test_a_form_body_over_the_limit_is_a_413_on_the_token_endpoint(settings):
    body = {"username": "x" * (settings.WAYBILL_REQUEST_MAX_BYTES + 1), "password": "y"}
    _assert_json_detail(Client().post("/api/v1/auth/token/", body), 413, "WAYBILL_REQUEST_MAX_BYTES")


def test_the_sign_in_form_answers_413_to_a_body_over_the_limit(settings):
    response = Client().post("/accounts/login/", {"username": "x" * (settings.WAYBILL_REQUEST_MAX_BYTES + 1)})
    assert response.status_code == 413
    assert b"WAYBILL_REQUEST_MAX_BYTES" in response.content


def test_nul_in_a_string_is_a_400_not_a_database_error(staff_client):
    response = _send(staff_client, "post", "/api/v1/inventory/products/",
                     b'{"sku": "NUL-1", "name": "a\\u0000b", "price": "1.00", "on_hand": 1}')
    _assert_json_detail(response, 400, "NUL")


@pytest.mark.parametrize("debug", [False, True], ids=["debug-off", "debug-on"])
def test_errors_under_api_are_json_whatever_debug_is(settings, debug):
    settings.DEBUG = debug
    client = Client(raise_request_exception=False)
    _assert_json_detail(client.get("/api/v1/no-such-thing/"), 404, "Not Found")
    # An unhandled exception: a JSON 500 that says nothing about it.
    settings.ROOT_URLCONF = "tests.api_limits_urls"
    response = client.get("/api/v1/explode/")
    _assert_json_detail(response, 500, "Internal Server Error")
    assert b"secret-of-the-traceback" not in response.content


def test_a_database_that_does_not_answer_is_a_503_to_retry(settings):
    settings.ROOT_URLCONF = "tests.api_limits_urls"
    response = Client(raise_request_exception=False).get("/api/v1/database-gone/")
    _assert_json_detail(response, 503, "nothing was done")
    assert response["Retry-After"] == "5"
    assert b"127.0.0.1" not in response.content


def test_pages_outside_the_api_keep_their_html_errors():
    response = Client().get("/no-such-page/")
    assert response.status_code == 404
    assert response["Content-Type"].startswith("text/html")
