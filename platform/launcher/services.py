"""A services deployment driven from Python: every process of ``launcher.deployment`` and
the nginx gateway under supervisord (``launcher.supervision``, a log file each), on a
provisioned ``Stack``, exactly as ``make up`` runs them. The services test suite and the
benchmarks use it; they can crash, stop, restart or add processes, and watch the
supervisor restart them."""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass
from pathlib import Path

import httpx

from launcher.deployment import Process, processes
from launcher.gateway import Gateway, upstreams
from launcher.polling import wait_for
from launcher.servers import free_port
from launcher.stack import Stack
from launcher.supervision import ALIVE, RESTART, Supervisor, gateway_program, process_program

# The deployment's processes boot at once, each a Django process of ~2.5 s of CPU: fifteen
# of them were all ready in 17 s on an idle 2-core machine, but took over 60 s on a contended
# CI machine running the rest of the suite beside them. The bound only matters when one never
# becomes ready, so it is generous.
READY_TIMEOUT = 180.0
# One readiness probe: /readyz asks every database, the broker and the supervisor; a probe
# that takes longer (a broker node not answering) counts as not ready, and the next one asks again.
PROBE_TIMEOUT = 5.0
DEMO_PASSWORD = "waybill-demo"


def answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=PROBE_TIMEOUT).status_code == 200
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
                                  json={"username": username, "password": self.demo_password},
                                  timeout=self.client_timeout)
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


@dataclass(frozen=True)
class Running:
    name: str
    pid: int


class ServicesDeployment(DemoApiClients):
    name = "services"

    def __init__(self, stack: Stack, workdir: Path, *, replicas: str = ""):
        """``replicas``: as ``WAYBILL_REPLICAS`` (``orders-web=2,...``), beside the manifests'."""
        super().__init__()
        self.stack = stack
        self.workdir = workdir
        self.logs = workdir / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.port_of = {p.name: str(free_port()) for p in processes(replicas=replicas) if p.listens}
        self.specs = {p.name: p for p in processes(port_of=self.port_of, replicas=replicas)}
        self.supervisor = Supervisor(workdir / "supervisor", logs=self.logs)
        stack.payment_gateway_url = self.payment_sandbox_url
        stack.supervisor_url = self.supervisor.url
        self.gateway = Gateway(workdir / "gateway", port=free_port(),
                               upstreams=upstreams(self.specs.values(), self.port_of))

    # --- the whole deployment --------------------------------------------------------------
    @property
    def base_url(self) -> str:
        return self.gateway.url

    @property
    def payment_sandbox_url(self) -> str:
        return f"http://127.0.0.1:{self.port_of['payment-sandbox']}"

    def start(self) -> ServicesDeployment:
        self.supervisor.start()
        self.start_process("payment-sandbox")
        self.wait_ready("payment-sandbox")
        running = self.running
        for name in self.specs:
            if name not in running:
                self.start_process(name)
        for name in self.port_of:
            self.wait_ready(name)
        self.supervisor.add(gateway_program(self.gateway))
        wait_for(lambda: answers(self.gateway.url + "/healthz"), READY_TIMEOUT, "the gateway to answer")
        return self

    def stop(self) -> dict[str, int]:
        """Stop everything with its stop signal (the way an orchestrator stops it), then
        the supervisor; returns the exit codes."""
        supervisor = self.supervisor.rpc.supervisor
        supervisor.stopAllProcesses(True)
        codes = {name: info["exitstatus"] for name, info in self.supervisor.processes().items()}
        self.supervisor.stop()
        return codes

    @property
    def running(self) -> dict[str, Running]:
        """The processes that have a pid now, by name."""
        return {name: Running(name, info["pid"]) for name, info in self.supervisor.processes().items()
                if info["statename"] in ALIVE and info["pid"]}

    def pids(self) -> dict[str, int]:
        """Every running process's pid, by name: the same pids later mean nothing died
        meanwhile (the supervisor would have started it again under a new one)."""
        return {name: process.pid for name, process in self.running.items()}

    def states(self) -> dict[str, str]:
        """Every supervised process -> supervisord's state (RUNNING, BACKOFF, FATAL, ...)."""
        return {name: info["statename"] for name, info in self.supervisor.processes().items()}

    # --- single processes ------------------------------------------------------------------
    def start_process(self, name: str, *, as_name: str | None = None, env: dict[str, str] | None = None,
                      argv: list[str] | None = None) -> Running:
        """Start process ``name`` (again) under the supervisor; ``as_name`` runs one more
        instance of it, e.g. a second worker competing for the same queue; ``env`` adds
        variables; ``argv`` replaces its command (a profiler around it)."""
        spec: Process = self.specs[name]
        label = as_name or name
        self.supervisor.add(process_program(self.stack, spec, name=label, env=env, argv=argv))
        return Running(label, self.supervisor.info(label)["pid"])

    def kill(self, name: str, sig: int = signal.SIGKILL) -> int:
        """Stop ``name`` with ``sig`` and keep it stopped (until ``start_process``): for
        tests that need a process gone for a while. Returns its exit status."""
        return self.supervisor.stop_process(name, sig)

    def crash(self, name: str, sig: int = signal.SIGKILL) -> tuple[int, int]:
        """``kill -9`` from outside, as a crash looks to the supervisor: it starts the
        process again. Waits for the new one (ready, if it listens); returns the old and
        the new pid."""
        old = self.running[name].pid
        os.kill(old, sig)

        def restarted() -> int:
            info = self.supervisor.info(name)
            return info["pid"] if info["statename"] in ALIVE and info["pid"] not in (0, old) else 0

        new = wait_for(restarted, RESTART.start_retries * 10.0, f"the supervisor to restart {name}",
                       describe=lambda: self.log_tail(name, lines=10))
        if name in self.port_of:
            self.wait_ready(name)
        return old, new

    def restart(self, name: str) -> None:
        self.kill(name, signal.SIGKILL)
        self.start_process(name)
        if name in self.port_of:
            self.wait_ready(name)

    def remove(self, name: str) -> None:
        """Stop an extra process (``start_process(as_name=...)``) and forget it."""
        self.supervisor.remove(name)

    def replica_names(self, service: str) -> list[str]:
        """The names of ``service``'s replicas (``orders-web``, ``orders-web-2``, ...)."""
        return [name for name, spec in self.specs.items() if spec.service == service]

    def wait_ready(self, name: str) -> None:
        url = f"http://127.0.0.1:{self.port_of[name]}{self.specs[name].ready_path}"

        def ready() -> bool:
            info = self.supervisor.info(name)
            if info["statename"] in ("FATAL", "STOPPED"):
                raise AssertionError(f"{name} is {info['statename']}:\n{self.log_tail(name)}")
            return answers(url)

        wait_for(ready, READY_TIMEOUT, f"{name} to be ready")

    # --- the same HTTP face as the embedded platform (tests/e2e/harness.Platform) --------
    @property
    def log_path(self) -> Path:
        return self.logs

    def log_tail(self, name: str | None = None, lines: int = 40) -> str:
        names = [name] if name else sorted(self.supervisor.processes())
        parts = []
        for label in names:
            path = self.logs / f"{label}.log"
            text = path.read_text(errors="replace").splitlines()[-lines:] if path.exists() else []
            parts.append(f"--- {label} ---\n" + "\n".join(text))
        return "\n".join(parts)
