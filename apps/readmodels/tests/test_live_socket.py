"""The WebSocket endpoints in process (config.asgi's application, the in-memory channel
layer): who may connect and follow what, and that a client converges on the change log
whatever it missed (resume, snapshot, a push lost in the channel layer)."""

from __future__ import annotations

import asyncio
import uuid
from decimal import Decimal

import pytest
from channels.db import database_sync_to_async
from django.contrib.auth import get_user_model
from django.db import transaction
from django.test import Client
from rest_framework.authtoken.models import Token

from apps.readmodels.live import changelog, sockets

from .asgi_clients import Socket
from .snapshots import order_snapshot_project

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")

ORIGIN = (b"origin", b"http://127.0.0.1:8000")


@pytest.fixture(autouse=True)
def fresh_channel_layer(settings):
    # A new in-memory layer per test: each test runs its own event loop.
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}


@pytest.fixture
def application():
    from config.asgi import application

    return application


@pytest.fixture
def users(db):
    model = get_user_model()
    return {name: model.objects.create_user(name, password="pw", is_staff=(name == "staff"))
            for name in ("alice", "bob", "staff")}


@pytest.fixture
def cookie(users) -> dict[str, tuple[bytes, bytes]]:
    """Each user's session cookie header (made before the event loop runs)."""
    return {name: session_header(user) for name, user in users.items()}


@pytest.fixture
def token(users) -> dict[str, tuple[bytes, bytes]]:
    """Each user's ``Authorization: Token`` header."""
    return {name: token_header(user) for name, user in users.items()}


def token_header(user) -> tuple[bytes, bytes]:
    return b"authorization", f"Token {Token.objects.get_or_create(user=user)[0].key}".encode()


def session_header(user) -> tuple[bytes, bytes]:
    client = Client()
    client.force_login(user)
    return b"cookie", f"sessionid={client.cookies['sessionid'].value}".encode()


def record(stream: str, *, key: str = "k", version: int = 1, document: dict | None = None) -> int:
    """One change on ``stream`` as a projection records it (pushed after commit)."""
    with transaction.atomic(using=changelog.DB):
        change = changelog.change_record(stream=stream, kind="order", key=key, version=version,
                                       document=document or {"id": key, "version": version})
    return change.position


arecord = database_sync_to_async(record)


def run(scenario):
    asyncio.run(asyncio.wait_for(scenario, 30))


async def opened(application, path: str, *headers) -> Socket:
    socket = Socket(application, path, headers)
    assert await socket.connect(), f"{path} refused the handshake"
    return socket


async def refused_at_handshake(application, path: str, *headers) -> bool:
    return not await Socket(application, path, headers).connect()


async def frames_until(socket, frame_type: str) -> list[dict]:
    """Frames up to and including the first of ``frame_type``."""
    seen = []
    while True:
        frame = await socket.receive_json()
        seen.append(frame)
        if frame["type"] == frame_type:
            return seen


async def subscribe(socket, stream: str, after: int | None = None) -> list[dict]:
    await socket.send_json({"action": "subscribe", "stream": stream, "after": after})
    return await frames_until(socket, "subscribed")


# --- who may connect -------------------------------------------------------------------------

@pytest.mark.parametrize("path", ["/ws/v1/streams/", "/ws/v1/orders/", "/ws/v1/catalog/", "/ws/v1/stock/"])
def test_anonymous_is_closed_with_4401(application, path):
    async def scenario():
        socket = await opened(application, path, ORIGIN)
        assert await socket.close_code() == sockets.NOT_SIGNED_IN

    run(scenario())


@pytest.mark.parametrize("origin", [b"http://evil.example", b"null"])
def test_a_foreign_origin_is_refused_at_the_handshake_even_signed_in(application, users, origin, cookie):
    async def scenario():
        assert await refused_at_handshake(application, "/ws/v1/streams/", (b"origin", origin),
                                          cookie["alice"])

    run(scenario())


