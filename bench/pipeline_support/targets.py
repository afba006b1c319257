"""The systems under test, each a context manager that yields a ``Deployed``: where to send
orders (a ``load.Target``) and which processes to watch (for RSS and CPU).

- ``services(...)``: every context as its own processes (``launcher.services``) on
  private PostgreSQL, RabbitMQ and Redis servers, behind the nginx gateway.
- ``embedded(...)``: one ``manage.py runplatform`` on a fresh data folder
  (``tests.e2e.harness``: migrateall + load_demo, then start and wait for /readyz).
- ``sync_baseline(...)``: ``syncshop`` under uvicorn, on its own database of the same
  PostgreSQL server, with its own payment sandbox.

Everything started here is stopped in ``finally`` blocks, also on errors and Ctrl-C.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from bench.harness import REPO

from .load import Target

PYTHON = sys.executable
DEMO_PASSWORD = "waybill-demo"


@dataclass
class Product:
    sku: str
    name: str
    price: str  # outside the sandbox's decline band (2000.00-2999.99)
    on_hand: int


@dataclass
class Deployed:
    target: Target
    processes: dict[str, tuple[str, int]]  # name -> (kind, pid): RSS and CPU
    trees: dict[str, int] = field(default_factory=dict)  # name -> pid: CPU of the whole tree
    notes: dict = field(default_factory=dict)


# What both Waybill modes run with (besides their defaults):
WAYBILL_ENV = {
    # The per-customer order throttle stays in the path (one cache read and write per
    # order) but never refuses: per second rather than per minute, because DRF keeps
    # every request time of the window in the cache entry, and one benchmark customer at
    # 100/s would otherwise carry a 6000-entry list that no real customer (60/minute) has.
    "WAYBILL_THROTTLE_ORDERS": "1000000/second",
    "WAYBILL_THROTTLE_AUTH": "1000000/minute",
    # dev settings (demo accounts) but not Django's DEBUG, which records every SQL query.
    "WAYBILL_DEBUG": "false",
    # No tracing in either mode (the embedded dev default writes spans to a file).
    "WAYBILL_OTEL_EXPORTER": "none",
}


# --- helpers shared by the Waybill modes ------------------------------------------------
def e2e_harness():
    """``tests/e2e/harness.py`` (Platform, Shop, prepare_data_dir), loaded by path: a
    top-level ``tests`` package installed in site-packages would shadow the repo's."""
    import importlib.util

    name = "waybill_e2e_harness"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, REPO / "tests" / "e2e" / "harness.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def create_products(platform, products: list[Product]) -> None:
    """As admin, through the API; then wait until the catalog and orders both know them."""
    shop = e2e_harness().Shop(platform)
    for product in products:
        shop.create_product(on_hand=product.on_hand, price=product.price, sku=product.sku, name=product.name)


def waybill_target(platform, products: list[Product], *, customer: str = "alice") -> Target:
    create_products(platform, products)
    return Target(base_url=platform.base_url, token=platform.token(customer), place_path="/api/v1/orders/",
                  skus=[p.sku for p in products], cookie=platform.session_cookie(customer))


# --- services mode ------------------------------------------------------------------------
@contextmanager
def services(workdir: Path, postgres, products: list[Product], *, database_url_query: str = "",
             extra_env: dict[str, str] | None = None) -> Iterator[Deployed]:
    """``postgres``: a running ``PostgresServer`` (shared with the baseline).
    ``database_url_query`` (experiments only, e.g. ``conn_max_age=60``) is appended to every
    database URL; ``extra_env`` adds variables to every process."""
    from launcher.provision import provision_postgres, provision_rabbitmq
    from launcher.servers import RabbitMQServer, RedisServer
    from launcher.services import ServicesDeployment
    from launcher.stack import Stack

    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    began = time.monotonic()
    with RabbitMQServer(workdir / "rabbitmq") as rabbitmq, RedisServer(workdir / "redis") as redis:
        database_urls = provision_postgres(postgres)
        if database_url_query:
            database_urls = {alias: f"{url}?{database_url_query}" for alias, url in database_urls.items()}
        stack = Stack(workdir=workdir / "stack", database_urls=database_urls, broker_urls=provision_rabbitmq(rabbitmq),
                      redis_url=redis.url, extra={**WAYBILL_ENV, **(extra_env or {})})
        stack.workdir.mkdir(parents=True, exist_ok=True)
        stack.prepare()
        deployment = ServicesDeployment(stack, stack.workdir)
        try:
            deployment.start()
            target = waybill_target(deployment, products)
            processes = {name: (deployment.specs[name].kind, proc.pid) for name, proc in deployment.running.items()
                         if name in deployment.specs}
            trees = {"postgres": postgres._proc.pid, "rabbitmq": rabbitmq._proc.pid, "redis": redis._proc.pid,
                     "gateway": deployment.running["gateway"].pid}
            yield Deployed(target, processes, trees, notes={"startup_s": round(time.monotonic() - began, 1),
                                                            "logs": str(deployment.logs), "deployment": deployment})
        finally:
            deployment.close_clients()
            deployment.stop()


