"""A services deployment driven from Python: every process of ``launcher.deployment`` as
its own OS process (a log file each), behind the nginx gateway, on a provisioned
``Stack``. The services test suite and the benchmarks use it; they can kill, restart or
add processes. (``make up`` runs the same processes under honcho instead.)"""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import httpx

from launcher.deployment import Process, processes
from launcher.gateway import Gateway
from launcher.polling import wait_for
from launcher.servers import free_port
from launcher.stack import REPO, Stack

READY_TIMEOUT = 60.0
DEMO_PASSWORD = "waybill-demo"
STOP_TIMEOUT = 20.0


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.TransportError:
        return False


class DemoApiClients:
    """HTTP clients signed in as demo accounts, for a platform at ``self.base_url``: the
    face the tests (and benchmarks) use on this deployment and on the embedded platform
    (tests/e2e/harness.Platform) alike."""

    demo_password = DEMO_PASSWORD
    client_timeout = 30.0

    def __init__(self) -> None:
        self._tokens: dict[str, str] = {}
        self._clients: list[httpx.Client] = []

    def token(self, username: str) -> str:
        if username not in self._tokens:
            response = httpx.post(f"{self.base_url}/api/v1/auth/token/",
                                  json={"username": username, "password": self.demo_password}, timeout=10)
            assert response.status_code == 200, f"login of {username}: {response.status_code} {response.text}"
            self._tokens[username] = response.json()["token"]
        return self._tokens[username]

    def client(self, username: str | None = None) -> httpx.Client:
        """A client for ``username`` (Token auth), or an anonymous one; ``close_clients``
        closes them all."""
        headers = {"Authorization": f"Token {self.token(username)}"} if username else {}
        client = httpx.Client(base_url=self.base_url, headers=headers, timeout=self.client_timeout)
        self._clients.append(client)
        return client

    def session_cookie(self, username: str) -> str:
        """Sign in through the browser's login form; the Cookie header it ends with."""
        with httpx.Client(base_url=self.base_url, timeout=self.client_timeout) as browser:
            browser.get("/accounts/login/")
            response = browser.post("/accounts/login/", data={
                "username": username, "password": self.demo_password,
                "csrfmiddlewaretoken": browser.cookies["csrftoken"],
            }, headers={"Referer": f"{self.base_url}/accounts/login/"})
            assert response.status_code == 302, f"login of {username}: {response.status_code} {response.text[:300]}"
            return "; ".join(f"{name}={value}" for name, value in browser.cookies.items())

    def close_clients(self) -> None:
        for client in self._clients:
            client.close()
        self._clients.clear()


class ServicesDeployment(DemoApiClients):
    name = "services"

    def __init__(self, stack: Stack, workdir: Path):
        super().__init__()
        self.stack = stack
        self.workdir = workdir
        self.logs = workdir / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.port_of = {p.name: str(free_port()) for p in processes() if p.listens}
        self.specs = {p.name: p for p in processes(port_of=self.port_of)}
        stack.payment_gateway_url = self.payment_sandbox_url
        self.running: dict[str, subprocess.Popen] = {}
        self.gateway = Gateway(workdir / "gateway", port=free_port(), upstreams={
            (p.context or "shell"): f"127.0.0.1:{self.port_of[p.name]}" for p in self.specs.values() if p.is_web
        })

    # --- the whole deployment --------------------------------------------------------------
    @property
    def base_url(self) -> str:
        return self.gateway.url

    @property
    def payment_sandbox_url(self) -> str:
        return f"http://127.0.0.1:{self.port_of['payment-sandbox']}"

    def start(self) -> ServicesDeployment:
        self.start_process("payment-sandbox")
        self.wait_ready("payment-sandbox")
        for name in self.specs:
            if name not in self.running:
                self.start_process(name)
        for name in self.port_of:
            self.wait_ready(name)
        self.gateway.start()
        return self

    def stop(self) -> dict[str, int]:
        """SIGTERM everything (the way an orchestrator stops it); returns the exit codes."""
        self.gateway.stop()
        for proc in self.running.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        codes = {}
        for name, proc in self.running.items():
            try:
                codes[name] = proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                codes[name] = proc.wait()
        self.running.clear()
        return codes

    # --- single processes ------------------------------------------------------------------
    def start_process(self, name: str, *, as_name: str | None = None,
                      env: dict[str, str] | None = None) -> subprocess.Popen:
        """Start process ``name`` (again); ``as_name`` runs one more instance of it, e.g. a
        second worker competing for the same queue; ``env`` adds variables."""
        spec: Process = self.specs[name]
        label = as_name or name
        argv = self.stack.argv(spec)
        if as_name and spec.kind == "worker":
            argv[argv.index("-n") + 1] = f"{label}@%h"
        log = open(self.logs / f"{label}.log", "ab")  # noqa: SIM115 - owned by the process
        # The sandbox keeps its data under its working folder: this deployment's, not the repo's.
        cwd = self.workdir if spec.kind == "sandbox" else REPO
        proc = subprocess.Popen(argv, cwd=cwd, env={**self.stack.process_env(spec), **(env or {})}, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        self.running[label] = proc
        return proc

    def kill(self, name: str, sig: int = signal.SIGKILL) -> int:
        proc = self.running.pop(name)
        proc.send_signal(sig)
        return proc.wait(STOP_TIMEOUT)

    def restart(self, name: str) -> None:
        self.kill(name, signal.SIGKILL)
        self.start_process(name)
        if name in self.port_of:
            self.wait_ready(name)

    def wait_ready(self, name: str) -> None:
        url = f"http://127.0.0.1:{self.port_of[name]}{self.specs[name].ready_path}"

        def ready() -> bool:
            if self.running[name].poll() is not None:
                raise AssertionError(f"{name} exited {self.running[name].returncode}:\n{self.log_tail(name)}")
            return _answers(url)

        wait_for(ready, READY_TIMEOUT, f"{name} to be ready")

    # --- the same HTTP face as the embedded platform (tests/e2e/harness.Platform) --------
    @property
    def log_path(self) -> Path:
        return self.logs

    def log_tail(self, name: str | None = None, lines: int = 40) -> str:
        names = [name] if name else sorted(self.running)
        parts = []
        for label in names:
            path = self.logs / f"{label}.log"
            text = path.read_text(errors="replace").splitlines()[-lines:] if path.exists() else []
            parts.append(f"--- {label} ---\n" + "\n".join(text))
        return "\n".join(parts)
