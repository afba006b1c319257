"""The fault schedule: made from the seed alone (``schedule``), printed at the start, so a
run repeats from its seed; and the injector that does each fault at its time, on a thread
of its own, while the load runs (``Injector``).

What each fault does, and to whom (names as the deployment runs them; servers by their
place in the topology's lists):

- ``relay-kill``, ``worker-kill``, ``web-kill``: SIGKILL of one such process, from
  outside, as a crash looks to supervisord, which starts it again
  (``ServicesDeployment.crash``, which waits until the new one is ready).
- ``broker-node-kill``: SIGKILL of one RabbitMQ node (its whole process group), down for
  a while, then started again on its data; ``broker-kill``: the same to every node at
  once ("the whole cluster"), once per run.
- ``postgres-restart``: one PostgreSQL server stopped (fast shutdown: clients are cut
  off) and started again.
- ``payment-outage``: the payment sandbox answers 503 to everything for a while;
  ``payment-slow``: it answers, slowly (``latency_ms``), for a while.
- ``websocket-drop``: a share of the WebSocket clients lose their connection at once and
  reconnect (``chaos.sockets``).
"""

from __future__ import annotations

import asyncio
import random
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import asdict, dataclass, field

import httpx

from .topology import Topology

PROCESS_KILLS = ("relay-kill", "worker-kill", "web-kill")
KINDS = (*PROCESS_KILLS, "broker-node-kill", "broker-kill", "postgres-restart", "payment-outage", "payment-slow",
         "websocket-drop")
ONCE = {"broker-kill"}  # the whole cluster, once per run
SLOW_LATENCY_MS = 1500  # below the payments consumer's 2 s timeout: slow, not failing
WEBSOCKET_DROP_SHARE = 0.5


@dataclass
class Fault:
    at_s: float  # planned, from the start of the load
    kind: str
    target: str = ""  # a process name, or "broker[i]" / "postgres[i]" / "all"
    duration_s: float = 0.0  # how long the fault lasts (outages, slow spells, servers down)
    # What happened, filled in by the injector (wall clock, time.time()):
    began: float = 0.0
    ended: float = 0.0
    note: str = ""
    error: str = ""

    def describe(self) -> str:
        lasting = f" for {self.duration_s:.0f} s" if self.duration_s else ""
        target = f" {self.target}" if self.target else ""
        return f"t+{self.at_s:6.1f} s  {self.kind}{target}{lasting}"

    def as_dict(self, t0: float) -> dict:
        entry = asdict(self)
        entry["began_s"] = round(self.began - t0, 2) if self.began else None
        entry["ended_s"] = round(self.ended - t0, 2) if self.ended else None
        del entry["began"], entry["ended"]
        return entry


def schedule(rng: random.Random, *, load_s: float, topology: Topology, count: int | None = None,
             every_kind_once: bool = False) -> list[Fault]:
    """Faults at random times across the load's middle (from 8 % to 85 % of it), one per
    slot so that two never overlap by design. ``every_kind_once``: each kind exactly once
    (the small run); otherwise ``count`` faults, each kind at least once, the whole broker
    only once, the rest drawn at random."""
    if every_kind_once:
        kinds = list(KINDS)
    else:
        count = max(count or 0, len(KINDS))
        repeatable = [k for k in KINDS if k not in ONCE]
        kinds = list(KINDS) + [rng.choice(repeatable) for _ in range(count - len(KINDS))]
    rng.shuffle(kinds)
    begin, end = 0.08 * load_s, 0.85 * load_s
    slot = (end - begin) / len(kinds)
    faults = []
    for i, kind in enumerate(kinds):
        at = begin + slot * i + rng.uniform(0.0, 0.3 * slot)
        fault = Fault(at_s=round(at, 1), kind=kind)
        if kind in PROCESS_KILLS:
            fault.target = rng.choice(topology.of_kind(kind.removesuffix("-kill")))
        elif kind == "broker-node-kill":
            fault.target = f"broker[{rng.randrange(len(topology.broker_nodes))}]"
            fault.duration_s = round(rng.uniform(2.0, 6.0), 1)
        elif kind == "broker-kill":
            fault.target, fault.duration_s = "all", round(rng.uniform(2.0, 6.0), 1)
        elif kind == "postgres-restart":
            fault.target = f"postgres[{rng.randrange(len(topology.postgres))}]"
            fault.duration_s = round(rng.uniform(1.0, 4.0), 1)
        elif kind in ("payment-outage", "payment-slow"):
            # Shorter than the slot: the next fault finds the provider as it should be.
            fault.duration_s = round(min(0.6 * slot, rng.uniform(6.0, 15.0)), 1)
        faults.append(fault)
    return faults


