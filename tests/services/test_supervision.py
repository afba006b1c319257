"""Supervision in services mode: every process runs under supervisord (launcher.supervision),
as under `make up`. A process killed with SIGKILL in the middle of a burst of orders is
started again while the others keep running, and no order is lost or applied twice; a
process that keeps crashing is retried with backoff, then given up on and reported (the
supervisor's status, /readyz, the operations dashboard), and takes nothing else down."""

from __future__ import annotations

import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from launcher.polling import wait_for
from launcher.supervision import RESTART
from .support import FLOW_TIMEOUT, assert_applied_once, client, product, query, wait_confirmed

pytestmark = pytest.mark.xdist_group("services")
BURST = 100


class Burst:
    """``count`` orders of one unit of ``sku`` from 8 clients at once, in the background.
    Refusals are expected while the orders web process is down (the gateway answers 502):
    ``accepted`` holds the ids of the orders that were answered 202."""

    def __init__(self, deployment, tokens, sku: str, count: int):
        self.accepted: list[str] = []
        self.refused = 0
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(8)
        self._client = client(deployment, tokens, "alice")
        self._futures = [self._pool.submit(self._one, sku) for _ in range(count)]

    def _one(self, sku: str) -> None:
        try:
            response = self._client.post("/api/v1/orders/", json={"lines": [{"sku": sku, "quantity": 1}]})
        except httpx.TransportError:
            response = None
        with self._lock:
            if response is not None and response.status_code == 202:
                self.accepted.append(response.json()["id"])
            else:
                self.refused += 1

    def answered(self) -> int:
        with self._lock:
            return len(self.accepted) + self.refused

    def finish(self) -> list[str]:
        for future in self._futures:
            future.result(FLOW_TIMEOUT)
        self._pool.shutdown()
        self._client.close()
        return self.accepted


