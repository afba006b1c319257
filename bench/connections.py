"""Live connections and memory: N WebSockets and M SSE streams held open against one
embedded platform (``manage.py runplatform``), then closed; the server's RSS before,
at the peak and after, and the connection limit refusing what comes past it.

One customer (alice) holds them all, as in issue 10. WAYBILL_LIVE_CONNECTIONS_PER_USER is
raised to N + M for the run, and WAYBILL_LIVE_CONNECTIONS_PER_PROCESS set to N + M, so the
whole set is admitted and the ``EXTRA`` connections after it are the process limit's to
refuse (WebSocket close 4429, SSE 429). WebSockets follow ``/ws/v1/orders/`` (two groups
each: the customer's orders and the catalog); SSE streams follow the catalog.

Each repeat opens the set, samples RSS while it is held, closes it, waits until the server
admits a full set again (its counts are back to zero), lets it settle, and samples RSS
again. Reported: medians over the repeats of before, peak and after (MiB), and after/before
and peak/before as ratios. Before is the server warmed up by one full open/close cycle, so
what the first connections allocate once for good (imports, caches, thread pools) is not
counted as held; ``after_over_cold`` compares with the server before its first connection,
which is what an operator sees after one burst.
"""

from __future__ import annotations

import asyncio
import statistics
import time

import psutil

from bench.harness import Run
from bench.pipeline_support.targets import WAYBILL_ENV, e2e_harness
from bench.websocket_support.client import Fleet
from bench.websocket_support.deployment import raise_open_file_limit

EXTRA = 10  # connections tried past the limit, of each kind
SETTLE_SECONDS = 3.0  # after the counts are back to zero: the server finishes its cleanups
SAMPLE_SECONDS = 2.0  # RSS sampled this long at each stage, the median kept
CONNECT_CONCURRENCY = 50


class SseClient:
    """A bare SSE reader: sends the request, reads until the stream says ``subscribed``."""

    def __init__(self, host: str, port: int, token: str, path: str = "/api/v1/events/?stream=catalog"):
        self.host, self.port, self.token, self.path = host, port, token, path
        self.writer: asyncio.StreamWriter | None = None
        self.status: int | None = None

    async def open(self) -> int:
        reader, self.writer = await asyncio.open_connection(self.host, self.port)
        self.writer.write((f"GET {self.path} HTTP/1.1\r\nHost: {self.host}\r\nAccept: text/event-stream\r\n"
                           f"Authorization: Token {self.token}\r\n\r\n").encode())
        await self.writer.drain()
        self.status = int((await reader.readline()).split()[1])
        if self.status == 200:
            await reader.readuntil(b"event: subscribed")
        return self.status

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            try:
                await self.writer.wait_closed()
            except OSError:
                pass


