"""Hostile input over real HTTP, embedded and in services mode (through the gateway): deep
JSON and oversized bodies on the write endpoints, bad WebSocket frames, and more live
connections than one user may hold. Each gets a clear refusal in JSON or a close code,
never a 500 or an HTML page, and the platform keeps serving."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
import websockets

from .harness import SETTLE_TIMEOUT, Shop, wait_for

pytestmark = pytest.mark.e2e

DEEP = b'{"lines": ' + b"[" * 10_000 + b"]" * 10_000 + b"}"  # 20 KB, as in issue 10
TEN_MEGABYTES = b'{"x": "' + b"a" * (10 * 1024 * 1024) + b'"}'
PER_USER = 20  # WAYBILL_LIVE_CONNECTIONS_PER_USER's default
TOO_MANY = 4429


def _is_json_refusal(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, (response.status_code, response.text[:300])
    assert response.headers["content-type"] == "application/json", response.headers["content-type"]
    assert len(response.content) < 1000 and "Traceback" not in response.text, response.text[:300]
    return response.json()


@pytest.mark.parametrize(("user", "method", "path"), [
    (None, "POST", "/api/v1/auth/token/"),
    ("alice", "POST", "/api/v1/orders/"),
    ("alice", "POST", "/api/v1/webhooks/"),
    ("admin", "PATCH", "/api/v1/inventory/products/KETTLE-1/"),
])
def test_deep_json_and_huge_bodies_are_refused_in_json(shop, user, method, path):
    client = shop.client(user)
    headers = {"Content-Type": "application/json"}
    deep = _is_json_refusal(client.request(method, path, content=DEEP, headers=headers), 400)
    assert "nested deeper" in deep["detail"]
    huge = _is_json_refusal(client.request(method, path, content=TEN_MEGABYTES, headers=headers), 413)
    assert "limit" in huge["detail"]


def test_errors_under_the_api_are_json_and_pages_show_no_settings(shop):
    _is_json_refusal(shop.anonymous.get("/api/v1/no-such-endpoint/"), 404)
    page = shop.anonymous.get("/no-such-page/")
    assert page.status_code == 404 and "WAYBILL_" not in page.text  # DEBUG is off


def test_the_sign_in_form_refuses_a_huge_body_with_413(e2e_platform):
    with httpx.Client(base_url=e2e_platform.base_url, timeout=30) as browser:
        browser.get("/accounts/login/")  # the CSRF cookie, or the form is a 403 before it reads the body
        response = browser.post("/accounts/login/", content=b"username=" + b"a" * (10 * 1024 * 1024),
                                headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert response.status_code == 413, response.text[:300]


def _ws_url(platform, path: str) -> str:
    return platform.base_url.replace("http://", "ws://") + path


async def _close_code_after(platform, token: str, frame: str) -> int:
    async with websockets.connect(_ws_url(platform, "/ws/v1/streams/"), max_size=None,
                                  additional_headers={"Authorization": f"Token {token}"}) as socket:
        await socket.send(frame)
        try:
            while True:
                await asyncio.wait_for(socket.recv(), SETTLE_TIMEOUT)
        except websockets.ConnectionClosed as closed:
            return closed.rcvd.code


def test_bad_frames_close_the_socket_with_1007_or_1009(e2e_platform):
    token = e2e_platform.token("alice")
    deep = asyncio.run(_close_code_after(e2e_platform, token, "[" * 10_000 + "]" * 10_000))
    assert deep == 1007
    big = asyncio.run(_close_code_after(e2e_platform, token, json.dumps({"stream": "x" * 100_000})))
    assert big == 1009
    assert Shop(e2e_platform).catalog()  # still serving


async def _quiet(socket, seconds: float = 0.3) -> bool:
    """True when the socket says nothing for a moment (accepted sockets on streams/ wait to
    be asked; a refused one is told why at once)."""
    try:
        await asyncio.wait_for(socket.recv(), seconds)
    except TimeoutError:
        return True
    return False


def _shares(platform) -> int:
    """How many shares a user has: one per readmodels web process behind the platform's
    address (each counts its own, see apps/readmodels/live/connections.py). The gateway
    takes the replicas in turn, so a user's sockets fill them evenly."""
    replicas = getattr(platform, "replica_names", None)
    return len(replicas("readmodels-web")) if replicas else 1


def _a_full_share_fits_and_no_more(platform, username: str) -> bool:
    url = _ws_url(platform, "/ws/v1/streams/")
    auth = {"Authorization": f"Token {platform.token(username)}"}

    async def attempt() -> bool:
        sockets = [await websockets.connect(url, additional_headers=auth) for _ in range(PER_USER * _shares(platform))]
        try:
            if not all(await asyncio.gather(*(_quiet(socket) for socket in sockets))):
                return False  # places still held by connections the server has not seen close
            refused = await websockets.connect(url, additional_headers=auth)
            frame = json.loads(await asyncio.wait_for(refused.recv(), SETTLE_TIMEOUT))
            assert "WAYBILL_LIVE_CONNECTIONS_PER_USER" in frame["reason"], frame
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await asyncio.wait_for(refused.recv(), SETTLE_TIMEOUT)
            assert closed.value.rcvd.code == TOO_MANY
            sse = await asyncio.to_thread(httpx.get, f"{platform.base_url}/api/v1/events/?stream=catalog",
                                          headers=auth, timeout=SETTLE_TIMEOUT)
            assert sse.status_code == 429 and int(sse.headers["Retry-After"]) > 0, sse.text
            return True
        finally:
            for socket in sockets:
                await socket.close()

    return asyncio.run(asyncio.wait_for(attempt(), SETTLE_TIMEOUT))


def test_one_user_holds_at_most_its_share_of_live_connections_and_gets_them_back(e2e_platform):
    # Twice: the second time only fits if the first set's places were all given back.
    for attempt in ("first", "second"):
        wait_for(lambda: _a_full_share_fits_and_no_more(e2e_platform, "bob"), SETTLE_TIMEOUT,
                 f"the {attempt} set of {PER_USER} sockets to fit, and one more to be refused")
