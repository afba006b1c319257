"""What a supervised process says of its context's crashing processes, in process: /readyz
names them (503), and the operations report carries them to the dashboard. The supervisor
is a stand-in speaking supervisord's XML-RPC on a Unix socket; the services suite proves
the same against the real one (tests/services/test_supervision.py)."""

from __future__ import annotations

import json
import socket
import socketserver
import threading
import time
import xmlrpc.server

import pytest

from waybill import contexts, opsreport, supervisor

pytestmark = pytest.mark.django_db(databases="__all__")


class _UnixRequestHandler(xmlrpc.server.SimpleXMLRPCRequestHandler):
    disable_nagle_algorithm = False  # a TCP option: not on a Unix socket


class _UnixXMLRPCServer(socketserver.ThreadingMixIn, xmlrpc.server.SimpleXMLRPCServer):
    address_family = socket.AF_UNIX
    allow_reuse_address = False
    daemon_threads = True


class StandInSupervisor:
    """Answers ``supervisor.getAllProcessInfo`` with ``states`` (name -> statename)."""

    def __init__(self, path: str):
        self.states: dict[str, str] = {}
        self.server = _UnixXMLRPCServer(path, _UnixRequestHandler, logRequests=False, allow_none=True)
        self.server.register_function(
            lambda: [{"name": name, "group": name, "statename": state} for name, state in self.states.items()],
            "supervisor.getAllProcessInfo")
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def stand_in(tmp_path, settings):
    path = str(tmp_path / "supervisor.sock")
    fake = StandInSupervisor(path)
    settings.WAYBILL_SUPERVISOR_URL = f"unix://{path}"
    yield fake
    fake.close()


def test_readyz_names_the_processes_of_its_contexts_that_keep_crashing(client, stand_in, settings):
    stand_in.states = {"orders-web": "RUNNING", "orders-relay": "FATAL", "inventory-worker": "BACKOFF",
                       "orders-beat": "STOPPED", "gateway": "FATAL"}
    response = client.get("/readyz")
    assert response.status_code == 503
    checks = response.json()["checks"]
    assert {k: v for k, v in checks.items() if k.startswith("process:")} == {
        "process:orders-relay": "FATAL", "process:inventory-worker": "BACKOFF"}  # stopped on purpose: not crashing

    settings.WAYBILL_CONTEXTS = ["inventory"]
    assert supervisor.crashing(settings.WAYBILL_CONTEXTS) == {"inventory-worker": "BACKOFF"}

    stand_in.states = {"orders-relay": "RUNNING", "inventory-worker": "RUNNING"}
    assert supervisor.crashing(["orders", "inventory"]) == {}


def test_a_crashing_replica_keeps_its_context_unready_only_while_no_other_replica_runs(client, stand_in):
    stand_in.states = {"orders-web": "RUNNING", "orders-web-2": "BACKOFF", "orders-worker": "RUNNING",
                       "orders-worker-2": "FATAL", "orders-worker-3": "RUNNING"}
    assert client.get("/readyz").status_code == 200  # each service still has a replica doing its work
    # The operations report still names every one.
    assert supervisor.crashing(["orders"]) == {"orders-web-2": "BACKOFF", "orders-worker-2": "FATAL"}

    stand_in.states |= {"orders-worker": "FATAL", "orders-worker-3": "STARTING"}
    response = client.get("/readyz")
    assert response.status_code == 503
    assert {k: v for k, v in response.json()["checks"].items() if k.startswith("process:")} == {
        "process:orders-worker": "FATAL", "process:orders-worker-2": "FATAL"}


def test_a_process_the_crash_reporter_saw_crash_again_and_again_counts_until_its_window_ends(stand_in, tmp_path):
    stand_in.states = {"orders-relay": "RUNNING", "orders-worker": "RUNNING", "orders-beat": "STOPPED"}
    now = time.time()
    (tmp_path / supervisor.CRASH_LOOPS_FILE).write_text(json.dumps(
        {"orders-relay": now + 60, "orders-worker": now - 1, "orders-beat": now + 60}))
    # The worker's window is over; the beat was stopped on purpose since.
    assert supervisor.crashing(["orders"]) == {"orders-relay": supervisor.CRASH_LOOP}


def test_readyz_says_so_when_the_supervisor_does_not_answer(client, settings, tmp_path):
    settings.WAYBILL_SUPERVISOR_URL = f"unix://{tmp_path / 'nobody.sock'}"
    response = client.get("/readyz")
    assert response.status_code == 503 and response.json()["checks"]["supervisor"] == "unavailable"


def test_unsupervised_processes_report_no_processes_and_are_ready_as_before(client, settings):
    settings.WAYBILL_SUPERVISOR_URL = ""
    assert client.get("/readyz").status_code == 200
    orders = contexts.get("orders")
    opsreport.outbox_report(orders, force=True)
    outbox = orders.outbox.objects.using(orders.database)
    assert not outbox.filter(message_type="waybill.processes_supervised").exists()


def test_the_operations_report_carries_the_crashing_processes(stand_in):
    stand_in.states = {"orders-relay": "FATAL", "inventory-web": "BACKOFF"}
    orders = contexts.get("orders")
    opsreport.outbox_report(orders, force=True)
    row = orders.outbox.objects.using(orders.database).filter(message_type="waybill.processes_supervised").get()
    assert row.aggregate_id == "processes.orders"
    assert row.envelope["payload"]["crashing"] == {"orders-relay": "FATAL"}  # only its own context's