def test_a_foreign_origin_is_refused_even_with_a_token(application, users, token):
    async def scenario():
        assert await refused_at_handshake(application, "/ws/v1/streams/", (b"origin", b"http://evil.example"),
                                          token["alice"])

    run(scenario())


def test_a_session_cookie_without_origin_is_refused(application, users, cookie):
    async def scenario():
        assert await refused_at_handshake(application, "/ws/v1/streams/", cookie["alice"])

    run(scenario())


def test_a_token_header_signs_in_without_origin(application, users, token):
    async def scenario():
        socket = await opened(application, "/ws/v1/streams/", token["alice"])
        frames = await subscribe(socket, "orders")
        assert [f["type"] for f in frames] == ["snapshot", "subscribed"]
        assert frames[0]["stream"] == "orders"
        await socket.disconnect()

    run(scenario())


def test_a_token_in_the_query_string_is_not_read(application, users):
    key = Token.objects.get_or_create(user=users["alice"])[0].key

    async def scenario():
        assert await refused_at_handshake(application, f"/ws/v1/streams/?token={key}")
        with_origin = await opened(application, f"/ws/v1/streams/?token={key}", ORIGIN)
        assert await with_origin.close_code() == sockets.NOT_SIGNED_IN

    run(scenario())


def test_an_unknown_token_is_anonymous(application):
    async def scenario():
        socket = await opened(application, "/ws/v1/streams/", (b"authorization", b"Token not-a-key"))
        assert await socket.close_code() == sockets.NOT_SIGNED_IN

    run(scenario())


# --- who may follow what ---------------------------------------------------------------------

def test_a_customer_cannot_follow_someone_elses_order(application, users, cookie):
    order_id = uuid.uuid4()
    order_snapshot_project(order_id=order_id, customer_id=users["alice"].id, status="PENDING", reason="",
                           lines=[], total=Decimal("1"), version=1)

    async def scenario():
        bob = await opened(application, "/ws/v1/streams/", ORIGIN, cookie["bob"])
        await bob.send_json({"action": "subscribe", "stream": f"order:{order_id}", "after": None})
        refused = await bob.receive_json()
        assert refused["type"] == "refused" and refused["stream"] == f"order:{order_id}"
        # ...and is sent nothing of it when it changes.
        await database_sync_to_async(order_snapshot_project)(
            order_id=order_id, customer_id=users["alice"].id, status="CONFIRMED", reason="", lines=[],
            total=Decimal("1"), version=2)
        assert await bob.receive_nothing(timeout=0.3)

        alice = await opened(application, "/ws/v1/streams/", ORIGIN, cookie["alice"])
        frames = await subscribe(alice, f"order:{order_id}")
        assert frames[0]["type"] == "snapshot"
        assert [d["id"] for d in frames[0]["documents"]] == [str(order_id)]
        await bob.disconnect()
        await alice.disconnect()

    run(scenario())


@pytest.mark.parametrize("stream", ["stock", "dashboard"])
def test_staff_streams_refuse_customers(application, users, stream, cookie):
    async def scenario():
        fixed = await opened(application, f"/ws/v1/{stream}/", ORIGIN, cookie["alice"])
        assert await fixed.close_code() == sockets.REFUSED
        shared = await opened(application, "/ws/v1/streams/", ORIGIN, cookie["alice"])
        await shared.send_json({"action": "subscribe", "stream": stream})
        assert (await shared.receive_json())["type"] == "refused"
        await shared.disconnect()

        staff = await opened(application, "/ws/v1/streams/", ORIGIN, cookie["staff"])
        assert [f["type"] for f in await subscribe(staff, stream)] == ["snapshot", "subscribed"]
        await staff.disconnect()
        board = await opened(application, f"/ws/v1/{stream}/", ORIGIN, cookie["staff"])
        assert await board.receive_nothing(timeout=0.2)  # connected and open
        await board.disconnect()

    run(scenario())


