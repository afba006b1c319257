"""The payment sandbox over real HTTP: a child process per test, driven with httpx.

Every wait is bounded (client timeouts, start/stop timeouts, a barrier timeout); nothing
sleeps. Each test gets a fresh process and data folder, so stats start at zero.
"""

from __future__ import annotations

import ast
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

import paymentsandbox
from paymentsandbox.process import SandboxProcess, SandboxError

TIMEOUT = 10.0


@pytest.fixture
def sandbox(tmp_path):
    process = SandboxProcess(tmp_path / "payments").start()
    yield process
    assert process.stop() == 0, process.log_tail()  # 0: it stopped gracefully on SIGTERM
    assert not process.running


@pytest.fixture
def client(sandbox):
    # trust_env=False: a proxy from the environment must never sit between us and loopback.
    with httpx.Client(base_url=sandbox.url, timeout=TIMEOUT, trust_env=False) as client:
        yield client


def charge(client, amount="12.50", *, key=None, currency="EUR", reference="order-1", headers=None):
    return client.post(
        "/v1/charges",
        json={"amount": amount, "currency": currency, "reference": reference},
        headers={"Idempotency-Key": key or str(uuid.uuid4()), **(headers or {})},
    )


def test_a_charge_succeeds(client, sandbox):
    response = charge(client, "12.5", reference="order-7")

    assert response.status_code == 201
    body = response.json()
    assert body["id"].startswith("ch_")
    assert body["created_at"].endswith("Z")
    assert {k: body[k] for k in ("status", "amount", "currency", "reference", "decline_code")} == {
        "status": "succeeded", "amount": "12.50", "currency": "EUR", "reference": "order-7", "decline_code": None,
    }
    assert "Idempotent-Replayed" not in response.headers
    listed = client.get("/v1/charges", params={"reference": "order-7"}).json()["data"]
    assert listed == [{**body, "refunded": False}]


def test_amounts_from_2000_to_2999_99_are_declined(client, sandbox):
    expected = {"1999.99": "succeeded", "2000.00": "declined", "2999.99": "declined", "3000.00": "succeeded"}
    for amount, status in expected.items():
        response = charge(client, amount)
        assert response.status_code == 201, response.text  # a decline is an answer, not an error
        assert (response.json()["status"], response.json()["decline_code"]) == (
            status, "card_declined" if status == "declined" else None), amount
    assert sandbox.stats()["charges"] == {"succeeded": 2, "declined": 2, "total": 4}


def test_a_repeated_key_replays_the_original_response(client, sandbox):
    first = charge(client, key="key-1")
    # Same JSON content in another key order is the same request.
    again = client.post("/v1/charges", headers={"Idempotency-Key": "key-1"},
                        json={"reference": "order-1", "currency": "EUR", "amount": "12.50"})

    assert (again.status_code, again.content) == (first.status_code, first.content)
    assert again.headers["Idempotent-Replayed"] == "true"
    assert sandbox.stats()["charges"]["total"] == 1


def test_a_declined_charge_is_replayed_too(client, sandbox):
    first = charge(client, "2500.00", key="key-d")
    again = charge(client, "2500.00", key="key-d")

    assert (again.status_code, again.json()["status"]) == (201, "declined")
    assert again.content == first.content
    assert sandbox.stats()["charges"] == {"succeeded": 0, "declined": 1, "total": 1}


def test_a_key_reused_with_another_body_is_a_conflict(client, sandbox):
    charge(client, "10.00", key="key-2")
    response = charge(client, "11.00", key="key-2")

    assert response.status_code == 409
    assert response.json() == {"error": "idempotency_key_reused"}
    # Keys are global: the same key on another endpoint is another request.
    refund = client.post("/v1/refunds", json={"reference": "order-1"}, headers={"Idempotency-Key": "key-2"})
    assert refund.status_code == 409
    assert sandbox.stats()["charges"]["total"] == 1


def test_a_missing_idempotency_key_is_rejected(client, sandbox):
    for path, body in (("/v1/charges", {"amount": "1.00", "currency": "EUR", "reference": "o"}),
                       ("/v1/refunds", {"reference": "o"})):
        response = client.post(path, json=body)
        assert response.status_code == 400
        assert response.json()["field"] == "Idempotency-Key"
    assert sandbox.stats()["charges"]["total"] == 0


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"amount": 12.5, "currency": "EUR", "reference": "o"}, "amount"),  # a JSON number
        ({"amount": "12.345", "currency": "EUR", "reference": "o"}, "amount"),
        ({"amount": "-1.00", "currency": "EUR", "reference": "o"}, "amount"),
        ({"amount": "0.00", "currency": "EUR", "reference": "o"}, "amount"),
        ({"amount": "1e3", "currency": "EUR", "reference": "o"}, "amount"),
        ({"currency": "EUR", "reference": "o"}, "amount"),
        ({"amount": "1.00", "currency": "eur", "reference": "o"}, "currency"),
        ({"amount": "1.00", "currency": "EURO", "reference": "o"}, "currency"),
        ({"amount": "1.00", "currency": "EUR", "reference": ""}, "reference"),
        ({"amount": "1.00", "currency": "EUR", "reference": "o", "metadata": {}}, "metadata"),
        ([1, 2], "body"),
    ],
)
def test_invalid_charges_name_the_field(client, sandbox, body, field):
    response = client.post("/v1/charges", json=body, headers={"Idempotency-Key": "k"})

    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"
    assert response.json()["field"] == field
    assert response.json()["message"]
    # A rejected request is not stored: the key is still free for a valid one.
    assert charge(client, key="k").status_code == 201


