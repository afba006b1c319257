"""Limits of the live push path in process: bad WebSocket frames close the socket with a
close code instead of crashing it, and live connections (WebSockets and SSE together) are
refused past the per-user and per-process limits, with counts that return to zero however
the connections end."""

from __future__ import annotations

import asyncio
import json

import pytest

from apps.readmodels.live import connections, sockets

from .asgi_clients import EventStream, Socket
from .test_live_socket import application, fresh_channel_layer, opened, run, token, users  # noqa: F401

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")

COUNTS = connections.live_connections


@pytest.fixture(autouse=True)
def no_connection_left():
    assert (COUNTS.total, dict(COUNTS.by_user)) == (0, {}), "a test before this one leaked a connection"
    yield
    assert (COUNTS.total, dict(COUNTS.by_user)) == (0, {}), "connections still counted after they ended"


# --- frames ---------------------------------------------------------------------------------------

@pytest.mark.parametrize(("frame", "code", "reason"), [
    ("[" * 10_000 + "]" * 10_000, sockets.INVALID_PAYLOAD, "nested deeper"),
    ('{"action": "subscribe", "stream": "a\\u0000b"}', sockets.INVALID_PAYLOAD, "NUL"),
    ("not json", sockets.INVALID_PAYLOAD, "malformed"),
    (json.dumps({"action": "subscribe", "stream": "x" * 70_000}), sockets.MESSAGE_TOO_BIG, "over the limit"),
], ids=["deep", "nul", "not-json", "too-big"])
def test_a_bad_frame_is_answered_with_its_reason_and_a_close_code(application, users, token, frame, code, reason):
    async def scenario():
        socket = await opened(application, "/ws/v1/streams/", token["alice"])
        await socket.send_text(frame)
        error = await socket.receive_json()
        assert error["type"] == "error" and reason in error["reason"], error
        assert await socket.close_code() == code
        await socket.disconnect()

    run(scenario())


# --- connection limits ----------------------------------------------------------------------------

def test_past_the_per_user_limit_sockets_are_closed_with_4429_and_sse_is_a_429(application, users, token, settings):
    settings.WAYBILL_LIVE_CONNECTIONS_PER_USER = 3

    async def scenario():
        held = [await opened(application, "/ws/v1/streams/", token["alice"]) for _ in range(2)]
        events = EventStream(application, "/api/v1/events/?stream=catalog", [token["alice"]])
        assert await events.open() == 200  # the third: WebSockets and SSE share the budget
        assert COUNTS.by_user[users["alice"].id] == 3

        refused = await opened(application, "/ws/v1/streams/", token["alice"])
        assert "WAYBILL_LIVE_CONNECTIONS_PER_USER" in (await refused.receive_json())["reason"]
        assert await refused.close_code() == connections.TOO_MANY
        await refused.disconnect()
        too_many = EventStream(application, "/api/v1/events/?stream=catalog", [token["alice"]])
        assert await too_many.open() == 429
        assert int(too_many.headers[b"retry-after"]) > 0
        assert "WAYBILL_LIVE_CONNECTIONS_PER_USER" in json.loads(await too_many.body())["detail"]
        await too_many.close()

        other = await opened(application, "/ws/v1/streams/", token["bob"])  # bob has his own budget
        assert await other.receive_nothing(timeout=0.1)

        for socket in (*held, other):
            await socket.disconnect()
        await events.close()
        assert (COUNTS.total, dict(COUNTS.by_user)) == (0, {})
        # And the places are free again.
        again = await opened(application, "/ws/v1/streams/", token["alice"])
        assert await again.receive_nothing(timeout=0.1)
        await again.disconnect()

    run(scenario())


def test_past_the_per_process_limit_everyone_is_refused(application, users, token, settings):
    settings.WAYBILL_LIVE_CONNECTIONS_PER_PROCESS = 2

    async def scenario():
        first = await opened(application, "/ws/v1/streams/", token["alice"])
        second = await opened(application, "/ws/v1/streams/", token["bob"])
        refused = await opened(application, "/ws/v1/streams/", token["staff"])
        assert "WAYBILL_LIVE_CONNECTIONS_PER_PROCESS" in (await refused.receive_json())["reason"]
        assert await refused.close_code() == connections.TOO_MANY
        await refused.disconnect()
        for socket in (first, second):
            await socket.disconnect()

    run(scenario())


def test_a_connection_that_ends_abnormally_gives_its_place_back(application, users, token):
    async def scenario():
        # A socket whose application is cancelled (the server shutting down, a crash of
        # the task) never gets a websocket.disconnect.
        socket = await opened(application, "/ws/v1/streams/", token["alice"])
        assert COUNTS.total == 1
        socket.future.cancel()
        await asyncio.gather(socket.future, return_exceptions=True)

        # A socket whose handler raises.
        crashing = await opened(application, "/ws/v1/streams/", token["alice"])
        await crashing.send_input({"type": "websocket.receive", "text": json.dumps(
            {"action": "subscribe", "stream": "orders", "after": None})})
        await crashing.send_input({"type": "no.such.message"})
        with pytest.raises(ValueError, match="No handler"):
            await crashing.wait(3)

        # An SSE client that leaves before the first event was read: the body never started.
        events = EventStream(application, "/api/v1/events/?stream=catalog", [token["alice"]])
        assert await events.open() == 200
        await events.close()

    run(scenario())


def test_counts_after_many_connections_come_and_go(application, users, token):
    async def scenario():
        for _ in range(3):
            sockets = [Socket(application, "/ws/v1/streams/", [token["alice"]]) for _ in range(10)]
            for socket in sockets:
                assert await socket.connect()
            assert COUNTS.by_user[users["alice"].id] == 10
            for socket in sockets:
                await socket.disconnect()

    run(scenario())


def test_the_end_of_a_burst_hands_free_memory_back_once(application, users, token, monkeypatch):
    released = []
    monkeypatch.setattr(connections, "release_memory_later", lambda: released.append(True))
    monkeypatch.setattr(connections, "RELEASE_AFTER_PEAK", 3)

    async def scenario():
        sockets = [await opened(application, "/ws/v1/streams/", token["alice"]) for _ in range(3)]
        for socket in sockets[:2]:
            await socket.disconnect()
        assert released == []  # one still open: the burst is not over
        await sockets[2].disconnect()
        assert released == [True]
        small = await opened(application, "/ws/v1/streams/", token["alice"])
        await small.disconnect()
        assert released == [True]  # a small one after it is not a burst

    run(scenario())
