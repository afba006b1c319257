"""The live streams over real HTTP, embedded and in services mode (through the gateway):
an API client signs in with a token header (no Origin), follows its orders on
/ws/v1/streams/ and over SSE, and after being away is sent exactly the positions it missed."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
import websockets

from .harness import SETTLE_TIMEOUT, Shop

pytestmark = pytest.mark.e2e


def _ws_url(platform, path: str) -> str:
    return platform.base_url.replace("http://", "ws://") + path


async def _frames_until(socket, done) -> list[dict]:
    seen = []
    while True:
        frame = json.loads(await socket.recv())
        seen.append(frame)
        if done(frame):
            return seen


def _settle_one_order(shop: Shop, sku: str) -> str:
    order_id = shop.order(shop.alice, {sku: 1})
    shop.wait_summary(shop.alice, order_id, "CONFIRMED")
    return order_id


def test_a_token_client_follows_its_orders_and_resumes_exactly(e2e_platform):
    shop = Shop(e2e_platform)
    sku = shop.create_product(on_hand=10)
    url = _ws_url(e2e_platform, "/ws/v1/streams/")
    auth = {"Authorization": f"Token {e2e_platform.token('alice')}"}  # and no Origin: not a browser

    async def follow_one_order() -> tuple[str, int]:
        async with websockets.connect(url, additional_headers=auth) as socket:
            await socket.send(json.dumps({"action": "subscribe", "stream": "orders"}))
            frames = await asyncio.wait_for(_frames_until(socket, lambda f: f["type"] == "subscribed"), SETTLE_TIMEOUT)
            assert frames[0]["type"] == "snapshot" and frames[0]["stream"] == "orders"
            last = frames[-1]["position"]
            order_id = (await asyncio.to_thread(shop.order, shop.alice, {sku: 1}))
            changes = await asyncio.wait_for(_frames_until(
                socket, lambda f: f["type"] == "change" and f["key"] == order_id and f["data"]["status"] == "CONFIRMED"),
                SETTLE_TIMEOUT)
            positions = [f["position"] for f in changes]
            assert positions == list(range(last + 1, last + 1 + len(positions))), positions
            return order_id, positions[-1]

    async def resume(after: int) -> list[dict]:
        async with websockets.connect(url, additional_headers=auth) as socket:
            await socket.send(json.dumps({"action": "subscribe", "stream": "orders", "after": after}))
            return await asyncio.wait_for(_frames_until(socket, lambda f: f["type"] == "subscribed"), SETTLE_TIMEOUT)

    _, last_seen = asyncio.run(follow_one_order())
    missed_order = _settle_one_order(shop, sku)  # while away
    frames = asyncio.run(resume(last_seen))
    changes, subscribed = frames[:-1], frames[-1]
    assert [f["type"] for f in changes] == ["change"] * len(changes)
    assert [f["position"] for f in changes] == list(range(last_seen + 1, subscribed["position"] + 1))
    assert changes and changes[-1]["key"] == missed_order and changes[-1]["data"]["status"] == "CONFIRMED"


def test_query_string_tokens_and_foreign_orders_are_refused(e2e_platform):
    shop = Shop(e2e_platform)
    sku = shop.create_product(on_hand=5)
    alices_order = shop.order(shop.alice, {sku: 1})
    shop.wait_summary(shop.alice, alices_order, {"PENDING", "CONFIRMED"})
    url = _ws_url(e2e_platform, "/ws/v1/streams/")

    async def with_token_in_url():
        async with websockets.connect(f"{url}?token={e2e_platform.token('alice')}"):
            pass

    with pytest.raises(websockets.InvalidStatus) as refused:
        asyncio.run(with_token_in_url())
    assert refused.value.response.status_code == 403

    async def bob_asks_for_alices_order() -> dict:
        headers = {"Authorization": f"Token {e2e_platform.token('bob')}"}
        async with websockets.connect(url, additional_headers=headers) as socket:
            await socket.send(json.dumps({"action": "subscribe", "stream": f"order:{alices_order}"}))
            return json.loads(await asyncio.wait_for(socket.recv(), SETTLE_TIMEOUT))

    assert asyncio.run(bob_asks_for_alices_order()) == {
        "type": "refused", "stream": f"order:{alices_order}", "reason": "no such order of yours"}


def _sse_events(lines, done) -> list[dict]:
    """Events read from a streaming response's ``iter_lines()`` until ``done(event)``."""
    events, current = [], {}
    for line in lines:
        if line == "":
            if "data" in current:
                events.append(current)
                if done(current):
                    return events
            current = {}
        elif not line.startswith(":"):
            field, _, value = line.partition(":")
            value = value.removeprefix(" ")
            current[field] = json.loads(value) if field == "data" else value
    raise AssertionError(f"the event stream ended after {events}")


def test_sse_delivers_live_changes_and_resumes_from_last_event_id(e2e_platform):
    shop = Shop(e2e_platform)
    sku = shop.create_product(on_hand=10)
    headers = {"Authorization": f"Token {e2e_platform.token('alice')}", "Accept": "text/event-stream"}
    with httpx.Client(base_url=e2e_platform.base_url, headers=headers, timeout=SETTLE_TIMEOUT) as client:
        with client.stream("GET", "/api/v1/events/", params={"stream": "orders"}) as response:
            assert response.status_code == 200 and response.headers["content-type"] == "text/event-stream"
            lines = response.iter_lines()
            first = _sse_events(lines, lambda e: e["event"] == "subscribed")
            assert first[0]["event"] == "snapshot"
            order_id = shop.order(shop.alice, {sku: 1})
            live = _sse_events(lines, lambda e: e["data"].get("key") == order_id
                               and e["data"]["data"]["status"] == "CONFIRMED")
            assert [int(e["id"]) for e in live] == list(range(int(first[-1]["id"]) + 1, int(live[-1]["id"]) + 1))
            assert {e["event"] for e in live} == {"order"}
            last_event_id = live[-1]["id"]

        missed_order = _settle_one_order(shop, sku)
        with client.stream("GET", "/api/v1/events/", params={"stream": "orders"},
                           headers={"Last-Event-ID": last_event_id}) as response:
            resumed = _sse_events(response.iter_lines(), lambda e: e["event"] == "subscribed")
    changes = resumed[:-1]
    assert [int(e["id"]) for e in changes] == list(range(int(last_event_id) + 1, int(resumed[-1]["id"]) + 1))
    assert changes[-1]["data"]["key"] == missed_order and changes[-1]["data"]["data"]["status"] == "CONFIRMED"

    anonymous = httpx.get(f"{e2e_platform.base_url}/api/v1/events/", params={"stream": "orders"}, timeout=10)
    assert anonymous.status_code == 401 and anonymous.headers["content-type"] == "application/json"
