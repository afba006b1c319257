"""Rate limits: too many orders from one customer, or too many sign-in attempts from one
address, get 429 with Retry-After, and the platform keeps serving everyone else."""

from __future__ import annotations

import httpx
import pytest

from .harness import DEMO_PASSWORD

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("embedded")]


@pytest.fixture
def strict_platform(platform_factory):
    platform = platform_factory("strict", start=False)
    return platform.start(env={"WAYBILL_THROTTLE_ORDERS": "3/minute", "WAYBILL_THROTTLE_AUTH": "4/minute"})


def test_placing_too_many_orders_is_429_with_retry_after(strict_platform):
    alice, bob = strict_platform.client("alice"), strict_platform.client("bob")
    order = {"lines": [{"sku": "MUG-2", "quantity": 1}]}
    answers = [alice.post("/api/v1/orders/", json=order).status_code for _ in range(4)]
    assert answers == [202, 202, 202, 429]
    refused = alice.post("/api/v1/orders/", json=order)
    assert refused.status_code == 429
    assert int(refused.headers["Retry-After"]) > 0
    assert bob.post("/api/v1/orders/", json=order).status_code == 202  # per customer


def test_guessing_passwords_is_429_with_retry_after(strict_platform):
    url = f"{strict_platform.base_url}/api/v1/auth/token/"
    guesses = [httpx.post(url, json={"username": "alice", "password": f"guess-{i}"}).status_code for i in range(4)]
    assert guesses == [400] * 4
    refused = httpx.post(url, json={"username": "alice", "password": DEMO_PASSWORD})
    assert refused.status_code == 429 and int(refused.headers["Retry-After"]) > 0