class Rss:
    """The server's RSS, sampled in the background; ``peak`` since the last ``reset``."""

    def __init__(self, pid: int):
        self.process = psutil.Process(pid)
        self.peak = 0

    def now(self) -> int:
        return self.process.memory_info().rss

    async def median(self, seconds: float = SAMPLE_SECONDS) -> int:
        samples = []
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            samples.append(self.now())
            await asyncio.sleep(0.1)
        return int(statistics.median(samples))

    async def watch(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self.peak = max(self.peak, self.now())
            await asyncio.sleep(0.05)


async def _hold(base_url: str, token: str, sockets: int, streams: int, rss: Rss) -> dict:
    """Open the set and the extras, note what was refused, close everything."""
    host, port = base_url.removeprefix("http://").split(":")
    auth = {"Authorization": f"Token {token}"}
    fleet = Fleet(base_url.replace("http://", "ws://") + "/ws/v1/orders/", reconnect=False)
    stop = asyncio.Event()
    watcher = asyncio.create_task(rss.watch(stop))
    sse = [SseClient(host, int(port), token) for _ in range(streams)]
    gate = asyncio.Semaphore(CONNECT_CONCURRENCY)

    async def gated(client: SseClient) -> int:
        async with gate:
            return await client.open()

    began = time.perf_counter()
    try:
        await fleet.connect(((i, auth) for i in range(sockets)), concurrency=CONNECT_CONCURRENCY)
        statuses = await asyncio.gather(*(gated(client) for client in sse))
        opened_s = time.perf_counter() - began
        held = {"websockets": len(fleet.open), "sse": statuses.count(200)}
        await asyncio.sleep(0.5)  # frames sent at connect (the 4429 of an extra) arrive
        fleet.drain()
        # Past the limit: each extra WebSocket is accepted, then closed with 4429.
        extras = Fleet(fleet.url, reconnect=False)
        await extras.connect(((i, auth) for i in range(EXTRA)))
        refused_frames = await _frames_within(extras, EXTRA, 5.0)
        extra_sse = [SseClient(host, int(port), token) for _ in range(EXTRA)]
        extra_statuses = await asyncio.gather(*(client.open() for client in extra_sse))
        refused = {"websockets_4429": sum(1 for frame in refused_frames if "LIVE_CONNECTIONS" in frame.get("reason", "")),
                   "sse_429": extra_statuses.count(429)}
        await extras.close()
        for client in extra_sse:
            await client.close()
    finally:
        await fleet.close()
        for client in sse:
            await client.close()
        stop.set()
        await watcher
    return {"held": held, "refused": refused, "open_s": round(opened_s, 2)}


async def _frames_within(fleet: Fleet, count: int, seconds: float) -> list[dict]:
    frames: list[dict] = []
    deadline = time.monotonic() + seconds
    while len(frames) < count and time.monotonic() < deadline:
        frames += [message for _, _, message in fleet.drain()]
        await asyncio.sleep(0.05)
    return frames


async def _admits_a_full_set_again(base_url: str, token: str, timeout: float = 60.0) -> float:
    """Seconds until a new WebSocket is admitted again after the set closed (the process
    limit is the set's size, so one admitted means the server saw the closes)."""
    began = time.monotonic()
    fleet_url = base_url.replace("http://", "ws://") + "/ws/v1/orders/"
    while time.monotonic() - began < timeout:
        probe = Fleet(fleet_url, reconnect=False)
        await probe.connect([(0, {"Authorization": f"Token {token}"})])
        frames = await _frames_within(probe, 1, 0.3)
        await probe.close()
        if probe.connected and not any("LIVE_CONNECTIONS" in frame.get("reason", "") for frame in frames):
            return time.monotonic() - began
    raise TimeoutError("the server still counts the closed connections")


async def _measure(run: Run, platform, sockets: int, streams: int) -> dict:
    token = platform.token("alice")
    rss = Rss(platform.proc.pid)
    cold = rss.now()
    await _hold(platform.base_url, token, sockets, streams, rss)  # warm-up: one full cycle
    await _admits_a_full_set_again(platform.base_url, token)
    await asyncio.sleep(SETTLE_SECONDS)
    cycles = []
    for _ in range(run.repeats):
        before = await rss.median()
        rss.peak = before
        held = await _hold(platform.base_url, token, sockets, streams, rss)
        released_s = await _admits_a_full_set_again(platform.base_url, token)
        await asyncio.sleep(SETTLE_SECONDS)
        after = await rss.median()
        cycles.append({**held, "before": before, "peak": rss.peak, "after": after,
                       "counts_back_to_zero_s": round(released_s, 2)})
    return {"cold": cold, "cycles": cycles}


def _mib(value: float) -> float:
    return round(value / 2**20, 1)


def run(run: Run) -> dict:
    sockets, streams = run.scale(2000, 200), run.scale(500, 50)
    raise_open_file_limit()
    harness = e2e_harness()
    workdir = run.workdir / "connections"
    data_dir = harness.prepare_data_dir(workdir / "data")
    platform = harness.Platform(data_dir, name="bench-connections")
    limit = str(sockets + streams)
    try:
        platform.start(env={**WAYBILL_ENV, "WAYBILL_LIVE_CONNECTIONS_PER_USER": limit,
                            "WAYBILL_LIVE_CONNECTIONS_PER_PROCESS": limit})
        measured = asyncio.run(_measure(run, platform, sockets, streams))
    finally:
        if platform.running:
            platform.stop()
    cycles = measured["cycles"]

    def median(key: str) -> float:
        return statistics.median(cycle[key] for cycle in cycles)

    before, peak, after = median("before"), median("peak"), median("after")
    result = {
        "websockets": sockets, "sse_streams": streams,
        "rss_mib": {"cold": _mib(measured["cold"]), "before": _mib(before), "peak": _mib(peak), "after": _mib(after)},
        "peak_over_before": round(peak / before, 2), "after_over_before": round(after / before, 3),
        # Against the server before it ever held a connection: what the first burst kept.
        "after_over_cold": round(after / measured["cold"], 3),
        "held": cycles[-1]["held"], "refused_past_the_limit": cycles[-1]["refused"], "tried_past_the_limit": EXTRA,
        "counts_back_to_zero_s": median("counts_back_to_zero_s"),
        "cycles": [{**c, "before": _mib(c["before"]), "peak": _mib(c["peak"]), "after": _mib(c["after"])}
                   for c in cycles],
        "method": (
            f"Embedded (runplatform, dev settings with WAYBILL_DEBUG=false, no tracing) on a fresh data folder. One "
            f"customer holds {sockets} WebSockets on /ws/v1/orders/ (bare asyncio clients, token header) and "
            f"{streams} SSE streams on the catalog, opened {CONNECT_CONCURRENCY} at a time; per-user and per-process "
            f"limits set to {sockets + streams}; then {EXTRA} more of each kind must be refused (close 4429, HTTP "
            f"429). Everything is closed; 'after' is taken once a new socket is admitted again (the counts are back "
            f"to zero) and {SETTLE_SECONDS:.0f} s more. RSS of the platform process (psutil), medians of samples "
            f"over {SAMPLE_SECONDS:.0f} s; before/peak/after are medians over {run.repeats} cycles, after one warm-up "
            f"cycle. Ratios against before."
        ),
    }
    return {"connections": result}