# --- embedded mode ------------------------------------------------------------------------
@contextmanager
def embedded(workdir: Path, products: list[Product], *, extra_env: dict[str, str] | None = None,
             database_url_query: str = "") -> Iterator[Deployed]:
    """``extra_env``, ``database_url_query``: experiments only (see ``services``)."""
    import psutil

    harness = e2e_harness()
    shutil.rmtree(workdir, ignore_errors=True)
    began = time.monotonic()
    data_dir = harness.prepare_data_dir(workdir / "data")
    platform = harness.Platform(data_dir, name="bench-embedded")
    try:
        env = {**WAYBILL_ENV, **(extra_env or {})}
        if database_url_query:
            for alias in ("default", "orders", "inventory", "readmodels"):
                path = data_dir / f"{alias}.sqlite3"
                env[f"WAYBILL_{alias.upper()}_DATABASE_URL"] = f"sqlite:///{path}?{database_url_query}"
        platform.start(env=env)
        target = waybill_target(platform, products)
        processes = {"platform": ("platform", platform.proc.pid)}
        for child in psutil.Process(platform.proc.pid).children(recursive=True):
            if "paymentsandbox" in " ".join(child.cmdline()):
                processes["payment-sandbox"] = ("sandbox", child.pid)
        yield Deployed(target, processes, notes={"startup_s": round(time.monotonic() - began, 1),
                                                 "log": str(platform.log_path)})
    finally:
        if platform.running:
            platform.stop()
        else:
            platform.close_clients()


# --- the synchronous baseline -------------------------------------------------------------
@contextmanager
def sync_baseline(workdir: Path, postgres, products: list[Product]) -> Iterator[Deployed]:
    from launcher.provision import provision_postgres
    from launcher.servers import free_port
    from paymentsandbox.process import SandboxProcess

    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    database_url = provision_postgres(postgres, aliases=(), identity="syncbench")["default"]
    api_key = secrets.token_urlsafe(24)
    sandbox = SandboxProcess(workdir / "payment-sandbox", api_key=api_key)
    server: subprocess.Popen | None = None
    try:
        sandbox.start()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("WAYBILL_", "DJANGO_"))}
        env.update({
            "PYTHONPATH": os.pathsep.join([str(REPO / "platform"), str(REPO)]),
            "DJANGO_SETTINGS_MODULE": "bench.pipeline_support.syncshop.settings",
            "WAYBILL_CONTEXTS": "orders,inventory",
            "SYNCSHOP_DATABASE_URL": database_url,
            "WAYBILL_PAYMENT_GATEWAY_URL": sandbox.url,
            "WAYBILL_PAYMENT_API_KEY": api_key,
            "WAYBILL_DATA_DIR": str(workdir / "data"),
            "WAYBILL_LOG_LEVEL": "INFO",
        })
        spec = {"username": "alice", "products": [p.__dict__ for p in products]}
        done = subprocess.run([PYTHON, "-m", "bench.pipeline_support.syncshop.setup", json.dumps(spec)],
                              cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
        if done.returncode != 0:
            raise RuntimeError(f"sync baseline setup failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
        token = json.loads(done.stdout.strip().splitlines()[-1])["token"]
        port = free_port()
        log = open(workdir / "uvicorn.log", "ab")  # noqa: SIM115 - owned by the process
        server = subprocess.Popen(
            [PYTHON, "-m", "uvicorn", "bench.pipeline_support.syncshop.asgi:application", "--host", "127.0.0.1",
             "--port", str(port), "--no-access-log", "--lifespan", "off"],
            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        base_url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            if server.poll() is not None:
                raise RuntimeError(f"sync baseline exited {server.returncode}: "
                                   f"{(workdir / 'uvicorn.log').read_text()[-3000:]}")
            try:
                if httpx.get(f"{base_url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("sync baseline did not answer /healthz within 60 s")
            time.sleep(0.1)
        # 8 requests in flight: the baseline's best. Each request holds its products' row locks
        # across the HTTP charge, so with 64 in flight on 8 products it mostly waits for locks
        # (measured: 22/s against 36/s); the pipeline keeps the default 64.
        target = Target(base_url=base_url, token=token, place_path="/api/v1/sync-orders/",
                        skus=[p.sku for p in products], max_in_flight=8)
        yield Deployed(target, {"sync-web": ("web", server.pid), "payment-sandbox": ("sandbox", sandbox.process.pid)},
                       {"postgres": postgres._proc.pid},
                       notes={"log": str(workdir / "uvicorn.log"), "also_saturate_with_in_flight": 64})
    finally:
        if server is not None and server.poll() is None:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(20)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
        sandbox.stop()
