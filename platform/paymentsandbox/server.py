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
import traceback
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from .store import InvalidRequest, Store

MAX_BODY = 64 * 1024
AMOUNT = re.compile(r"\d{1,8}(\.\d{1,2})?")  # up to 99,999,999.99; no sign, no exponent
CURRENCY = re.compile(r"[A-Z]{3}")
MAX_TEXT = 255  # reference and Idempotency-Key


# bool is an int subclass in Python, hence type() and not isinstance(): True is no latency.
SETTINGS = {
    "latency_ms": (lambda v: type(v) is int and v >= 0, "an integer >= 0"),
    "failure_rate": (lambda v: type(v) in (int, float) and 0 <= v <= 1, "a number from 0 to 1"),
    "outage": (lambda v: type(v) is bool, "true or false"),
}


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
        for name, value in changes.items():
            if name not in SETTINGS:
                raise InvalidRequest(name, f"unknown setting (known: {', '.join(SETTINGS)})")
            valid, expected = SETTINGS[name]
            if not valid(value):
                raise InvalidRequest(name, f"must be {expected}")
        clean = {name: float(v) if name == "failure_rate" else v for name, v in changes.items()}
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


# path -> method -> Handler method. Anything under /v1/ goes through the trouble gate and auth.
ROUTES = {
    "/healthz": {"GET": "health"},
    "/_sandbox/config": {"GET": "get_config", "POST": "set_config"},
    "/_sandbox/stats": {"GET": "stats"},
    "/v1/charges": {"GET": "list_charges", "POST": "create_charge"},
    "/v1/refunds": {"POST": "create_refund"},
}

Reply = tuple[int, dict | str, dict]  # status, payload (or stored JSON text), extra headers


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
            try:
                url = urlsplit(self.path)
                # Read the body whatever happens next: on a keep-alive connection, unread
                # bytes would be parsed as the next request.
                raw = self._read_body()
                status, payload, headers = self._handle(method, url.path, parse_qs(url.query), raw)
            except InvalidRequest as error:
                status, payload, headers = 400, {"error": "invalid_request", "field": error.field,
                                                 "message": error.message}, {}
            except Exception:  # a bug or a locked database: answer, so the client is not left hanging
                self.log_error("unexpected error:\n%s", traceback.format_exc())
                status, payload, headers = 500, {"error": "internal"}, {}
            self._send(status, payload, headers)
        finally:
            self.server.track(-1)

    def _handle(self, method: str, path: str, query: dict, raw: bytes | None) -> Reply:
        if path.startswith("/v1/"):
            if refusal := self._gate():
                return refusal
        methods = ROUTES.get(path)
        if methods is None:
            return 404, {"error": "not_found"}, {}
        if method not in methods:
            return 405, {"error": "method_not_allowed"}, {"Allow": ", ".join(methods)}
        return getattr(self, methods[method])(query, raw)

    def _gate(self) -> Reply | None:
        # Trouble first: a provider that is down answers before it looks at who you are,
        # and nothing may change state when the answer is a 503.
        config = self.server.config.snapshot()
        if config["latency_ms"]:
            time.sleep(config["latency_ms"] / 1000)
        if config["outage"] or random.random() < config["failure_rate"]:
            self.server.count_unavailable()
            return 503, {"error": "unavailable"}, {}
        expected = f"Bearer {self.server.api_key}".encode()
        if self.server.api_key and not hmac.compare_digest(self.headers.get("Authorization", "").encode(), expected):
            return 401, {"error": "unauthorized"}, {}
        return None

    # Control endpoints

    def health(self, query, raw) -> Reply:
        return 200, {"status": "ok"}, {}

    def get_config(self, query, raw) -> Reply:
        return 200, self.server.config.snapshot(), {}

    def set_config(self, query, raw) -> Reply:
        return 200, self.server.config.update(_json(raw)), {}

    def stats(self, query, raw) -> Reply:
        return 200, {**self.server.store.counts(), "unavailable": self.server.unavailable}, {}

    # The payment API

    def list_charges(self, query, raw) -> Reply:
        reference = (query.get("reference") or [""])[0]
        if not reference:
            raise InvalidRequest("reference", "required query parameter")
        return 200, {"data": self.server.store.charges(reference)}, {}

    def create_charge(self, query, raw) -> Reply:
        return self._idempotent(raw, parse_charge, self.server.store.create_charge)

    def create_refund(self, query, raw) -> Reply:
        return self._idempotent(raw, parse_refund, self.server.store.create_refund)

    def _idempotent(self, raw: bytes | None, parse, create) -> Reply:
        key = self.headers.get("Idempotency-Key", "")
        if not key.strip() or len(key) > MAX_TEXT:
            raise InvalidRequest("Idempotency-Key", f"required header: a non-empty string of at most {MAX_TEXT} characters")
        body = _json(raw)
        fields = parse(body)  # validation errors are answered, never stored (as Stripe does)
        # "Same request" means same method, path and JSON content, whatever the key order.
        fingerprint = hashlib.sha256(f"{self.command} {self.path} {json.dumps(body, sort_keys=True)}".encode())
        status, text, replayed = self.server.store.idempotent(
            key, fingerprint.hexdigest(), lambda db: (201, create(db, **fields))
        )
        return status, text, {"Idempotent-Replayed": "true"} if replayed else {}

    def _read_body(self) -> bytes | None:
        length = self.headers.get("Content-Length") or "0"
        if not length.isdigit() or int(length) > MAX_BODY:
            self.close_connection = True  # we will not read the body, so the connection is unusable
            raise InvalidRequest("body", f"Content-Length must be a number of at most {MAX_BODY} bytes")
        return self.rfile.read(int(length)) if int(length) else None

    def _send(self, status: int, payload: dict | str, headers: dict) -> None:
        data = (payload if isinstance(payload, str) else json.dumps(payload)).encode()
        self.send_response(status, HTTPStatus(status).phrase)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)


def _json(raw: bytes | None) -> object:
    try:
        return json.loads(raw or b"")
    except ValueError:
        raise InvalidRequest("body", "not valid JSON") from None
