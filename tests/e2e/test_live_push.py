"""Read-model changes are pushed to the customer's browser over /ws/v1/orders/: in services
mode the readmodels worker's push crosses the Redis channel layer to the web process that
holds the socket, through the gateway."""

from __future__ import annotations

import asyncio
import json

import pytest
import websockets

from .harness import SETTLE_TIMEOUT, Shop

pytestmark = pytest.mark.e2e


async def _changes_until(socket, order_id: str, status: str) -> list[dict]:
    seen = []
    while True:
        change = json.loads(await socket.recv())
        if change["type"] == "change" and change["kind"] == "order" and change["data"]["id"] == order_id:
            assert change["stream"] == "orders" and change["version"] == change["data"]["version"]
            seen.append(change["data"])
            if change["data"]["status"] == status:
                return seen


def test_the_customer_sees_the_order_settle_live(e2e_platform):
    shop = Shop(e2e_platform)
    sku = shop.create_product(on_hand=5)
    base = e2e_platform.base_url
    url = base.replace("http://", "ws://") + "/ws/v1/orders/"

    async def scenario():
        headers = {"Cookie": e2e_platform.session_cookie("alice"), "Origin": base}
        async with websockets.connect(url, additional_headers=headers) as socket:
            response = await asyncio.to_thread(
                shop.alice.post, "/api/v1/orders/", json={"lines": [{"sku": sku, "quantity": 2}]})
            assert response.status_code == 202, response.text
            order_id = response.json()["id"]
            return await asyncio.wait_for(_changes_until(socket, order_id, "CONFIRMED"), SETTLE_TIMEOUT)

    changes = asyncio.run(scenario())
    assert [c["version"] for c in changes] == sorted(c["version"] for c in changes)
    assert changes[-1]["lines"][0]["sku"] == sku


@pytest.mark.parametrize("origin", ["http://evil.example", None])
def test_the_socket_refuses_a_cookie_from_another_site_or_without_origin(e2e_platform, origin):
    base = e2e_platform.base_url
    url = base.replace("http://", "ws://") + "/ws/v1/orders/"
    headers = {"Cookie": e2e_platform.session_cookie("alice")}  # signed in...
    if origin:  # ...but from another site's page (or, without Origin, not from a browser)
        headers["Origin"] = origin

    async def connect():
        async with websockets.connect(url, additional_headers=headers):
            pass

    with pytest.raises(websockets.InvalidStatus) as refused:
        asyncio.run(connect())
    assert refused.value.response.status_code == 403


def test_the_socket_closes_on_strangers_with_4401(e2e_platform):
    base = e2e_platform.base_url
    url = base.replace("http://", "ws://") + "/ws/v1/orders/"

    async def connect():
        async with websockets.connect(url, additional_headers={"Origin": base}) as socket:
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await asyncio.wait_for(socket.recv(), SETTLE_TIMEOUT)
            return closed.value.rcvd.code

    assert asyncio.run(connect()) == 4401
