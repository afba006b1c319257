"""Many WebSocket clients in one asyncio loop, cheap enough not to be the bottleneck.

Each client is a bare ``asyncio.Protocol`` driving the websockets library's sans-I/O
``ClientProtocol`` (handshake, framing, automatic pongs, closing). The receipt time of a
frame is taken first thing in ``data_received``, before any parsing, so the client adds as
little as possible to the measured latency; frames are stored raw and decoded later by
whoever waits for them (``Fleet.drain``).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from websockets.client import ClientProtocol
from websockets.frames import Opcode
from websockets.http11 import Response
from websockets.protocol import State
from websockets.uri import parse_uri


class _Client(asyncio.Protocol):
    def __init__(self, fleet: Fleet, index: int, url: str, headers: dict[str, str]):
        self.fleet, self.index = fleet, index
        self.protocol = ClientProtocol(parse_uri(url), max_size=2**20)
        self.headers = headers
        self.transport: asyncio.Transport | None = None
        self.opened: asyncio.Future = asyncio.get_running_loop().create_future()
        self.closed: asyncio.Future = asyncio.get_running_loop().create_future()

    # --- asyncio.Protocol ------------------------------------------------------------------
    def connection_made(self, transport):
        self.transport = transport
        request = self.protocol.connect()
        for name, value in self.headers.items():
            request.headers[name] = value
        self.protocol.send_request(request)
        self._flush()

    def data_received(self, data: bytes):
        received_at = time.time()  # first: the client's share of the latency stays tiny
        self.protocol.receive_data(data)
        for event in self.protocol.events_received():
            if isinstance(event, Response):
                if self.protocol.state is State.OPEN:
                    self.opened.done() or self.opened.set_result(True)
                else:
                    self.opened.done() or self.opened.set_exception(
                        ConnectionError(f"handshake refused: HTTP {event.status_code}"))
            elif event.opcode is Opcode.TEXT:
                self.fleet.inbox.append((self.index, received_at, event.data))
        self._flush()

    def eof_received(self):
        self.protocol.receive_eof()
        self._flush()
        return False

    def connection_lost(self, exc):
        if not self.opened.done():
            self.opened.set_exception(ConnectionError(f"connection lost during handshake: {exc!r}"))
        if not self.closed.done():
            self.closed.set_result(exc)
        if self.index in self.fleet.open and self.fleet.clients.get(self.index) is self:
            self.fleet._lost(self.index)  # we did not close it: the server did, or the network

    # --- helpers ----------------------------------------------------------------------------
    def _flush(self):
        for chunk in self.protocol.data_to_send():
            if chunk:
                self.transport.write(chunk)
            elif self.transport.can_write_eof():
                self.transport.write_eof()
        if self.protocol.close_expected() and not self.transport.is_closing():
            asyncio.get_running_loop().call_later(2.0, self.transport.close)

    def close(self):
        if self.transport is None or self.transport.is_closing():
            return
        if self.protocol.state is State.OPEN:
            self.protocol.send_close(1000)
            self._flush()
        else:
            self.transport.close()


@dataclass
class Fleet:
    """Clients of ``url``, each with its own handshake headers (its session cookie).

    Like the shop page (frontend/static/frontend/shop.js), a client the server
    disconnects reconnects after 0.5 s, doubling up to 10 s; whatever was pushed meanwhile
    is missed (the page would catch up over REST, the socket never replays)."""

    url: str
    reconnect: bool = True
    handshake_timeout: float = 30.0
    inbox: list[tuple[int, float, bytes]] = field(default_factory=list)
    clients: dict[int, _Client] = field(default_factory=dict)
    headers: dict[int, dict[str, str]] = field(default_factory=dict)
    connected: set[int] = field(default_factory=set)  # opened at least once
    open: set[int] = field(default_factory=set)  # open now
    drops: list[tuple[int, float]] = field(default_factory=list)  # (client, when) the server closed or lost it
    reconnects: int = 0
    reconnect_failures: int = 0
    connect_errors: dict[int, str] = field(default_factory=dict)
    connect_seconds: list[float] = field(default_factory=list)
    closing: bool = False
    _retry: dict[int, float] = field(default_factory=dict)
    _tasks: set = field(default_factory=set)

    @property
    def dropped(self) -> set[int]:
        return {index for index, _ in self.drops}

    async def _open(self, index: int) -> _Client:
        parts = urlsplit(self.url)
        loop = asyncio.get_running_loop()
        client = None
        try:
            async with asyncio.timeout(self.handshake_timeout):
                _, client = await loop.create_connection(
                    lambda: _Client(self, index, self.url, self.headers[index]), parts.hostname, parts.port or 80)
                self.clients[index] = client
                await client.opened
        except BaseException:
            if client is not None and client.transport is not None:
                client.transport.abort()
            raise
        self.open.add(index)
        self.connected.add(index)
        return client

    async def connect(self, headers_of: Iterable[tuple[int, dict[str, str]]], *, concurrency: int = 50) -> None:
        """Open every client, at most ``concurrency`` handshakes in flight (a ramp, not a
        stampede); a failed or slow first handshake is counted, never retried."""
        gate = asyncio.Semaphore(concurrency)

        async def one(index: int, headers: dict[str, str]):
            self.headers[index] = headers
            async with gate:
                began = time.perf_counter()
                try:
                    await self._open(index)
                except Exception as exc:  # noqa: BLE001 - any failure is a connect failure
                    self.connect_errors[index] = repr(exc)
                    return
                self.connect_seconds.append(time.perf_counter() - began)

        await asyncio.gather(*(one(index, headers) for index, headers in headers_of))

    def _lost(self, index: int) -> None:
        """The server closed (or the network lost) a client we did not close."""
        self.open.discard(index)
        self.drops.append((index, time.time()))
        self._schedule(index)

    def _schedule(self, index: int) -> None:
        if not self.reconnect or self.closing:
            return
        delay = self._retry.get(index, 0.5)
        self._retry[index] = min(delay * 2, 10.0)
        task = asyncio.get_running_loop().create_task(self._reopen(index, delay))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _reopen(self, index: int, delay: float) -> None:
        await asyncio.sleep(delay)
        if self.closing:
            return
        try:
            await self._open(index)
        except Exception:  # noqa: BLE001 - try again later, as the page does
            self.reconnect_failures += 1
            self._schedule(index)
            return
        self._retry.pop(index, None)
        self.reconnects += 1

    def drain(self) -> list[tuple[int, float, dict]]:
        """The frames received since the last call, decoded: (client, received_at, message)."""
        taken, self.inbox = self.inbox, []
        return [(index, at, json.loads(data)) for index, at, data in taken]

    async def close(self, timeout: float = 5.0) -> None:
        self.closing = True
        for task in list(self._tasks):
            task.cancel()
        for index in list(self.open):
            self.open.discard(index)
            self.clients[index].close()
        pending = [client.closed for client in self.clients.values() if not client.closed.done()]
        if pending:
            await asyncio.wait(pending, timeout=timeout)
        for client in self.clients.values():
            if client.transport is not None and not client.transport.is_closing():
                client.transport.abort()
