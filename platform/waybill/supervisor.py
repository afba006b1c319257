"""What the supervisor says of the processes of a context (services mode on one machine,
where supervisord runs them: see launcher.supervision). /readyz and the operations report
name those that keep crashing, so an operator sees them without reading the supervisor.

Processes are named ``<context>-<role>`` (launcher.deployment), which is how a context
finds its own; replica k of one (k > 1) is ``<context>-<role>-k``. The control interface
is XML-RPC over a Unix socket; the client here is the standard library's with a timeout, so
a readiness probe can never hang on the supervisor.
"""

from __future__ import annotations

import http.client
import json
import re
import socket
import time
import xmlrpc.client  # nosec B411 - defused below, before any answer is parsed
from collections.abc import Iterable
from pathlib import Path
from xml.parsers.expat import ExpatError

from defusedxml.xmlrpc import monkey_patch
from django.conf import settings

# The supervisor is ours, on a Unix socket only its user can open; still, nothing parses
# XML here with entity expansion or unbounded decompression: defusedxml's parser refuses
# both, for every xmlrpc.client in the process (the launcher's too, which imports this).
monkey_patch()

# supervisord's states of a process that is not doing its job although nobody stopped it:
# failing to start and retried with backoff, or given up on.
CRASHING = ("BACKOFF", "FATAL")
# A process that runs, crashes and is restarted again and again: supervisord does not
# know that state, its crash reporter does (crash-loops.json beside the socket: name ->
# until when the process counts as crashing in a loop).
CRASH_LOOP = "CRASH_LOOP"
CRASH_LOOPS_FILE = "crash-loops.json"
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


def crashing(contexts: Iterable[str], *, unless_a_replica_runs: bool = False) -> dict[str, str]:
    """The processes of ``contexts`` that keep crashing -> their state ("BACKOFF", "FATAL"
    or "CRASH_LOOP"); empty when unsupervised. Raises SupervisorUnavailable if it does not
    answer. ``unless_a_replica_runs``: leave out a crashing replica while another replica of
    its service runs without crashing (what readiness asks: the context still does that
    work; the operations report names every one)."""
    url = settings.WAYBILL_SUPERVISOR_URL
    if not url:
        return {}
    path = Path(url.removeprefix("unix://"))
    prefixes = tuple(f"{context}-" for context in contexts)
    proxy = xmlrpc.client.ServerProxy("http://localhost", transport=_UnixTransport(str(path)))
    try:
        processes = proxy.supervisor.getAllProcessInfo()
    except (OSError, xmlrpc.client.Error, http.client.HTTPException, ExpatError) as exc:  # a garbled answer too
        raise SupervisorUnavailable(str(exc)) from exc
    loops = _crash_loops(path.parent / CRASH_LOOPS_FILE)
    found, running = {}, set()
    for process in processes:
        name, state = process["name"], process["statename"]
        if not name.startswith(prefixes):
            continue
        if state in CRASHING:
            found[name] = state
        elif state in ("STARTING", "RUNNING", "EXITED") and name in loops:  # stopped on purpose: not crashing
            found[name] = CRASH_LOOP
        elif state == "RUNNING":
            running.add(_service(name))
    if unless_a_replica_runs:
        found = {name: state for name, state in found.items() if _service(name) not in running}
    return found


def _service(name: str) -> str:
    """The service a replica belongs to: its name without the replica's number."""
    return re.sub(r"-\d+$", "", name)


def _crash_loops(path: Path) -> set[str]:
    try:
        until = json.loads(path.read_text())
    except (OSError, ValueError):
        return set()
    now = time.time()
    return {name for name, deadline in until.items() if deadline > now}
