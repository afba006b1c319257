"""The steady load: orders from several customers at a fixed rate, some cancelled, while
a tracker watches each order reach its outcome in orders' own database.

Open loop, as bench's load generator (``bench.pipeline_support.load``): order i is due at
t0 + i/rate whatever happened to earlier ones, so a fault shows up as latency and backlog,
not as a load that politely waits. What differs from the benchmark is what a fault asks
of a client: a request that dies in transport, or is answered 502/503/504 (a web process
killed behind the gateway, the database restarting), is sent again with the *same*
Idempotency-Key, with backoff, for up to ``retry_for_s``: a real client's retry, and the
check that such a retry never places a second order.

Everything an order's content needs (customer, lines, whether and when it is cancelled)
comes from the run's seeded ``random.Random``, so a seed repeats the same orders. A soak
reuses ``SteadyLoad`` with ``duration_s`` instead of ``count``.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
import uuid
from dataclasses import dataclass, field

import httpx
import psycopg

RETRIED_STATUSES = {429, 502, 503, 504}  # the platform (or its gateway) says "not now", never "no"
FINAL = {"CONFIRMED", "REJECTED", "CANCELLED"}
# Cancelled right after the 202 (racing the saga), or once the order is confirmed (a refund).
CANCEL_PENDING, CANCEL_CONFIRMED = "pending", "confirmed"


@dataclass
class Stocked:
    """A product of the run: how often orders pick it, and its stock (sized once the
    orders are planned: ``SteadyLoad.expected_units``)."""

    sku: str
    name: str
    price: str
    weight: float
    on_hand: int = 0


@dataclass
class Customer:
    username: str
    token: str
    cookie: str  # the browser's session, for the WebSocket clients
    user_id: int = 0


@dataclass
class Placed:
    """One order the load offered, and everything the platform answered about it."""

    index: int
    customer: int  # index into the load's customers
    key: str  # its Idempotency-Key, the same on every retry
    lines: list[dict]
    cancel: str | None  # CANCEL_PENDING, CANCEL_CONFIRMED or None
    t_sched: float  # wall clock (time.time()): comparable with the databases' timestamps
    t_send: float = 0.0
    t_resp: float = 0.0
    code: int = 0  # the last answer's status (0: none came)
    order_id: str = ""
    ids_answered: set[str] = field(default_factory=set)  # every order id any attempt was answered with
    attempts: int = 0
    troubles: list[str] = field(default_factory=list)  # what made each retry necessary
    cancel_code: int = 0
    cancel_at: float = 0.0

    @property
    def accepted(self) -> bool:
        return self.code == 202 and bool(self.order_id)


class Tracker:
    """Watches accepted orders in orders' database (a thread, every ``interval`` s) and
    keeps each one's first final status and the database's time of it: what POST-to-final
    latency, throughput over time and recovery after a fault are measured from. A database
    that is away (its restart is one of the faults) is simply asked again later."""

    def __init__(self, orders_url: str, *, interval: float = 0.5):
        self.url = orders_url
        self.interval = interval
        self.final: dict[str, tuple[str, float]] = {}  # order id -> (first final status, its time: epoch s)
        self._pending: set[str] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="chaos-tracker", daemon=True)
        self.failed_polls = 0

    def watch(self, order_id: str) -> None:
        with self._lock:
            if order_id not in self.final:
                self._pending.add(order_id)

    def pending(self) -> int:
        with self._lock:
            return len(self._pending)

    def start(self) -> Tracker:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def _loop(self) -> None:
        connection = None
        while not self._stop.wait(self.interval):
            with self._lock:
                pending = list(self._pending)
            if not pending:
                continue
            try:
                if connection is None or connection.closed:
                    connection = psycopg.connect(self.url, autocommit=True, connect_timeout=3)
                rows = connection.execute(
                    "SELECT id::text, status, extract(epoch FROM updated_at)::float8 FROM orders_order "
                    "WHERE id = ANY(%s::uuid[]) AND status <> 'PENDING'", (pending,)).fetchall()
            except psycopg.Error:
                self.failed_polls += 1
                if connection is not None:
                    connection.close()
                connection = None
                continue
            with self._lock:
                for order_id, status, at in rows:
                    self.final.setdefault(order_id, (status, at))
                    self._pending.discard(order_id)
        if connection is not None:
            connection.close()


class SteadyLoad:
    """``count`` orders (or as many as ``duration_s`` holds) at ``rate``/s from
    ``customers``, over ``products`` (by weight), 1-2 lines of 1-2 units each; a share
    ``cancel_share`` of them cancelled (half while pending, half once confirmed)."""

    def __init__(self, base_url: str, customers: list[Customer], products: list[Stocked], rng: random.Random, *,
                 rate: float, count: int | None = None, duration_s: float | None = None,
                 cancel_share: float = 0.1, retry_for_s: float = 90.0, max_in_flight: int = 16,
                 confirm_wait_s: float = 180.0):
        if (count is None) == (duration_s is None):
            raise ValueError("give count or duration_s")
        self.base_url, self.customers, self.products = base_url, customers, products
        self.rate = rate
        self.count = count if count is not None else int(rate * duration_s)
        self.cancel_share, self.retry_for_s, self.max_in_flight = cancel_share, retry_for_s, max_in_flight
        # How long a cancellation waits for its order's confirmation: bounded, so a platform
        # that never confirms still ends the run (and fails its checks).
        self.confirm_wait_s = confirm_wait_s
        self.placed = [self._plan(i, rng) for i in range(self.count)]
        self.t0 = 0.0
        self.finished_at = 0.0
        self._clients: list[httpx.AsyncClient] = []

    # --- what is ordered: decided up front, from the seed alone ----------------------------
    def _plan(self, index: int, rng: random.Random) -> Placed:
        weights = [p.weight for p in self.products]
        skus: list[str] = []
        for _ in range(rng.choice((1, 1, 2))):
            sku = rng.choices(self.products, weights)[0].sku
            if sku not in skus:  # one line per SKU: orders refuses a SKU twice
                skus.append(sku)
        lines = [{"sku": sku, "quantity": rng.choice((1, 1, 2))} for sku in skus]
        roll = rng.random()
        cancel = None
        if roll < self.cancel_share:
            cancel = CANCEL_PENDING if roll < self.cancel_share / 2 else CANCEL_CONFIRMED
        key = f"chaos-{uuid.UUID(int=rng.getrandbits(128))}"
        return Placed(index=index, customer=rng.randrange(len(self.customers)), key=key, lines=lines, cancel=cancel,
                      t_sched=0.0)

    def expected_units(self) -> dict[str, int]:
        """Units the run will ask for, per SKU (what the stock is sized against)."""
        units: dict[str, int] = {}
        for placed in self.placed:
            for line in placed.lines:
                units[line["sku"]] = units.get(line["sku"], 0) + line["quantity"]
        return units

    # --- the run -----------------------------------------------------------------------------
    async def run(self, tracker: Tracker, *, t0: float | None = None) -> None:
        """Offer every order on schedule from ``t0`` (wall clock; default: now), then wait
        for their answers and for the cancellations that wait on a confirmation."""
        self._clients = [httpx.AsyncClient(
            base_url=self.base_url, headers={"Authorization": f"Token {c.token}"},
            timeout=httpx.Timeout(30.0, connect=10.0),
            # Below the servers' 5 s keep-alive, as in bench: a reused idle connection is
            # never one the server is just closing.
            limits=httpx.Limits(max_connections=self.max_in_flight, max_keepalive_connections=self.max_in_flight,
                                keepalive_expiry=2.0)) for c in self.customers]
        try:
            self.t0 = t0 or time.time() + 0.05
            tasks, cancels = [], []
            for placed in self.placed:
                placed.t_sched = self.t0 + placed.index / self.rate
                await asyncio.sleep(max(0.0, placed.t_sched - time.time()))  # 0: still yield
                tasks.append(asyncio.create_task(self._order(placed, tracker, cancels)))
            await asyncio.gather(*tasks)
            self.finished_at = time.time()
            await asyncio.gather(*cancels)
        finally:
            for client in self._clients:
                await client.aclose()

    async def _order(self, placed: Placed, tracker: Tracker, cancels: list) -> None:
        await self._place(placed)
        if not placed.accepted:
            return
        tracker.watch(placed.order_id)
        if placed.cancel == CANCEL_PENDING:
            await self._cancel(placed)
        elif placed.cancel == CANCEL_CONFIRMED:
            cancels.append(asyncio.create_task(self._cancel_once_confirmed(placed, tracker)))

    async def _send(self, placed: Placed, method: str, url: str, **kwargs) -> httpx.Response | None:
        """The request, again after a transport error or a 429/5xx of the gateway, until
        ``retry_for_s`` has passed; the last answer (None: none came)."""
        client = self._clients[placed.customer]
        give_up = time.time() + self.retry_for_s
        delay = 0.25
        while True:
            placed.attempts += 1
            try:
                response = await client.request(method, url, **kwargs)
                if response.status_code not in RETRIED_STATUSES:
                    return response
                placed.troubles.append(f"HTTP {response.status_code}")
                retry_after = response.headers.get("Retry-After", "")
                wait = float(retry_after) if retry_after.isdigit() else delay
            except httpx.TransportError as exc:
                placed.troubles.append(type(exc).__name__)
                response, wait = None, delay
            if time.time() + wait > give_up:
                return response
            await asyncio.sleep(wait)
            delay = min(delay * 2, 5.0)

    async def _place(self, placed: Placed) -> None:
        placed.t_send = time.time()
        response = await self._send(placed, "POST", "/api/v1/orders/", json={"lines": placed.lines},
                                    headers={"Idempotency-Key": placed.key})
        placed.t_resp = time.time()
        if response is None:
            return
        placed.code = response.status_code
        if response.status_code in (201, 202):
            placed.order_id = response.json()["id"]
            placed.ids_answered.add(placed.order_id)
            if response.headers.get("Idempotent-Replayed") == "true" and len(placed.troubles) == 0:
                placed.troubles.append("replayed without a retry")  # the key collided with another order

    async def _cancel_once_confirmed(self, placed: Placed, tracker: Tracker) -> None:
        give_up = time.time() + self.confirm_wait_s
        while time.time() < give_up:
            outcome = tracker.final.get(placed.order_id)
            if outcome is not None:
                if outcome[0] == "CONFIRMED":
                    await self._cancel(placed)
                return
            await asyncio.sleep(0.5)

    async def _cancel(self, placed: Placed) -> None:
        # No If-Match: the customer cancels whatever version is current. 409 means it was
        # settled (rejected) first; a retried cancel that finds it cancelled is 409 too.
        response = await self._send(placed, "POST", f"/api/v1/orders/{placed.order_id}/cancel/")
        placed.cancel_at = time.time()
        placed.cancel_code = response.status_code if response is not None else 0

    async def replay_keys(self, sample: list[Placed]) -> list[str]:
        """Send ``sample``'s orders again with their keys, as a client that never saw its
        answer would: each must come back as the same order. The keys whose answer differs."""
        differing = []
        async with httpx.AsyncClient(base_url=self.base_url, timeout=30.0) as client:
            for placed in sample:
                customer = self.customers[placed.customer]
                response = await client.post("/api/v1/orders/", json={"lines": placed.lines},
                                             headers={"Idempotency-Key": placed.key,
                                                      "Authorization": f"Token {customer.token}"})
                if response.status_code not in (200, 201, 202) or response.json().get("id") != placed.order_id:
                    differing.append(placed.key)
        return differing
