"""The throttles' counters in Redis cost a process one pool of connections, not one
connection per request: under ASGI each request gets cache objects of its own
(django.core.cache.caches is per request context), so a pool kept per cache object opened
a connection per request that only garbage collection closed (Django ticket #35651). The
soak run saw it as the gateway-facing web's and Redis's open files rising and falling."""

import asyncio

import httpx
import pytest
import redis as redis_py
from django.core.asgi import get_asgi_application
from django.test import override_settings
from rest_framework.throttling import ScopedRateThrottle

from config.settings.limits import throttle_cache

pytestmark = pytest.mark.django_db(databases=["default"])

SIGN_INS = 20


def _connections_received(url: str) -> int:
    with redis_py.Redis.from_url(url) as client:
        return client.info("stats")["total_connections_received"]


def test_requests_of_one_process_share_its_redis_connections(private_redis, monkeypatch):
    # A Redis of its own (tests/conftest.py): the shared one's connections count the services deployment's too.
    monkeypatch.setattr(ScopedRateThrottle, "THROTTLE_RATES", {"auth": f"{SIGN_INS * 10}/minute"})

    async def sign_ins() -> list[int]:
        # Django's ASGI handler, each request in a task of its own, as uvicorn runs them: the
        # cache objects a request makes live in its task's context and go with it.
        transport = httpx.ASGITransport(app=get_asgi_application())
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            sign_in = {"username": "nobody", "password": "wrong"}
            return [(await asyncio.create_task(client.post("/api/v1/auth/token/", json=sign_in))).status_code
                    for _ in range(SIGN_INS)]

    with override_settings(CACHES=throttle_cache(private_redis.url)):
        before = _connections_received(private_redis.url)
        statuses = asyncio.run(sign_ins())
        opened = _connections_received(private_redis.url) - before - 1  # less this test's own INFO
    assert statuses == [400] * SIGN_INS, "each sign-in was refused for its password, not throttled"
    with redis_py.Redis.from_url(private_redis.url) as client:
        assert client.keys("*throttle_auth*"), "the throttle counted in Redis"
    assert 1 <= opened <= 2, f"{SIGN_INS} requests opened {opened} Redis connections"
