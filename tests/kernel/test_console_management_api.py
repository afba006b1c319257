"""The console's queue figures from RabbitMQ's management API when a cluster's node is down:
``WAYBILL_BROKER_MANAGEMENT_URL`` lists every node, and the first that answers is asked.
The API is a stand-in answering ``GET /api/queues/<vhost>`` over real HTTP on loopback; the
services suite reads the real one (tests/services/test_console_services.py)."""

from __future__ import annotations

import base64
import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from waybill import console


class _ManagementAPI(BaseHTTPRequestHandler):
    asked: list[tuple[str, str]] = []

    def do_GET(self):  # noqa: N802 - http.server's name
        type(self).asked.append((self.path, self.headers.get("Authorization", "")))
        body = json.dumps([{"name": "waybill.orders", "messages_ready": 3, "messages_unacknowledged": 2,
                            "consumers": 1}]).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def management_api():
    _ManagementAPI.asked = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _ManagementAPI)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_the_figures_come_from_the_first_node_that_answers(management_api, settings):
    settings.WAYBILL_BROKER_URL = "amqp://waybill:x@127.0.0.1:5672/waybill"
    settings.WAYBILL_BROKER_MANAGEMENT_URL = ";".join(
        f"http://waybill_admin:s%40cret@127.0.0.1:{port}" for port in (_closed_port(), management_api))
    figures = console.queue_figures(["waybill.orders", "waybill.gone"])
    orders = figures["waybill.orders"]
    assert (orders.ready, orders.unacked, orders.consumers, orders.source, orders.error) == (
        3, 2, 1, "management API", "")
    assert figures["waybill.gone"].error == "no such queue"
    (path, authorization), = _ManagementAPI.asked
    assert path.startswith("/api/queues/waybill?")
    assert authorization == "Basic " + base64.b64encode(b"waybill_admin:s@cret").decode()


def test_no_node_answering_is_an_error_on_every_queue_without_the_credentials(settings):
    settings.WAYBILL_BROKER_MANAGEMENT_URL = ";".join(
        f"http://waybill_admin:s3cret@127.0.0.1:{_closed_port()}" for _ in range(3))
    figures = console.queue_figures(["waybill.orders"])
    assert figures["waybill.orders"].ready is None
    assert figures["waybill.orders"].error == "ConnectError (see the log)"
    assert "s3cret" not in figures["waybill.orders"].error