def _index(target: str) -> int:
    return int(target[target.index("[") + 1:target.index("]")])


@dataclass
class Injector:
    """Does ``faults`` in order, each at t0 + at_s (or at once, if the one before ran
    late), on a thread of its own; ``drop_sockets`` is called for ``websocket-drop``.

    A server is started again on a thread of ``starters``, never on the injector's own:
    the servers get a parent-death signal (launcher.servers), which Linux sends when the
    *thread* that started them exits, so the threads that start them must outlive them
    (the caller's pool, shut down after the deployment has stopped)."""

    topology: Topology
    faults: list[Fault]
    drop_sockets: Callable[[float], str]
    starters: Executor
    log: Callable[[str], None] = print
    t0: float = 0.0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self, t0: float) -> Injector:
        self.t0 = t0
        self._thread = threading.Thread(target=self._run, name="chaos-faults", daemon=True)
        self._thread.start()
        return self

    def join(self, timeout: float) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    def stop(self) -> None:
        self._stop.set()
        self.join(120)

    @property
    def done(self) -> bool:
        return self._thread is not None and not self._thread.is_alive()

    def _run(self) -> None:
        for fault in self.faults:
            if self._stop.wait(max(0.0, self.t0 + fault.at_s - time.time())):
                return
            fault.began = time.time()
            self.log(f"fault: {fault.describe()} (began at t+{fault.began - self.t0:.1f} s)")
            try:
                fault.note = getattr(self, "_" + fault.kind.replace("-", "_"))(fault) or ""
            except Exception as exc:  # noqa: BLE001 - recorded; the checks still run, and say so
                fault.error = f"{type(exc).__name__}: {exc}"[:2000]
                self.log(f"fault {fault.kind} failed: {fault.error}")
            fault.ended = time.time()

    # --- the faults -------------------------------------------------------------------------
    def _kill(self, fault: Fault) -> str:
        old, new = self.topology.deployment.crash(fault.target, signal.SIGKILL)
        return f"pid {old} killed, {new} ready"

    _relay_kill = _worker_kill = _web_kill = _kill

    def _down(self, nodes: list, duration_s: float, *, start) -> None:
        """SIGKILL each node's whole process group (``kill``: nothing flushed that was not
        already), keep them down, then ``start`` them again on a starter thread."""
        for node in nodes:
            node.kill()
        self._stop.wait(duration_s)
        self.starters.submit(start, timeout=180).result()
        if not all(node.running for node in nodes):
            raise RuntimeError("a broker node did not start again: " + "; ".join(
                node.log_tail(10) for node in nodes if not node.running))

    def _broker_node_kill(self, fault: Fault) -> str:
        node = self.topology.broker_nodes[_index(fault.target)]
        self._down([node], fault.duration_s, start=node.start)
        return f"{node.node} killed and started again"

    def _broker_kill(self, fault: Fault) -> str:
        # The whole cluster at once: it starts its nodes side by side, since each waits
        # for the others' copies of the metadata.
        self._down(list(self.topology.broker_nodes), fault.duration_s, start=self.topology.broker.start)
        return f"all {len(self.topology.broker_nodes)} node(s) killed and started again"

    def _postgres_restart(self, fault: Fault) -> str:
        server = self.topology.postgres[_index(fault.target)]
        server.stop()
        self._stop.wait(fault.duration_s)
        self.starters.submit(server.start, timeout=120).result()
        return "stopped (fast shutdown) and started again"

    def _sandbox(self, **settings) -> None:
        response = httpx.post(f"{self.topology.deployment.payment_sandbox_url}/_sandbox/config", json=settings,
                              timeout=10)
        response.raise_for_status()

    def _payment_outage(self, fault: Fault) -> str:
        self._sandbox(outage=True)
        try:
            self._stop.wait(fault.duration_s)
        finally:
            self._sandbox(outage=False)
        return "503 to every call"

    def _payment_slow(self, fault: Fault) -> str:
        self._sandbox(latency_ms=SLOW_LATENCY_MS)
        try:
            self._stop.wait(fault.duration_s)
        finally:
            self._sandbox(latency_ms=0)
        return f"{SLOW_LATENCY_MS} ms per call"

    def _websocket_drop(self, fault: Fault) -> str:
        return self.drop_sockets(WEBSOCKET_DROP_SHARE)


def run_coroutine(loop: asyncio.AbstractEventLoop, coroutine, timeout: float = 30.0):
    """From the injector's thread, on the load's event loop."""
    return asyncio.run_coroutine_threadsafe(coroutine, loop).result(timeout)
