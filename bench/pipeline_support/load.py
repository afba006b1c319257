"""Open-loop load: orders sent on a fixed schedule, whether or not earlier ones finished.

One asyncio loop drives everything: a task per order, started at its scheduled time
``t0 + i / rate``, POSTs it (httpx.AsyncClient; at most ``Target.max_in_flight`` requests
open at once, like a gateway's upstream pool: beyond that an order waits in the client,
and the wait counts in its latency, since that is measured from the schedule); a listener task reads the
customer's WebSocket (``/ws/v1/orders/``) and notes when each order's final status
arrives. Latency is measured from the *scheduled* send time, so a client (or server) that
falls behind shows up as latency instead of being hidden (no coordinated omission);
``send_lag_ms`` says how far the generator itself lagged.

Two kinds of target:
- ``push``: the pipeline. The POST answers 202; done = the CONFIRMED (or REJECTED)
  push of the order's read-model summary over the WebSocket.
- ``response``: the synchronous baseline. Done = the response, which carries the final
  status.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
import uuid
from dataclasses import dataclass, field

import httpx
import websockets

from bench.harness import latency_summary, percentile

SETTLED = {"CONFIRMED", "REJECTED", "CANCELLED"}


@dataclass
class Target:
    base_url: str
    token: str
    place_path: str  # "/api/v1/orders/" or the baseline's
    skus: list[str]
    cookie: str | None = None  # the session cookie for the WebSocket; None: done = response
    lines_per_order: int = 2
    max_in_flight: int = 64  # requests the client keeps open at once (see module docstring)

    @property
    def pushes(self) -> bool:
        return self.cookie is not None


@dataclass
class Sent:
    t_sched: float
    t_send: float = 0.0
    t_resp: float = 0.0
    code: int = 0
    order_id: str = ""
    status: str = ""  # from the response
    error: str = ""
    retries: int = 0  # transport errors retried with the same Idempotency-Key


@dataclass
class PhaseResult:
    label: str
    rate: float  # offered (orders/s)
    offered: int
    t0: float
    sent: list[Sent] = field(default_factory=list)
    done_at: dict[str, tuple[str, float]] = field(default_factory=dict)  # order id -> (status, time)
    polled: dict[str, str] = field(default_factory=dict)  # missing pushes: status seen on the read API

    def completions(self) -> list[tuple[float, float, str]]:
        """(scheduled, done, status) of every order that reached a final status."""
        out = []
        for s in self.sent:
            if not s.order_id:
                continue
            if s.order_id in self.done_at:
                status, t = self.done_at[s.order_id]
                out.append((s.t_sched, t, status))
        return out

    def summary(self) -> dict:
        done = self.completions()
        confirmed = [(ts, td) for ts, td, st in done if st == "CONFIRMED"]
        latencies = [(td - ts) * 1000 for ts, td in confirmed]
        ends = sorted(td for _, td in confirmed)
        achieved = (len(ends) - 1) / (ends[-1] - ends[0]) if len(ends) > 1 and ends[-1] > ends[0] else 0.0
        accepted = [s for s in self.sent if s.code in (201, 202)]
        errors: dict[str, int] = {}
        for s in self.sent:
            if s.code not in (201, 202):
                why = s.error or f"HTTP {s.code}"
                errors[why] = errors.get(why, 0) + 1
        result = {
            **latency_summary(latencies),
            "offered": self.offered,
            "offered_per_s": self.rate,
            "accepted": len(accepted),
            "confirmed": len(confirmed),
            "rejected": sum(1 for *_, st in done if st != "CONFIRMED"),
            "achieved_orders_per_s": round(achieved, 2),
            "response_ms": latency_summary([(s.t_resp - s.t_sched) * 1000 for s in accepted]),
            "send_lag_ms": {"p99": percentile([(s.t_send - s.t_sched) * 1000 for s in self.sent], 99),
                            "max": max(((s.t_send - s.t_sched) * 1000 for s in self.sent), default=0.0)},
        }
        if errors:
            result["errors"] = errors
        if retries := sum(s.retries for s in self.sent):
            result["retried_transport_errors"] = retries
        missing = [s.order_id for s in accepted if s.order_id not in self.done_at]
        if missing:
            result["no_final_push"] = len(missing)
            if self.polled:
                counts: dict[str, int] = {}
                for status in self.polled.values():
                    counts[status] = counts.get(status, 0) + 1
                result["no_final_push_read_model_status"] = counts
        return result

    def drain_throughput(self) -> float:
        """Confirmed orders per second from the first scheduled send to the last
        confirmation: how fast a burst far above capacity is worked off. (A window that
        skips ramp-up and tail would be fooled by confirmations that arrive in clumps, as
        they do when the read side works through a queue of other messages first.)"""
        ends = [td for _, td, st in self.completions() if st == "CONFIRMED"]
        return len(ends) / (max(ends) - self.t0) if ends and max(ends) > self.t0 else 0.0


class Driver:
    """One customer: an HTTP client for orders and (pipeline) their WebSocket."""

    def __init__(self, target: Target, *, max_connections: int | None = None):
        self.target = target
        self.max_connections = max_connections or target.max_in_flight
        self.client: httpx.AsyncClient | None = None
        self.socket = None
        self.done_at: dict[str, tuple[str, float]] = {}
        self.pushes_seen = 0
        self._listener: asyncio.Task | None = None
        self._skus = itertools.cycle(range(len(target.skus)))

    async def __aenter__(self) -> Driver:
        self.client = httpx.AsyncClient(
            base_url=self.target.base_url, timeout=httpx.Timeout(120.0, connect=30.0),
            headers={"Authorization": f"Token {self.target.token}"},
            # Below the servers' 5 s keep-alive, so a reused idle connection is never
            # one the server is just closing.
            limits=httpx.Limits(max_connections=self.max_connections, max_keepalive_connections=self.max_connections,
                                keepalive_expiry=2.0),
        )
        if self.target.pushes:
            url = self.target.base_url.replace("http://", "ws://") + "/ws/v1/orders/"
            self.socket = await websockets.connect(
                url, additional_headers={"Cookie": self.target.cookie, "Origin": self.target.base_url},
                max_queue=None, max_size=None, open_timeout=30,
            )
            self._listener = asyncio.create_task(self._listen())
        return self

    async def __aexit__(self, *exc) -> None:
        if self._listener is not None:
            self._listener.cancel()
            try:
                await self._listener
            except (asyncio.CancelledError, Exception):
                pass
        if self.socket is not None:
            await self.socket.close()
        await self.client.aclose()

    async def _listen(self) -> None:
        async for raw in self.socket:
            now = time.perf_counter()
            change = json.loads(raw)
            if change.get("type") != "change" or change.get("kind") != "order":
                continue
            self.pushes_seen += 1
            data = change["data"]
            if data.get("status") in SETTLED and data["id"] not in self.done_at:
                self.done_at[data["id"]] = (data["status"], now)

    def _body(self) -> dict:
        skus = self.target.skus
        first = next(self._skus)
        chosen = [skus[(first + k) % len(skus)] for k in range(min(self.target.lines_per_order, len(skus)))]
        return {"lines": [{"sku": sku, "quantity": 1} for sku in chosen]}

    async def _place(self, sent: Sent, body: dict, attempts: int = 3) -> None:
        sent.t_send = time.perf_counter()
        key = uuid.uuid4().hex
        for attempt in range(attempts):
            try:
                # Retrying a transport error is safe: the same Idempotency-Key returns the
                # order the first attempt may have placed.
                response = await self.client.post(self.target.place_path, json=body, headers={"Idempotency-Key": key})
                break
            except httpx.TransportError as exc:
                sent.retries += 1
                if attempt == attempts - 1:
                    sent.t_resp, sent.error = time.perf_counter(), type(exc).__name__
                    return
        sent.t_resp = time.perf_counter()
        sent.code = response.status_code
        if response.status_code in (201, 202):
            payload = response.json()
            sent.order_id, sent.status = payload["id"], payload["status"]
            if not self.target.pushes and sent.status in SETTLED:
                self.done_at[sent.order_id] = (sent.status, sent.t_resp)
        else:
            sent.error = f"HTTP {response.status_code}: {response.text[:120]}"

    async def phase(self, *, rate: float, count: int, label: str, drain_timeout: float) -> PhaseResult:
        """Offer ``count`` orders at ``rate``/s on schedule, then wait (up to
        ``drain_timeout`` s after the last send) until every accepted order is final."""
        t0 = time.perf_counter() + 0.05
        result = PhaseResult(label=label, rate=rate, offered=count, t0=t0)
        tasks = []
        for i in range(count):
            sent = Sent(t_sched=t0 + i / rate)
            result.sent.append(sent)
            delay = sent.t_sched - time.perf_counter()
            await asyncio.sleep(max(0.0, delay))  # 0: still yield, so sends start on time
            tasks.append(asyncio.create_task(self._place(sent, self._body())))
        await asyncio.gather(*tasks)
        deadline = time.perf_counter() + drain_timeout
        while time.perf_counter() < deadline:
            if all(s.order_id in self.done_at for s in result.sent if s.order_id):
                break
            await asyncio.sleep(0.05)
        ids = {s.order_id for s in result.sent if s.order_id}
        result.done_at = {oid: v for oid, v in self.done_at.items() if oid in ids}
        if self.target.pushes:
            await self._poll_missing(result)
        return result

    async def _poll_missing(self, result: PhaseResult, limit: int = 200) -> None:
        """For orders whose final push never came: what does the read model say?"""
        missing = [s.order_id for s in result.sent if s.order_id and s.order_id not in result.done_at][:limit]
        for order_id in missing:
            try:
                response = await self.client.get(f"/api/v1/read/orders/{order_id}/")
                result.polled[order_id] = response.json().get("status", "?") if response.status_code == 200 \
                    else f"HTTP {response.status_code}"
            except httpx.HTTPError as exc:
                result.polled[order_id] = type(exc).__name__
