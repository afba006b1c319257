"""A population of customers' WebSocket clients on ``/ws/v1/orders/``, each doing what the
protocol asks of a client to converge (``apps/readmodels/live/sockets.py``): keep the last
position of its ``orders`` stream, ignore what is at or below it, resubscribe with
``after`` = last on a hole and after every reconnect, never let a lower version replace a
higher one. A client whose connection drops (its web process killed, or ``drop()``: the
network gone) reconnects with backoff, as a browser tab does.

At the end, ``converged()`` compares each client's last document of every order with the
read model's: the live push path's own invariant, under faults.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from dataclasses import dataclass, field

import websockets

STREAM = "orders"


@dataclass
class SocketClient:
    index: int
    customer: int  # index into the load's customers
    url: str
    headers: dict[str, str]
    rng: random.Random
    last: int | None = None  # the orders stream's last applied position
    documents: dict[str, tuple[int, str]] = field(default_factory=dict)  # order id -> (version, status)
    connects: int = 0
    drops: int = 0  # connections lost, whoever ended them
    holes: int = 0  # positions skipped by a live push, refilled by a resubscribe
    frames: int = 0
    connected: bool = False
    _socket: object = None
    _resyncing: bool = False
    _stopping: bool = False

    async def run(self) -> None:
        delay = 0.2
        while not self._stopping:
            try:
                async with websockets.connect(self.url, additional_headers=self.headers, open_timeout=15,
                                              max_queue=None, max_size=None, ping_interval=None) as socket:
                    self._socket, self.connected, delay = socket, True, 0.2
                    self.connects += 1
                    await self._subscribe(socket)
                    async for raw in socket:
                        self._take(socket, json.loads(raw))
            except (OSError, asyncio.TimeoutError, websockets.exceptions.WebSocketException):
                pass  # refused, reset, closed by the server: all the same to a browser
            finally:
                if self.connected:
                    self.drops += 1
                self._socket, self.connected, self._resyncing = None, False, False
            if self._stopping:
                return
            await asyncio.sleep(delay * (0.5 + self.rng.random()))
            delay = min(delay * 2, 3.0)

    async def _subscribe(self, socket) -> None:
        self._resyncing = True
        await socket.send(json.dumps({"action": "subscribe", "stream": STREAM, "after": self.last}))

    def _take(self, socket, frame: dict) -> None:
        self.frames += 1
        kind = frame.get("type")
        if frame.get("stream") != STREAM:
            return  # the catalog, which the fixed endpoint follows too
        if kind == "snapshot":
            for document in frame.get("documents", []):
                self._apply(document["id"], document["version"], document["status"])
            self.last = frame["position"]
        elif kind == "subscribed":
            self._resyncing = False
            self.last = max(self.last or 0, frame["position"]) if frame.get("position") is not None else self.last
        elif kind == "change":
            position = frame["position"]
            if self.last is not None and position <= self.last:
                return  # seen: once live, once from the log
            if self.last is not None and position > self.last + 1:
                # A hole: ask the log for it (once; the answer brings this change too).
                if not self._resyncing:
                    self.holes += 1
                    asyncio.ensure_future(self._subscribe(socket))
                return
            if frame.get("kind") == "order":
                data = frame["data"]
                self._apply(data["id"], data["version"], data["status"])
            self.last = position

    def _apply(self, order_id: str, version: int, status: str) -> None:
        known = self.documents.get(order_id)
        if known is None or version >= known[0]:
            self.documents[order_id] = (version, status)

    async def drop(self) -> None:
        """The network goes: the connection ends without a closing handshake."""
        socket = self._socket
        if socket is not None:
            socket.transport.abort()

    async def stop(self) -> None:
        self._stopping = True
        socket = self._socket
        if socket is not None:
            await socket.close()


class Population:
    """``per_customer`` clients for each customer, all started at once and kept alive."""

    def __init__(self, base_url: str, cookies: list[str], per_customer: int, rng: random.Random):
        url = base_url.replace("http://", "ws://") + "/ws/v1/orders/"
        self.clients = [SocketClient(index=len(cookies) * k + i, customer=i, url=url,
                                     headers={"Cookie": cookie, "Origin": base_url}, rng=random.Random(rng.random()))
                        for k in range(per_customer) for i, cookie in enumerate(cookies)]
        self._tasks: list[asyncio.Task] = []

    async def start(self, timeout: float = 60.0) -> None:
        self._tasks = [asyncio.create_task(client.run()) for client in self.clients]
        deadline = time.monotonic() + timeout
        while not all(c.connected and not c._resyncing for c in self.clients):
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {sum(c.connected for c in self.clients)} of {len(self.clients)} "
                                   "WebSocket clients connected")
            await asyncio.sleep(0.1)

    async def drop(self, share: float, rng: random.Random) -> int:
        """Drop ``share`` of the clients (chosen by ``rng``) at once; how many."""
        chosen = rng.sample(self.clients, max(1, round(share * len(self.clients))))
        for client in chosen:
            await client.drop()
        return len(chosen)

    async def stop(self) -> None:
        for client in self.clients:
            await client.stop()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def figures(self) -> dict:
        return {"clients": len(self.clients), "connects": sum(c.connects for c in self.clients),
                "drops": sum(c.drops for c in self.clients), "holes_refilled": sum(c.holes for c in self.clients),
                "frames": sum(c.frames for c in self.clients),
                "connected_at_end": sum(c.connected for c in self.clients)}
