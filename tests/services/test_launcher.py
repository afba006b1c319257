"""`make up` keeps what was committed: the launcher itself (``python -m launcher.up``, in its
own process group, in a temporary WAYBILL_SERVICES_DIR on a free WAYBILL_PORT) is stopped
with SIGINT, started again, then killed with SIGKILL (the whole process group) and started
again, then everything is killed at once with SIGKILL, servers included (a power cut), and
started again. Every order is still there and completes, applied once; no outbox row is
lost; the demo users, their tokens and their sessions still work.

It starts real servers four times, so it runs in an xdist group of its own, beside the
services group."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psycopg
import pytest

from launcher.polling import wait_for
from launcher.servers import free_port
from launcher.services import DemoApiClients
from launcher.stack import REPO
from launcher.up import SERVICES_DIR_VARIABLE, Pids, child_pids

pytestmark = pytest.mark.xdist_group("launcher")
START_TIMEOUT = 300.0
STOP_TIMEOUT = 120.0
FLOW_TIMEOUT = 120.0
ORDERS = 10  # per round: under the default throttle of 60 orders a minute per customer
SKU = "TEA-4"  # a demo product with stock for every round
TERMINAL = {"CONFIRMED", "REJECTED"}


class Up(DemoApiClients):
    """``make up`` as a user runs it, in ``folder``, on ``port``."""

    def __init__(self, folder: Path, port: int):
        super().__init__()
        self.folder, self.port = folder, port
        self.log = folder.parent / "up.log"
        self.proc: subprocess.Popen | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, SERVICES_DIR_VARIABLE: str(self.folder), "WAYBILL_PORT": str(self.port),
                "PYTHONPATH": f"{REPO / 'platform'}{os.pathsep}{REPO}"}

    def start(self) -> float:
        """Start it; the seconds until the gateway says ready."""
        began = time.monotonic()
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "launcher.up"], cwd=REPO, env=self.env, stdout=log,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)

        def ready() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"make up exited {self.proc.returncode}:\n{self.log_tail()}")
            try:
                return httpx.get(f"{self.base_url}/readyz", timeout=5).status_code == 200
            except httpx.TransportError:
                return False

        wait_for(ready, START_TIMEOUT, "make up to be ready", describe=self.log_tail)
        self._tokens.clear()
        return time.monotonic() - began

    def command(self, name: str) -> subprocess.CompletedProcess:
        """``make <name>`` from another terminal: status, down or reset."""
        return subprocess.run([sys.executable, "-m", "launcher.up", name], cwd=REPO, env=self.env,
                              capture_output=True, text=True, timeout=STOP_TIMEOUT + 30)

    def signal_group(self, sig: int) -> int:
        """``sig`` to the launcher's whole process group, as a terminal's Ctrl-C or a kill -9 -PGID."""
        os.killpg(self.proc.pid, sig)
        return self.proc.wait(STOP_TIMEOUT)

    def power_cut(self) -> None:
        """Everything dies at once with SIGKILL, as in a power cut: the launcher's group,
        each server's group and each supervised process's group, none of them warned."""
        alive = Pids(self.folder).alive()
        groups = [pid for name, pid in alive.items() if name != "launcher"]
        groups += child_pids(alive["supervisord"])
        os.killpg(self.proc.pid, signal.SIGKILL)
        for group in groups:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(group, signal.SIGKILL)
        self.proc.wait(STOP_TIMEOUT)
        wait_for(lambda: not Pids(self.folder).alive(), STOP_TIMEOUT, "everything to be dead")

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:]) if self.log.exists() else ""

    def query(self, database: str, sql: str, params=()) -> list[tuple]:
        """As the PostgreSQL superuser, whose password and port the folder tells."""
        port = (self.folder / "postgres" / "pgdata" / "postmaster.pid").read_text().splitlines()[3]
        password = (self.folder / "postgres" / "superuser.password").read_text().strip()
        with psycopg.connect(f"postgresql://postgres:{password}@127.0.0.1:{port}/{database}") as connection:
            return connection.execute(sql, params).fetchall()

    def outbox(self) -> set[tuple]:
        return set(self.query("waybill_orders", "SELECT id, message_id, message_type FROM orders_outboxmessage"))

    def place(self, token: str, count: int) -> list[str]:
        ids = []
        with httpx.Client(base_url=self.base_url, headers={"Authorization": f"Token {token}"}, timeout=30) as alice:
            for _ in range(count):
                response = alice.post("/api/v1/orders/", json={"lines": [{"sku": SKU, "quantity": 1}]})
                assert response.status_code == 202, response.text
                ids.append(response.json()["id"])
        return ids

    def wait_completed(self, token: str, order_ids: list[str]) -> dict[str, str]:
        """Every order ends (confirmed, or rejected by its saga's deadline); their statuses."""
        statuses: dict[str, str] = {}
        with httpx.Client(base_url=self.base_url, headers={"Authorization": f"Token {token}"}, timeout=30) as alice:
            def completed() -> bool:
                for order_id in order_ids:
                    if statuses.get(order_id) not in TERMINAL:
                        response = alice.get(f"/api/v1/orders/{order_id}/")
                        assert response.status_code == 200, f"order {order_id}: {response.status_code} {response.text}"
                        statuses[order_id] = response.json()["status"]
                return all(status in TERMINAL for status in statuses.values())

            wait_for(completed, FLOW_TIMEOUT, f"{len(order_ids)} orders to complete",
                     describe=lambda: f"{sorted(statuses.values())}\n{self.log_tail(20)}")
        return statuses

    def assert_applied_once(self, order_ids: list[str]) -> None:
        rows = self.query("waybill_inventory", "SELECT envelope->>'aggregate_id' FROM inventory_inboxmessage "
                                               "WHERE message_type = 'inventory.reserve_stock' "
                                               "AND envelope->>'aggregate_id' = ANY(%s)", (order_ids,))
        assert sorted(row[0] for row in rows) == sorted(order_ids), "an order was not reserved exactly once"


def _assert_kept(up: Up, outbox_before: set[tuple]) -> None:
    """No outbox row committed before the stop is lost, and every one gets published."""
    assert outbox_before <= up.outbox(), "outbox rows were lost"
    ids = [row[0] for row in outbox_before]
    wait_for(lambda: not up.query("waybill_orders", "SELECT 1 FROM orders_outboxmessage WHERE sent_at IS NULL "
                                                    "AND id = ANY(%s)", (ids,)),
             FLOW_TIMEOUT, "the outbox rows of before the stop to be published")


def test_make_up_resumes_with_everything_committed_after_a_stop_and_after_sigkill(tmp_path, launcher_packages):
    up = Up(tmp_path / "services", free_port())
    try:
        cold = up.start()
        token = up.token("alice")
        cookie = up.session_cookie("alice")
        first = up.place(token, ORDERS)
        up.wait_completed(token, first)
        pending = up.place(token, ORDERS)  # still on their way when the stop comes
        outbox = up.outbox()
        assert up.signal_group(signal.SIGINT) == 0, up.log_tail()
        assert not Pids(up.folder).leftovers(), "a clean stop stops the servers too"

        warm = up.start()
        # The same token and the same browser session: the database and the secret key were kept.
        with httpx.Client(base_url=up.base_url, headers={"Cookie": cookie}, timeout=30) as browser:
            assert browser.get(f"/api/v1/orders/{first[0]}/").status_code == 200
        statuses = up.wait_completed(token, first + pending)
        _assert_kept(up, outbox)
        up.assert_applied_once(first + pending)

        killed = up.place(token, ORDERS)
        outbox = up.outbox()
        up.signal_group(signal.SIGKILL)  # no goodbye: the servers stop on their parent's death

        after_kill = up.start()
        assert up.token("alice"), "the demo users sign in with their password"
        statuses |= up.wait_completed(token, killed)
        _assert_kept(up, outbox)
        everything = first + pending + killed
        up.assert_applied_once(everything)
        assert set(statuses) == set(everything)
        assert up.query("waybill_inventory", "SELECT count(*) FROM inventory_product WHERE sku = %s", (SKU,)) == [(1,)]

        # A power cut: the databases, the broker and Redis get no chance to stop cleanly either.
        cut = up.place(token, ORDERS)
        outbox = up.outbox()
        up.power_cut()
        after_cut = up.start()
        statuses |= up.wait_completed(token, cut)
        _assert_kept(up, outbox)
        everything += cut
        up.assert_applied_once(everything)
        assert set(statuses) == set(everything)
        print(f"\nmake up ready: cold {cold:.0f}s, after a stop {warm:.0f}s, after SIGKILL {after_kill:.0f}s, "
              f"after a power cut {after_cut:.0f}s; "
              f"orders: {sorted(statuses.values()).count('CONFIRMED')} confirmed of {len(everything)}")

        # `make status`, `make down` and `make reset`, from another terminal.
        status = up.command("status")
        assert status.returncode == 0 and "orders-relay" in status.stdout and "RUNNING" in status.stdout, status
        assert up.command("reset").returncode == 1, "reset is refused while make up runs"
        down = up.command("down")
        assert down.returncode == 0, down.stdout + down.stderr
        assert up.proc.wait(STOP_TIMEOUT) == 0, up.log_tail()
        reset = up.command("reset")
        assert reset.returncode == 0 and "deleting" in reset.stdout and not up.folder.exists()
    finally:
        up.close_clients()
        if up.proc is not None and up.proc.poll() is None:
            up.signal_group(signal.SIGTERM)
        wait_for(lambda: not Pids(up.folder).leftovers(), STOP_TIMEOUT, "every server of make up to stop")