def test_refunds(client, sandbox):
    paid = charge(client, "40.00", reference="order-9").json()
    declined = charge(client, "2100.00", reference="order-9").json()
    headers = {"Idempotency-Key": "refund-1"}

    refund = client.post("/v1/refunds", json={"reference": "order-9"}, headers=headers)
    assert refund.status_code == 201
    body = refund.json()
    assert body["id"].startswith("re_")
    assert {k: body[k] for k in ("status", "reference", "amount", "currency")} == {
        "status": "refunded", "reference": "order-9", "amount": "40.00", "currency": "EUR",
    }
    refunded = {c["id"]: c["refunded"] for c in client.get("/v1/charges", params={"reference": "order-9"}).json()["data"]}
    assert refunded == {paid["id"]: True, declined["id"]: False}  # a declined charge took no money

    replay = client.post("/v1/refunds", json={"reference": "order-9"}, headers=headers)
    assert (replay.status_code, replay.content) == (201, refund.content)
    assert replay.headers["Idempotent-Replayed"] == "true"

    second = client.post("/v1/refunds", json={"reference": "order-9"}, headers={"Idempotency-Key": "refund-2"})
    assert second.status_code == 201
    assert (second.json()["status"], second.json()["amount"]) == ("nothing_to_refund", "0.00")
    assert sandbox.stats()["refunds"] == {"refunded": 1, "nothing_to_refund": 1, "total": 2}


def test_an_api_key_is_required_when_configured(tmp_path):
    sandbox = SandboxProcess(tmp_path / "payments", api_key="sk_test_123").start()
    try:
        with httpx.Client(base_url=sandbox.url, timeout=TIMEOUT, trust_env=False) as client:
            assert charge(client).status_code == 401
            assert charge(client, headers={"Authorization": "Bearer wrong"}).json() == {"error": "unauthorized"}
            assert client.get("/v1/charges", params={"reference": "order-1"}).status_code == 401
            assert charge(client, headers={"Authorization": "Bearer sk_test_123"}).status_code == 201
            # The loopback control endpoints need no key.
            assert client.get("/healthz").status_code == 200
            assert sandbox.stats()["charges"]["total"] == 1
    finally:
        assert sandbox.stop() == 0


def test_an_outage_answers_503_until_it_is_switched_off(client, sandbox):
    assert sandbox.configure(outage=True) == {"latency_ms": 0, "failure_rate": 0.0, "outage": True}

    down = charge(client, key="during-outage")
    assert (down.status_code, down.json()) == (503, {"error": "unavailable"})
    assert client.get("/v1/charges", params={"reference": "order-1"}).status_code == 503
    assert client.get("/healthz").status_code == 200  # the process is up, the "provider" is not

    sandbox.configure(outage=False)
    retry = charge(client, key="during-outage")
    assert retry.status_code == 201
    assert "Idempotent-Replayed" not in retry.headers  # the 503 was not stored: the retry ran
    stats = sandbox.stats()
    assert (stats["unavailable"], stats["charges"]["total"]) == (2, 1)


def test_a_failure_rate_of_one_fails_everything_and_records_nothing(client, sandbox):
    sandbox.configure(failure_rate=1.0)

    assert charge(client).status_code == 503
    assert client.post("/v1/refunds", json={"reference": "order-1"},
                       headers={"Idempotency-Key": "r"}).status_code == 503
    stats = sandbox.stats()
    assert stats["charges"]["total"] == 0 and stats["refunds"]["total"] == 0
    assert stats["unavailable"] == 2


def test_latency_is_applied(client, sandbox):
    sandbox.configure(latency_ms=300)

    started = time.monotonic()
    assert charge(client).status_code == 201
    assert 0.3 <= time.monotonic() - started < 5


def test_bad_config_is_rejected(sandbox):
    for settings in ({"failure_rate": 1.5}, {"latency_ms": -1}, {"outage": "yes"}, {"latency": 1}):
        with pytest.raises(SandboxError, match="400"):
            sandbox.configure(**settings)
    assert sandbox.config() == {"latency_ms": 0, "failure_rate": 0.0, "outage": False}


def test_state_survives_a_restart(client, sandbox):
    first = charge(client, key="before-restart", reference="order-r")

    assert sandbox.stop() == 0
    sandbox.start()

    again = charge(client, key="before-restart", reference="order-r")  # same url: the port is kept
    assert (again.status_code, again.content) == (201, first.content)
    assert again.headers["Idempotent-Replayed"] == "true"
    assert [c["id"] for c in client.get("/v1/charges", params={"reference": "order-r"}).json()["data"]] == [
        first.json()["id"]]
    assert sandbox.stats()["charges"]["total"] == 1


def test_concurrent_requests_with_one_key_create_one_charge(client, sandbox):
    workers = 20
    barrier = threading.Barrier(workers, timeout=TIMEOUT)

    def attempt(_):
        barrier.wait()  # release all at once, so they really race for the key
        return charge(client, "99.00", key="racing-key")

    with ThreadPoolExecutor(workers) as pool:
        responses = list(pool.map(attempt, range(workers)))

    assert {r.status_code for r in responses} == {201}
    assert len({r.content for r in responses}) == 1
    assert sum("Idempotent-Replayed" not in r.headers for r in responses) == 1
    assert sandbox.stats()["charges"]["total"] == 1


def test_the_sandbox_imports_the_standard_library_alone():
    """It is an outside service: nothing from Django, the project or any other install."""
    foreign = set()
    for path in Path(paymentsandbox.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:  # relative: the package itself
                names = [node.module]
            else:
                continue
            foreign |= {f"{path.name}: {name}" for name in names
                        if name.split(".")[0] not in sys.stdlib_module_names | {"__future__"}}
    assert foreign == set()
