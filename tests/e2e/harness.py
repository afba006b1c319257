"""Drive a real ``manage.py runplatform`` from the outside: its own data folder, its own
port, real HTTP (httpx), and signals to stop or kill it.

Nothing here imports Django or the project: the platform is a black box, as it is for
a customer. The fixtures in ``conftest.py`` wrap this module.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
from launcher.polling import wait_for
from launcher.servers import free_port
from launcher.services import DemoApiClients

REPO_DIR = Path(__file__).resolve().parents[2]
MANAGE = REPO_DIR / "manage.py"
PYTHON = sys.executable
DEMO_PASSWORD = os.environ.get("WAYBILL_DEMO_PASSWORD", "waybill-demo")
DEMO_SKUS = {"KETTLE-1", "MUG-2", "TEAPOT-3", "TEA-4", "LAMP-5"}
SETTLED = {"CONFIRMED", "REJECTED", "CANCELLED"}
FINAL = {"REJECTED", "CANCELLED"}  # no way out of these; CONFIRMED may still be cancelled

# Bounded waits, generous for a slow CI machine yet far above what a healthy run needs.
COMMAND_TIMEOUT = 120.0  # migrateall, load_demo, shell
READY_TIMEOUT = 30.0  # runplatform answering /readyz
SETTLE_TIMEOUT = 20.0  # a message flow reaching the read side
STOP_TIMEOUT = 30.0  # SIGINT to exit

def unique_sku(prefix: str = "E2E") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10].upper()}"


def subprocess_env(data_dir: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of an embedded platform on ``data_dir``.

    Drops everything pytest set (DJANGO_SETTINGS_MODULE=config.settings.test) and every
    WAYBILL_* variable of the caller, so the subprocess runs the embedded default and
    never touches a real database or broker."""
    env = {
        key: value for key, value in os.environ.items()
        if not key.startswith(("WAYBILL_", "DJANGO_", "PYTEST_"))
    }
    env.update(
        DJANGO_SETTINGS_MODULE="config.settings.dev",
        WAYBILL_DATA_DIR=str(data_dir),
        WAYBILL_DEMO_PASSWORD=DEMO_PASSWORD,
        WAYBILL_LOG_LEVEL="INFO",
        PYTHONUNBUFFERED="1",
        # The suite places hundreds of orders as alice; test_throttling checks the limits.
        WAYBILL_THROTTLE_ORDERS="100000/minute",
        WAYBILL_THROTTLE_AUTH="100000/minute",
    )
    env.update(extra or {})
    return env


def manage(data_dir: Path, *args: str, timeout: float = COMMAND_TIMEOUT) -> subprocess.CompletedProcess:
    """Run ``manage.py <args>`` to completion; fail with its output if it does not exit 0."""
    done = subprocess.run(
        [PYTHON, str(MANAGE), *args], cwd=REPO_DIR, env=subprocess_env(data_dir),
        capture_output=True, text=True, timeout=timeout,
    )
    if done.returncode != 0:
        raise AssertionError(
            f"manage.py {' '.join(args)} exited {done.returncode}\n"
            f"--- stdout ---\n{done.stdout[-4000:]}\n--- stderr ---\n{done.stderr[-4000:]}"
        )
    return done


def prepare_data_dir(data_dir: Path) -> Path:
    """A migrated data folder holding the demo shop."""
    data_dir.mkdir(parents=True, exist_ok=True)
    manage(data_dir, "migrateall")
    manage(data_dir, "load_demo")
    return data_dir


def copy_data_dir(template: Path, data_dir: Path) -> Path:
    """A private copy of a prepared data folder (no process may hold ``template`` open)."""
    shutil.copytree(template, data_dir)
    return data_dir