@pytest.mark.parametrize("victim", ["orders-relay", "inventory-worker", "orders-web"])
def test_a_process_killed_during_a_burst_is_restarted_and_every_order_completes_once(deployment, tokens, victim):
    sku = product(deployment, tokens, on_hand=10 * BURST)
    before = deployment.pids()
    burst = Burst(deployment, tokens, sku, BURST)
    wait_for(lambda: burst.answered() >= BURST // 5, FLOW_TIMEOUT, "the burst to get going")
    at_kill, killed_at = burst.answered(), time.monotonic()
    old, new = deployment.crash(victim)  # SIGKILL from outside; returns once it runs (and answers) again
    print(f"\n{victim}: restarted by the supervisor, ready {time.monotonic() - killed_at:.1f}s after kill -9")
    accepted = burst.finish()
    assert at_kill < BURST, "the burst was over before the kill; the test proved nothing"
    assert accepted, "no order was accepted"

    # Every order that orders committed, answered or not (a web process killed between its
    # commit and its answer leaves one unanswered), completes once; the answered ones among them.
    committed = [row[0] for row in query(deployment.stack.database_urls["orders"],
                                          "SELECT order_id::text FROM orders_orderline WHERE sku = %s", (sku,))]
    assert set(accepted) <= set(committed)
    wait_confirmed(deployment, committed)
    assert_applied_once(deployment, sku, committed)

    after = deployment.pids()
    assert new != old and after[victim] == new
    assert {name: pid for name, pid in after.items() if name != victim} == \
           {name: pid for name, pid in before.items() if name != victim}, "another process was restarted too"


def test_processes_that_keep_crashing_are_reported_and_the_others_keep_running(deployment, tokens):
    before = deployment.pids()
    began = time.monotonic()
    # A relay of orders whose settings module does not exist: it dies on every start, so
    # supervisord retries it with backoff, then gives up (FATAL).
    broken = "orders-relay-broken"
    deployment.start_process("orders-relay", as_name=broken, env={"DJANGO_SETTINGS_MODULE": "config.settings.missing"})
    # One that starts fine and dies a little later, again and again: supervisord restarts it
    # every time and never gives up, so its crash reporter says so (CRASH_LOOP).
    flaky = "orders-relay-flaky"
    lifetime = RESTART.start_seconds + 3  # well past the start: it counts as started each time
    deployment.start_process("orders-relay", as_name=flaky,
                             argv=[sys.executable, "-c", f"import time; time.sleep({lifetime}); raise SystemExit(3)"])
    try:
        states = []

        def given_up() -> bool:
            states.append(deployment.states()[broken])
            return states[-1] == "FATAL"

        # Backoff: 1 s, 2 s, ... between the starts, then FATAL.
        wait_for(given_up, FLOW_TIMEOUT, f"the supervisor to give up on {broken}",
                 describe=lambda: f"{states[-5:]}\n{deployment.log_tail('supervision', lines=10)}")
        print(f"\n{broken}: given up on (FATAL) {time.monotonic() - began:.0f}s after its first start")
        assert "BACKOFF" in states
        # The reporter hears of FATAL as an event, a moment after supervisord's state says so.
        gave_up = f"CRITICAL supervision: {broken} KEEPS CRASHING"

        def reported() -> str | None:
            text = (deployment.logs / "supervision.log").read_text()
            return text if gave_up in text else None

        report = wait_for(reported, 10, f"the report that {broken} keeps crashing",
                          describe=lambda: deployment.log_tail("supervision", lines=10))
        attempts = [line for line in report.splitlines() if f"{broken} crashed while starting" in line]
        assert len(attempts) == RESTART.start_retries + 1

        # /readyz of the orders web process, and of the shell's (every context's) through the gateway.
        def orders_ready() -> httpx.Response:
            return httpx.get(f"http://127.0.0.1:{deployment.port_of['orders-web']}/readyz", timeout=10)

        wait_for(lambda: orders_ready().json()["checks"].get(f"process:{flaky}") == "CRASH_LOOP",
                 RESTART.crash_loop_exits * (lifetime + 5) + 30, f"{flaky} to be seen crashing in a loop",
                 describe=lambda: deployment.log_tail("supervision", lines=10))
        print(f"{flaky}: reported crashing in a loop {time.monotonic() - began:.0f}s after its first start")
        ready = orders_ready()
        assert ready.status_code == 503
        assert ready.json()["checks"][f"process:{broken}"] == "FATAL"
        shell_ready = httpx.get(f"{deployment.base_url}/readyz", timeout=10)
        assert shell_ready.status_code == 503 and shell_ready.json()["checks"][f"process:{broken}"] == "FATAL"
        inventory_ready = httpx.get(f"http://127.0.0.1:{deployment.port_of['inventory-web']}/readyz", timeout=10)
        assert inventory_ready.status_code == 200, "inventory is not the one crashing"
        assert f"CRITICAL supervision: {flaky} KEEPS CRASHING (CRASH_LOOP)" in \
               (deployment.logs / "supervision.log").read_text()

        # The operations dashboard hears it from orders, over the bus.
        with client(deployment, tokens, "admin") as admin:
            def on_dashboard() -> dict[str, str]:
                crashing = admin.get("/api/v1/read/dashboard/").json()["crashing_processes"]
                shown = {p["name"]: (p["context"], p["state"]) for p in crashing}
                return shown if {broken, flaky} <= set(shown) else {}

            shown = wait_for(on_dashboard, FLOW_TIMEOUT, "the dashboard to show both")
        assert shown[broken] == ("orders", "FATAL") and shown[flaky] == ("orders", "CRASH_LOOP")

        after = deployment.pids()
        after.pop(flaky, None)
        assert after == before, "the others must keep running, untouched"
    finally:
        deployment.remove(broken)
        deployment.remove(flaky)
    wait_for(lambda: httpx.get(f"{deployment.base_url}/readyz", timeout=10).status_code == 200,
             FLOW_TIMEOUT, "readiness once the crashing processes are gone")


def test_every_process_of_the_deployment_and_the_gateway_run_under_the_supervisor(deployment):
    states = deployment.states()
    assert set(deployment.specs) | {"gateway"} <= set(states)
    assert {state for name, state in states.items() if name in deployment.specs} <= {"RUNNING", "STARTING"}
