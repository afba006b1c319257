"""Run the sandbox as a child process, for the platform launcher and for tests::

    with SandboxProcess(tmp / "payments", api_key="sk_test") as sandbox:
        sandbox.configure(outage=True)
        ...  # point the platform's payment client at sandbox.url
        print(sandbox.stats())

``start()`` returns once /healthz answers (or raises SandboxError with the log's tail);
``stop()`` sends SIGTERM, waits, then kills. The port is kept across stop()/start(), so a
restart on the same data folder looks like the same provider coming back. The child's
output goes to ``DATA_DIR/sandbox.log``.

``api_key=None`` means no authentication, even if WAYBILL_PAYMENT_API_KEY is set in the
caller's environment: the child does not inherit it, so what you pass is what you get.

On Linux the child gets a parent-death signal: if the caller dies without stop(), even by
SIGKILL, the sandbox goes too. Linux sends it when the *thread* that started the child
exits, so call start() from a long-lived thread (the main thread, as pytest and the
launcher do).

Standard library only (urllib, with proxies disabled: this is always loopback).
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Self

HOST = "127.0.0.1"
PLATFORM_DIR = Path(__file__).resolve().parent.parent  # the folder that holds this package
_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class SandboxError(RuntimeError):
    """The sandbox could not be started or driven."""


def free_port() -> int:
    """A port free on 127.0.0.1 right now; another process could still take it first."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


# Looked up here, in the parent: between fork and exec the child should only call it
# (importing there could deadlock on an import lock another thread held at fork time).
_libc = ctypes.CDLL(None, use_errno=True) if sys.platform == "linux" else None
PR_SET_PDEATHSIG = 1


def _set_parent_death_signal() -> None:
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


class SandboxProcess:
    def __init__(self, data_dir: Path | str, port: int | None = None, api_key: str | None = None,
                 *, latency_ms: int = 0, failure_rate: float = 0.0):
        self.data_dir = Path(data_dir)
        self.port = port or free_port()
        self.api_key = api_key
        self.latency_ms = latency_ms
        self.failure_rate = failure_rate
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "sandbox.log"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self, timeout: float = 10) -> Self:
        if self.running:
            raise SandboxError(f"already running at {self.url}")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if k != "WAYBILL_PAYMENT_API_KEY"}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PLATFORM_DIR), env.get("PYTHONPATH")]))
        if self.api_key:
            env["WAYBILL_PAYMENT_API_KEY"] = self.api_key  # not argv: ps shows argv to everyone
        command = [sys.executable, "-m", "paymentsandbox", "--host", HOST, "--port", str(self.port),
                   "--data-dir", str(self.data_dir), "--latency-ms", str(self.latency_ms),
                   "--failure-rate", str(self.failure_rate)]
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                command, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                preexec_fn=_set_parent_death_signal if _libc else None,
            )
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise SandboxError(f"sandbox exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                self._request("GET", "/healthz", timeout=1)
                return self
            except (OSError, SandboxError):
                pass  # not listening yet
            if time.monotonic() > deadline:
                self.stop()
                raise SandboxError(f"sandbox not healthy within {timeout}s:\n{self.log_tail()}")
            time.sleep(0.02)

    def stop(self, timeout: float = 10) -> int | None:
        """Stop gracefully (SIGTERM), kill after ``timeout``; returns the exit code."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def configure(self, **settings) -> dict:
        """Change latency_ms / failure_rate / outage at runtime; returns the whole config."""
        return self._request("POST", "/_sandbox/config", settings)

    def config(self) -> dict:
        return self._request("GET", "/_sandbox/config")

    def stats(self) -> dict:
        return self._request("GET", "/_sandbox/stats")

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"

    def _request(self, method: str, path: str, payload: dict | None = None, timeout: float = 10) -> dict:
        data = None if payload is None else json.dumps(payload).encode()
        request = urllib.request.Request(self.url + path, data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        try:
            with _opener.open(request, timeout=timeout) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as error:
            raise SandboxError(f"{method} {path}: {error.code} {error.read().decode(errors='replace')}") from None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<SandboxProcess {self.url} {'running' if self.running else 'stopped'} data_dir={self.data_dir}>"