class Platform(DemoApiClients):
    """One ``manage.py runplatform`` process on a data folder, seen over HTTP."""

    demo_password = DEMO_PASSWORD
    client_timeout = 15.0

    def __init__(self, data_dir: Path, *, name: str = "platform"):
        super().__init__()
        self.data_dir = data_dir
        self.name = name
        self.log_path = data_dir / f"{name}.log"
        self.port: int | None = None
        self.proc: subprocess.Popen | None = None
        self.returncodes: list[int] = []

    # --- the process -------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        assert self.port is not None, "the platform has not been started"
        return f"http://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, *, port: int | None = None, env: dict[str, str] | None = None, attempts: int = 3) -> Platform:
        """Start runplatform and wait until /readyz answers 200; ``env`` adds variables
        (e.g. WAYBILL_CONTEXTS) for this run only.

        ``free_port`` can lose a race with another process between its probe and our
        bind; then the server exits at once and we try another port."""
        assert not self.running, "already running"
        for attempt in range(1, attempts + 1):
            self.port = port or free_port()
            offset = self.log_path.stat().st_size if self.log_path.exists() else 0
            with self.log_path.open("ab") as log:
                log.write(f"\n===== e2e: starting runplatform on port {self.port} =====\n".encode())
                log.flush()
                self.proc = subprocess.Popen(
                    [PYTHON, str(MANAGE), "runplatform", "--host", "127.0.0.1", "--port", str(self.port)],
                    cwd=REPO_DIR, env=subprocess_env(self.data_dir, env), stdout=log, stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    # Its own session: a Ctrl-C in the terminal running pytest must not reach it;
                    # the fixtures decide when and how it stops.
                    start_new_session=True,
                )
            try:
                self.wait_ready()
                return self
            except AssertionError:
                exited = self.proc.poll() is not None
                new_output = self.log_text()[offset:]
                if exited and "address already in use" in new_output.lower() and attempt < attempts and not port:
                    continue
                if not exited:
                    self.kill()
                raise AssertionError(f"{self.name} did not become ready\n{self.log_tail()}") from None
        raise AssertionError("unreachable")

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        def ready() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"runplatform exited with {self.proc.returncode} while starting")
            return httpx.get(f"{self.base_url}/readyz", timeout=2).status_code == 200

        wait_for(ready, timeout, f"{self.base_url}/readyz to answer 200", interval=0.05,
                 ignore=(httpx.TransportError,))

    def stop(self, timeout: float = STOP_TIMEOUT) -> int:
        """Ctrl-C (SIGINT) and wait for the exit; returns the exit code.

        A process that ignores SIGINT past ``timeout`` is killed and reported."""
        return self._signal(signal.SIGINT, timeout)

    def kill(self) -> int:
        """SIGKILL: the process gets no chance to clean up, as in a crash or OOM kill."""
        return self._signal(signal.SIGKILL, 10.0)

    def _signal(self, signum: int, timeout: float) -> int:
        assert self.proc is not None, "never started"
        self.close_clients()
        if self.proc.poll() is None:
            self.proc.send_signal(signum)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
                raise AssertionError(
                    f"{self.name} still running {timeout:.0f}s after {signal.Signals(signum).name}; "
                    f"killed it\n{self.log_tail()}"
                ) from None
        code = self.proc.returncode
        self.returncodes.append(code)
        return code

    # --- its output --------------------------------------------------------------------
    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 80) -> str:
        tail = "\n".join(self.log_text().splitlines()[-lines:])
        return f"--- last {lines} lines of {self.log_path} ---\n{tail}\n--- end of log ---"

