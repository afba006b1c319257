"""What the supervisor says of the processes of a context (services mode on one machine,
where supervisord runs them: see launcher.supervision). /readyz and the operations report
name those that keep crashing, so an operator sees them without reading the supervisor.

Processes are named ``<context>-<role>`` (launcher.deployment), which is how a context
finds its own. The control interface is XML-RPC over a Unix socket; the client here is the
standard library's with a timeout, so a readiness probe can never hang on the supervisor.
"""

from __future__ import annotations

import http.client
import socket
import xmlrpc.client
from collections.abc import Iterable

from django.conf import settings

# supervisord's states of a process that is not doing its job although nobody stopped it:
# failing to start and retried with backoff, or given up on.
CRASHING = ("BACKOFF", "FATAL")
TIMEOUT_SECONDS = 2.0


class SupervisorUnavailable(Exception):
    """The supervisor did not answer."""


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str):
        super().__init__("localhost", timeout=TIMEOUT_SECONDS)
        self.path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.path)


class _UnixTransport(xmlrpc.client.Transport):
    def __init__(self, path: str):
        super().__init__()
        self.path = path

    def make_connection(self, host):
        return _UnixConnection(self.path)


def supervised() -> bool:
    return bool(settings.WAYBILL_SUPERVISOR_URL)


def crashing(contexts: Iterable[str]) -> dict[str, str]:
    """The processes of ``contexts`` that keep crashing -> their state ("BACKOFF" or
    "FATAL"); empty when unsupervised. Raises SupervisorUnavailable if it does not answer."""
    url = settings.WAYBILL_SUPERVISOR_URL
    if not url:
        return {}
    prefixes = tuple(f"{context}-" for context in contexts)
    proxy = xmlrpc.client.ServerProxy("http://localhost", transport=_UnixTransport(url.removeprefix("unix://")))
    try:
        processes = proxy.supervisor.getAllProcessInfo()
    except (OSError, xmlrpc.client.Error) as exc:
        raise SupervisorUnavailable(str(exc)) from exc
    return {p["name"]: p["statename"] for p in processes
            if p["name"].startswith(prefixes) and p["statename"] in CRASHING}
