"""Server-Sent Events at /api/v1/events/ in process (config.asgi's application, the in-memory
channel layer): the same streams and refusals as the WebSockets, live changes as events
whose id is the position, and an exact resume from Last-Event-ID."""

from __future__ import annotations

import asyncio
import json
import uuid
from decimal import Decimal

import pytest
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer

from apps.readmodels.live import changelog

from .asgi_clients import EventStream
from .snapshots import order_snapshot_project
from .test_live_socket import application, cookie, fresh_channel_layer, record, token, users  # noqa: F401

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")

arecord = database_sync_to_async(record)


def run(scenario):
    asyncio.run(asyncio.wait_for(scenario, 30))


async def refusal(application, path, *headers) -> tuple[int, dict, bytes]:
    stream = EventStream(application, path, headers)
    status = await stream.open()
    body = await stream.body()
    await stream.close()
    return status, json.loads(body), stream.headers.get(b"content-type")


def test_strangers_and_foreign_orders_are_refused_in_json(application, users, token):
    order_id = uuid.uuid4()
    order_snapshot_project(order_id=order_id, customer_id=users["alice"].id, status="PENDING", reason="",
                           lines=[], total=Decimal("1"), version=1)

    async def scenario():
        status, body, content_type = await refusal(application, "/api/v1/events/?stream=orders",
                                                   (b"accept", b"text/event-stream"))
        assert status == 401 and content_type == b"application/json" and body["detail"]
        status, body, _ = await refusal(application, f"/api/v1/events/?stream=order:{order_id}", token["bob"])
        assert status == 403 and "order" in body["detail"]
        status, _, _ = await refusal(application, "/api/v1/events/?stream=stock", token["alice"])
        assert status == 403
        status, _, _ = await refusal(application, "/api/v1/events/", token["alice"])
        assert status == 400
        status, _, _ = await refusal(application, "/api/v1/events/?stream=orders", token["alice"],
                                     (b"last-event-id", b"x"))
        assert status == 400
        # A token is read from the Authorization header only.
        key = token["alice"][1].split()[1].decode()
        status, _, _ = await refusal(application, f"/api/v1/events/?stream=orders&token={key}")
        assert status == 401

    run(scenario())


def test_live_changes_arrive_as_events_whose_id_is_the_position(application, users, cookie):
    stream = changelog.customer_stream(users["alice"].id)
    record(stream, key="o1", version=1)

    async def scenario():
        events = EventStream(application, "/api/v1/events/?stream=orders", [cookie["alice"]])
        assert await events.open() == 200
        assert events.headers[b"content-type"] == b"text/event-stream"
        assert (await events.event())["retry"]
        snapshot = await events.data_event()
        assert (snapshot["event"], snapshot["id"], snapshot["data"]["position"]) == ("snapshot", "1", 1)
        assert (await events.data_event())["event"] == "subscribed"
        position = await arecord(stream, key="o1", version=2)
        change = await events.data_event()
        assert (change["event"], change["id"]) == ("order", str(position))
        assert change["data"]["stream"] == "orders" and change["data"]["version"] == 2
        await arecord(changelog.CATALOG, key="sku")  # not this stream
        assert await events.nothing()
        await events.close()

    run(scenario())


def test_last_event_id_resumes_exactly_after_it(application, users, token):
    stream = changelog.customer_stream(users["alice"].id)
    seen = record(stream, key="o1", version=1)
    missed = [record(stream, key="o1", version=v) for v in (2, 3, 4)]

    async def scenario():
        events = EventStream(application, "/api/v1/events/?stream=orders", [token["alice"],
                             (b"last-event-id", str(seen).encode())])
        assert await events.open() == 200
        got = [await events.data_event() for _ in range(4)]
        assert [(e["event"], int(e["id"])) for e in got] == [("order", p) for p in missed] + [("subscribed", missed[-1])]
        assert await events.nothing()
        await events.close()

        # ?after= for clients that cannot set the header; the header wins over it.
        events = EventStream(application, f"/api/v1/events/?stream=orders&after={missed[0]}",
                             [token["alice"]])
        await events.open()
        assert [int((await events.data_event())["id"]) for _ in range(3)] == missed[1:] + [missed[-1]]
        await events.close()
        events = EventStream(application, "/api/v1/events/?stream=orders&after=0",
                             [token["alice"], (b"last-event-id", str(missed[1]).encode())])
        await events.open()
        assert int((await events.data_event())["id"]) == missed[2]
        await events.close()

    run(scenario())


def test_heartbeats_keep_an_idle_stream_alive_and_a_gone_client_leaves_the_group(application, users, token,
                                                                                  settings):
    settings.WAYBILL_SSE_HEARTBEAT_SECONDS = 0.05
    group = changelog.stream_group(changelog.CATALOG)

    async def scenario():
        events = EventStream(application, "/api/v1/events/?stream=catalog", [token["alice"]])
        await events.open()
        assert (await events.data_event())["event"] == "snapshot"
        assert (await events.data_event())["event"] == "subscribed"
        assert (await events.event())["comment"] == "keep-alive"
        layer = get_channel_layer()
        assert len(layer.groups.get(group, {})) == 1
        await events.close()
        assert not layer.groups.get(group)

    run(scenario())


def test_the_event_stream_is_in_the_api_schema(client):
    response = client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert response.status_code == 200
    operation = json.loads(response.content)["paths"]["/api/v1/events/"]["get"]
    assert "text/event-stream" in operation["responses"]["200"]["content"]
    assert {p["name"] for p in operation["parameters"]} >= {"stream", "after", "Last-Event-ID"}