class Shop:
    """The shop's API as the tests use it, on top of a running ``Platform``."""

    def __init__(self, platform: Platform):
        self.platform = platform
        self._clients: dict[tuple[str | None, str], httpx.Client] = {}

    def client(self, username: str | None = None) -> httpx.Client:
        """One reusable client per user (None: anonymous) for the current run of the platform."""
        key = (username, self.platform.base_url)
        client = self._clients.get(key)
        if client is None or client.is_closed:
            client = self._clients[key] = self.platform.client(username)
        return client

    @property
    def alice(self) -> httpx.Client:
        return self.client("alice")

    @property
    def bob(self) -> httpx.Client:
        return self.client("bob")

    @property
    def admin(self) -> httpx.Client:
        return self.client("admin")

    @property
    def anonymous(self) -> httpx.Client:
        return self.client(None)

    # --- catalog and stock -------------------------------------------------------------
    def catalog(self) -> dict[str, dict]:
        response = self.anonymous.get("/api/v1/read/catalog/")
        assert response.status_code == 200, response.text
        return {item["sku"]: item for item in response.json()}

    def wait_available(self, sku: str, available: int, timeout: float = SETTLE_TIMEOUT) -> dict:
        seen: list[dict | None] = [None]

        def shown() -> dict | None:
            item = seen[0] = self.catalog().get(sku)
            return item if item is not None and item["available"] == available else None

        return wait_for(shown, timeout, f"the catalog to show {sku} with {available} available",
                        describe=lambda: f"catalog item {seen[0]!r}")

    def stock(self, sku: str) -> dict:
        """The staff view of a product: on_hand, reserved, available, version."""
        response = self.admin.get(f"/api/v1/inventory/products/{sku}/")
        assert response.status_code == 200, response.text
        return response.json()

    def create_product(self, *, on_hand: int, price: str = "10.00", sku: str | None = None,
                       name: str = "E2E test product") -> str:
        """Create a product as staff (a unique SKU, so tests never share stock), then wait
        until both the catalog and the orders context know it."""
        sku = sku or unique_sku()
        response = self.admin.post("/api/v1/inventory/products/",
                                   json={"sku": sku, "name": name, "price": price, "on_hand": on_hand})
        assert response.status_code == 201, response.text
        self.wait_available(sku, on_hand)
        self.wait_orderable(sku)
        return sku

    def wait_orderable(self, sku: str, timeout: float = SETTLE_TIMEOUT) -> None:
        """Wait until the orders context has its copy of ``sku``.

        The catalog (read side) and orders learn of a new product from the same event but
        through different consumers, so the catalog may list it a moment before orders
        accepts it. The probe names the SKU twice: orders refuses that with "appears
        twice" once it knows the SKU and "Unknown SKU" before, and never places an order."""
        def known() -> bool:
            response = self.alice.post("/api/v1/orders/", json={"lines": [{"sku": sku, "quantity": 1}] * 2})
            assert response.status_code == 400, f"probe order was not refused: {response.status_code} {response.text}"
            return "Unknown SKU" not in response.text

        wait_for(known, timeout, f"the orders context to know {sku}")

    # --- orders --------------------------------------------------------------------------
    def place(self, client: httpx.Client, lines: dict[str, int], *, key: str | None = None) -> httpx.Response:
        headers = {"Idempotency-Key": key} if key else {}
        return client.post("/api/v1/orders/", headers=headers,
                           json={"lines": [{"sku": sku, "quantity": qty} for sku, qty in lines.items()]})

    def order(self, client: httpx.Client, lines: dict[str, int], *, key: str | None = None) -> str:
        """Place an order that the API accepts (202); returns its id."""
        response = self.place(client, lines, key=key)
        assert response.status_code == 202, f"{response.status_code} {response.text}"
        return response.json()["id"]

    def summary(self, client: httpx.Client, order_id: str) -> dict | None:
        response = client.get(f"/api/v1/read/orders/{order_id}/")
        if response.status_code == 404:
            return None  # not projected yet
        assert response.status_code == 200, response.text
        return response.json()

    def wait_summary(self, client: httpx.Client, order_id: str, status: str | set[str],
                     timeout: float = SETTLE_TIMEOUT) -> dict:
        """Wait until the read side shows the order in ``status`` (or one of them).

        Fails at once if the order reaches another final status: that is a wrong outcome,
        not a slow one."""
        wanted = {status} if isinstance(status, str) else status

        seen: list[dict | None] = [None]

        def reached() -> dict | None:
            summary = seen[0] = self.summary(client, order_id)
            if summary is None:
                return None
            if summary["status"] in FINAL and summary["status"] not in wanted:
                raise AssertionError(f"order {order_id} settled as {summary['status']}, expected {wanted}: {summary}")
            return summary if summary["status"] in wanted else None

        return wait_for(reached, timeout, f"order {order_id} to show {'/'.join(sorted(wanted))} on the read side",
                        describe=lambda: f"summary {seen[0]!r}" if seen[0] else "no summary (404)")
