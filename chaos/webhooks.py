"""A webhook receiver on loopback for the run, and its endpoint: staff's, for every order
event, so it is owed one delivery per order event the platform published.

The receiver answers 200 to everything and keeps, per request, the delivery id
(``Waybill-Webhook-Id``), the event's id and type and whether the signature verifies
(``apps.webhooks.signing.verify``, the recipe docs/webhooks.md gives receivers). It runs
in the run's own process, so it never goes down: what is tested is the sender's side.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx

from apps.webhooks.signing import ID_HEADER, verify

ORDER_EVENTS = ("orders.order_placed", "orders.order_confirmed", "orders.order_rejected", "orders.order_cancelled")


@dataclass(frozen=True)
class Delivered:
    delivery_id: str
    event_id: str
    event_type: str
    order_id: str
    signed: bool


class Receiver:
    def __init__(self) -> None:
        self.secret = ""  # the endpoint's, once registered
        self.received: list[Delivered] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                try:
                    event = json.loads(body)
                    data = event.get("data") or {}
                    entry = Delivered(self.headers.get(ID_HEADER, ""), str(event.get("id", "")),
                                      str(event.get("type", "")), str(data.get("order_id", "")),
                                      verify(receiver.secret, dict(self.headers.items()), body))
                    with receiver._lock:
                        receiver.received.append(entry)
                finally:
                    self.send_response(200)
                    self.send_header("Content-Length", "2")
                    self.end_headers()
                    self.wfile.write(b"ok")

            def log_message(self, format, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self._thread = threading.Thread(target=self.server.serve_forever, name="chaos-webhooks", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hooks"

    def start(self) -> Receiver:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(5)

    def snapshot(self) -> list[Delivered]:
        with self._lock:
            return list(self.received)


def register(base_url: str, staff_token: str, receiver: Receiver, timeout: float = 60.0) -> dict:
    """Staff's endpoint for every order event, once the webhooks worker has bound its types
    (``receiving``): from then on, every such event is owed a delivery."""
    headers = {"Authorization": f"Token {staff_token}"}
    with httpx.Client(base_url=base_url, headers=headers, timeout=30) as api:
        created = api.post("/api/v1/webhooks/", json={"url": receiver.url, "event_types": list(ORDER_EVENTS)})
        if created.status_code != 201:
            raise RuntimeError(f"webhook endpoint refused: {created.status_code} {created.text[:300]}")
        endpoint = created.json()
        receiver.secret = endpoint["secret"]
        deadline = time.monotonic() + timeout
        while not api.get(f"/api/v1/webhooks/{endpoint['id']}/").json()["receiving"]:
            if time.monotonic() > deadline:
                raise RuntimeError("the webhooks worker did not bind the endpoint's types in time")
            time.sleep(0.2)
    return endpoint