def test_frames_outside_the_protocol_get_an_error_not_a_crash(application, users, token):
    # Frames that are not JSON at all close the socket: test_live_limits.py.
    async def scenario():
        socket = await opened(application, "/ws/v1/streams/", token["alice"])
        await socket.send_json({"action": "subscribe", "stream": "orders", "after": "7"})
        assert (await socket.receive_json())["type"] == "error"
        assert (await subscribe(socket, "catalog"))[-1]["type"] == "subscribed"  # still serving
        await socket.disconnect()

    run(scenario())


# --- no lost updates ---------------------------------------------------------------------------

def test_resume_after_a_gap_sends_exactly_the_missed_positions(application, users, cookie):
    alice = users["alice"]
    stream = changelog.customer_stream(alice.id)
    for version in (1, 2):
        record(stream, key="o1", version=version)

    async def scenario():
        socket = await opened(application, "/ws/v1/streams/", ORIGIN, cookie["alice"])
        frames = await subscribe(socket, "orders")
        assert frames[0]["type"] == "snapshot" and frames[0]["position"] == 2
        first = await arecord(stream, key="o1", version=3)
        live_change = await socket.receive_json()
        assert (live_change["type"], live_change["stream"], live_change["position"]) == ("change", "orders", first)
        last_seen = live_change["position"]
        await socket.disconnect()

        missed = [await arecord(stream, key="o2", version=v) for v in (1, 2, 3)]
        await arecord(changelog.CATALOG, key="sku")  # another stream: not part of the resume

        socket = await opened(application, "/ws/v1/streams/", ORIGIN, cookie["alice"])
        frames = await subscribe(socket, "orders", after=last_seen)
        assert [f["type"] for f in frames] == ["change", "change", "change", "subscribed"]
        assert [f["position"] for f in frames[:3]] == missed == [last_seen + 1, last_seen + 2, last_seen + 3]
        assert [f["version"] for f in frames[:3]] == [1, 2, 3]
        assert frames[-1]["position"] == missed[-1]
        assert await socket.receive_nothing(timeout=0.3)
        # ...and live from there, without repeats.
        after = await arecord(stream, key="o2", version=4)
        assert (await socket.receive_json())["position"] == after == missed[-1] + 1
        await socket.disconnect()

    run(scenario())


def test_a_resume_older_than_the_log_gets_a_snapshot(application, users, token):
    from datetime import timedelta

    stream = changelog.customer_stream(users["alice"].id)
    for version in (1, 2, 3):
        record(stream, key="o1", version=version)
    changelog.changes_prune(older_than=timedelta(seconds=-1))

    async def scenario():
        socket = await opened(application, "/ws/v1/streams/", token["alice"])
        frames = await subscribe(socket, "orders", after=1)
        assert [(f["type"], f["position"]) for f in frames] == [("snapshot", 3), ("subscribed", 3)]
        await socket.disconnect()

    run(scenario())


def test_a_push_lost_in_the_channel_layer_is_refilled_from_the_log(application, users, monkeypatch, token):
    stream = changelog.customer_stream(users["alice"].id)
    publish = changelog.change_push
    dropped = []

    def lossy_publish(*, stream, change):
        if change["version"] == 2:  # Channels' delivery is at most once
            dropped.append(change["position"])
            return
        publish(stream=stream, change=change)

    async def scenario():
        socket = await opened(application, "/ws/v1/streams/", token["alice"])
        assert (await subscribe(socket, "orders"))[-1]["position"] == 0
        monkeypatch.setattr(changelog, "change_push", lossy_publish)
        positions = [await arecord(stream, key="o1", version=v) for v in (1, 2, 3)]
        assert dropped == [positions[1]]
        got = [await socket.receive_json() for _ in positions]
        assert [(f["position"], f["version"]) for f in got] == [(1, 1), (2, 2), (3, 3)]
        assert await socket.receive_nothing(timeout=0.3)
        await socket.disconnect()

    run(scenario())


