"""The HTTP side: request parsing and validation, simulated trouble, routing.

Standard library only (``http.server.ThreadingHTTPServer``): one thread per connection is
plenty for a sandbox and keeps start-up instant. See the package docstring for the API.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import random
import re
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from .store import InvalidRequest, Store

MAX_BODY = 64 * 1024
AMOUNT = re.compile(r"\d{1,8}(\.\d{1,2})?")  # up to 99,999,999.99; no sign, no exponent
CURRENCY = re.compile(r"[A-Z]{3}")
MAX_TEXT = 255  # reference and Idempotency-Key


class SandboxConfig:
    """Simulated trouble, in memory and changeable at runtime (thread-safe)."""

    def __init__(self, latency_ms: int = 0, failure_rate: float = 0.0, outage: bool = False):
        self._lock = threading.Lock()
        self._values = {}
        self.update({"latency_ms": latency_ms, "failure_rate": failure_rate, "outage": outage})

    def snapshot(self) -> dict:
        with self._lock:
            return dict(self._values)

    def update(self, changes: object) -> dict:
        if not isinstance(changes, dict):
            raise InvalidRequest("body", "expected a JSON object")
        clean = {}
        for name, value in changes.items():
            # bool is an int subclass in Python; neither a latency nor a rate is a bool.
            if name == "latency_ms" and type(value) is int and value >= 0:
                clean[name] = value
            elif name == "failure_rate" and type(value) in (int, float) and 0 <= value <= 1:
                clean[name] = float(value)
            elif name == "outage" and type(value) is bool:
                clean[name] = value
            elif name in ("latency_ms", "failure_rate", "outage"):
                raise InvalidRequest(name, "latency_ms: int >= 0, failure_rate: number 0..1, outage: bool")
            else:
                raise InvalidRequest(name, "unknown setting")
        with self._lock:
            self._values.update(clean)
            return dict(self._values)


def _text(body: dict, field: str) -> str:
    value = body.get(field)
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_TEXT:
        raise InvalidRequest(field, f"required: a non-empty string of at most {MAX_TEXT} characters")
    return value


def _fields(body: object, allowed: set[str]) -> dict:
    if not isinstance(body, dict):
        raise InvalidRequest("body", "expected a JSON object")
    for name in body:
        if name not in allowed:  # strict, so a client's typo fails here and not in production
            raise InvalidRequest(name, "unknown field")
    return body


def parse_charge(body: object) -> dict:
    body = _fields(body, {"amount", "currency", "reference"})
    amount = body.get("amount")
    # A string, never a JSON number: floats are how money goes wrong.
    if not isinstance(amount, str) or not AMOUNT.fullmatch(amount):
        raise InvalidRequest("amount", 'required: a decimal string with at most two decimals, e.g. "12.50"')
    units, _, fraction = amount.partition(".")
    amount_cents = int(units) * 100 + int(fraction.ljust(2, "0") or 0)
    if amount_cents <= 0:
        raise InvalidRequest("amount", "must be greater than zero")
    currency = body.get("currency")
    if not isinstance(currency, str) or not CURRENCY.fullmatch(currency):
        raise InvalidRequest("currency", 'required: three upper-case letters, e.g. "EUR"')
    return {"amount_cents": amount_cents, "currency": currency, "reference": _text(body, "reference")}


def parse_refund(body: object) -> dict:
    return {"reference": _text(_fields(body, {"reference"}), "reference")}


class SandboxServer(ThreadingHTTPServer):
    daemon_threads = True
    # Idle keep-alive connections park a thread in readline(); joining them at close
    # would hang shutdown. In-flight requests are drained via `active` instead.
    block_on_close = False
    request_queue_size = 128  # the default of 5 drops connects when tests fire 20 at once

    def __init__(self, address: tuple[str, int], *, store: Store, config: SandboxConfig, api_key: str | None):
        super().__init__(address, Handler)
        self.store = store
        self.config = config
        self.api_key = api_key or None
        self.unavailable = 0  # 503s answered since start (in memory, like the config)
        self.active = 0
        self._lock = threading.Condition()

    def count_unavailable(self) -> None:
        with self._lock:
            self.unavailable += 1

    def track(self, delta: int) -> None:
        with self._lock:
            self.active += delta
            self._lock.notify_all()

    def drain(self, timeout: float) -> bool:
        """After shutdown(): wait for requests being handled right now to finish."""
        with self._lock:
            return self._lock.wait_for(lambda: self.active == 0, timeout)


class Handler(BaseHTTPRequestHandler):
    server: SandboxServer
    protocol_version = "HTTP/1.1"  # keep-alive, so a client's connection pool is exercised
    server_version = "WaybillPaymentSandbox/1"
    timeout = 60  # seconds a connection may sit idle or half-sent before its thread gives up

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def _dispatch(self, method: str) -> None:
        self.server.track(+1)
        try:
            url = urlsplit(self.path)
            # Read the body whatever happens next: on a keep-alive connection, unread bytes
            # would be parsed as the next request.
            raw = self._read_body()
            if url.path.startswith("/v1/"):
                self._v1(method, url.path, parse_qs(url.query), raw)
            else:
                self._control(method, url.path, raw)
        except InvalidRequest as error:
            self._send(400, {"error": "invalid_request", "field": error.field, "message": error.message})
        finally:
            self.server.track(-1)

    def _read_body(self) -> bytes | None:
        length = self.headers.get("Content-Length") or "0"
        if not length.isdigit() or int(length) > MAX_BODY:
            self.close_connection = True  # we will not read it, so the connection is unusable
            raise InvalidRequest("body", f"Content-Length must be a number of at most {MAX_BODY} bytes")
        return self.rfile.read(int(length)) if int(length) else None

    @staticmethod
    def _json(raw: bytes | None) -> object:
        try:
            return json.loads(raw or b"")
        except ValueError:
            raise InvalidRequest("body", "not valid JSON") from None

    def _control(self, method: str, path: str, raw: bytes | None) -> None:
        routes = {
            ("GET", "/healthz"): lambda: {"status": "ok"},
            ("GET", "/_sandbox/config"): self.server.config.snapshot,
            ("POST", "/_sandbox/config"): lambda: self.server.config.update(self._json(raw)),
            ("GET", "/_sandbox/stats"): lambda: {**self.server.store.counts(), "unavailable": self.server.unavailable},
        }
        self._route(routes, method, path)

    def _v1(self, method: str, path: str, query: dict, raw: bytes | None) -> None:
        # Trouble first: a provider that is down answers before it looks at who you are,
        # and nothing may change state when the answer is a 503.
        config = self.server.config.snapshot()
        if config["latency_ms"]:
            time.sleep(config["latency_ms"] / 1000)
        if config["outage"] or random.random() < config["failure_rate"]:
            self.server.count_unavailable()
            return self._send(503, {"error": "unavailable"})
        if self.server.api_key and not hmac.compare_digest(
            self.headers.get("Authorization", "").encode(), f"Bearer {self.server.api_key}".encode()
        ):
            return self._send(401, {"error": "unauthorized"})
        routes = {
            ("POST", "/v1/charges"): lambda: self._idempotent(
                method, path, raw, parse_charge, lambda db, fields: (201, self.server.store.create_charge(db, **fields))
            ),
            ("POST", "/v1/refunds"): lambda: self._idempotent(
                method, path, raw, parse_refund, lambda db, fields: (201, self.server.store.create_refund(db, **fields))
            ),
            ("GET", "/v1/charges"): lambda: {"data": self.server.store.charges(self._reference(query))},
        }
        self._route(routes, method, path)

    @staticmethod
    def _reference(query: dict) -> str:
        values = query.get("reference") or [""]
        if not values[0]:
            raise InvalidRequest("reference", "required query parameter")
        return values[0]

    def _route(self, routes: dict, method: str, path: str) -> None:
        handler = routes.get((method, path))
        if handler is None:
            if any(p == path for _, p in routes):
                return self._send(405, {"error": "method_not_allowed"})
            return self._send(404, {"error": "not_found"})
        result = handler()
        if result is not None:  # the idempotent handlers send their own (stored) response
            self._send(200, result)

    def _idempotent(self, method, path, raw, parse, execute) -> None:
        key = self.headers.get("Idempotency-Key", "")
        if not key.strip() or len(key) > MAX_TEXT:
            raise InvalidRequest("Idempotency-Key", f"required header: a non-empty string of at most {MAX_TEXT} characters")
        body = self._json(raw)
        fields = parse(body)  # validation errors are answered, never stored (as Stripe does)
        # "Same request" means same method, path and JSON content, whatever the key order.
        fingerprint = hashlib.sha256(f"{method} {path} {json.dumps(body, sort_keys=True)}".encode()).hexdigest()
        status, text, replayed = self.server.store.idempotent(key, fingerprint, lambda db: execute(db, fields))
        self._send(status, text, {"Idempotent-Replayed": "true"} if replayed else {})

    def _send(self, status: int, payload: dict | str, headers: dict | None = None) -> None:
        data = (payload if isinstance(payload, str) else json.dumps(payload)).encode()
        self.send_response(status, HTTPStatus(status).phrase)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)