def test_a_fixed_endpoint_refills_holes_from_the_moment_it_connects(application, cookie, monkeypatch):
    record(changelog.CATALOG, key="a")
    publish = changelog.change_push

    def lossy_publish(*, stream, change):
        if change["key"] != "lost":
            publish(stream=stream, change=change)

    async def scenario():
        socket = await opened(application, "/ws/v1/catalog/", ORIGIN, cookie["alice"])
        assert await socket.receive_nothing(timeout=0.1)
        monkeypatch.setattr(changelog, "change_push", lossy_publish)
        lost = await arecord(changelog.CATALOG, key="lost")  # the first change after connecting
        pushed = await arecord(changelog.CATALOG, key="b")
        got = [await socket.receive_json() for _ in range(2)]
        assert [(f["position"], f["key"]) for f in got] == [(lost, "lost"), (pushed, "b")] == [(2, "lost"), (3, "b")]
        await socket.disconnect()

    run(scenario())


def test_one_orders_subscription_sees_only_its_order(application, users, token):
    alice = users["alice"]
    mine, other = uuid.uuid4(), uuid.uuid4()
    for order_id in (mine, other):
        order_snapshot_project(order_id=order_id, customer_id=alice.id, status="PENDING", reason="",
                               lines=[], total=Decimal("1"), version=1)

    async def scenario():
        socket = await opened(application, "/ws/v1/streams/", token["alice"])
        await subscribe(socket, f"order:{mine}")
        await subscribe(socket, "orders")
        for order_id in (other, mine):
            await database_sync_to_async(order_snapshot_project)(
                order_id=order_id, customer_id=alice.id, status="CONFIRMED", reason="", lines=[],
                total=Decimal("1"), version=2)
        got = []
        while len(got) < 3:
            frame = await socket.receive_json()
            got.append((frame["stream"], frame["key"]))
        assert got == [("orders", str(other)), (f"order:{mine}", str(mine)), ("orders", str(mine))]
        await socket.send_json({"action": "unsubscribe", "stream": "orders"})
        assert (await socket.receive_json())["type"] == "unsubscribed"
        await database_sync_to_async(order_snapshot_project)(
            order_id=mine, customer_id=alice.id, status="CANCELLED", reason="", lines=[],
            total=Decimal("1"), version=3)
        frame = await socket.receive_json()
        assert (frame["stream"], frame["key"], frame["version"]) == (f"order:{mine}", str(mine), 3)
        assert await socket.receive_nothing(timeout=0.3)
        await socket.disconnect()

    run(scenario())


def test_the_orders_endpoint_pushes_change_frames_live_from_connect(application, users, cookie):
    alice = users["alice"]
    order_id = uuid.uuid4()

    async def scenario():
        socket = await opened(application, "/ws/v1/orders/", ORIGIN, cookie["alice"])
        assert await socket.receive_nothing(timeout=0.1)  # live only: no snapshot unless asked
        await database_sync_to_async(order_snapshot_project)(
            order_id=order_id, customer_id=alice.id, status="PENDING", reason="", lines=[],
            total=Decimal("1"), version=1)
        frame = await socket.receive_json()
        assert (frame["type"], frame["kind"], frame["stream"]) == ("change", "order", "orders")
        assert frame["data"]["id"] == str(order_id) and isinstance(frame["committed_at"], float)
        assert frame["position"] >= 1 and frame["version"] == 1
        position = frame["position"]
        # A client that reconnects asks for what it missed on this endpoint too.
        frames = await subscribe(socket, "orders", after=position - 1)
        assert [(f["type"], f["position"]) for f in frames] == [("change", position), ("subscribed", position)]
        await socket.send_json({"action": "subscribe", "stream": "stock"})
        assert (await socket.receive_json())["type"] == "refused"
        await socket.disconnect()

    run(scenario())
