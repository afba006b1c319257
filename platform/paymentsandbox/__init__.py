"""A payment gateway sandbox: the external, Stripe-like HTTP service Waybill pays through.

It plays the role a payment provider's sandbox plays for a real shop: a separate process,
reached over HTTP only. It belongs to no bounded context and imports nothing from Django
or the project. The server is the standard library alone (``http.server`` with a thread
per connection, ``sqlite3`` for durable state) so it starts in a blink, needs no install
step and stays small enough to read in one sitting.

Run::

    python -m paymentsandbox --host 127.0.0.1 --port 8099 --data-dir var/payments \\
        [--api-key KEY] [--latency-ms 0] [--failure-rate 0.0]

It prints ``payment sandbox listening on http://HOST:PORT`` once it accepts connections
and exits 0 on SIGINT/SIGTERM. The API key comes from ``--api-key`` or the environment
variable ``WAYBILL_PAYMENT_API_KEY``; with neither, no authentication is required.
Charges, refunds and idempotency records live in ``DATA_DIR/payments.sqlite3`` and
survive a restart; the simulated-trouble settings live in memory and start from the
command line. From Python, ``paymentsandbox.process.SandboxProcess`` starts and stops it.

API (JSON in and out; money is a decimal string with two places, currency three
upper-case letters):

``POST /v1/charges`` ``{"amount": "12.50", "currency": "EUR", "reference": "order-42"}``
    Needs an ``Idempotency-Key`` header. 201 with ``{"id": "ch_...", "status":
    "succeeded" | "declined", "amount", "currency", "reference", "decline_code",
    "created_at"}``. Sandbox rule: an amount from 2000.00 to 2999.99 inclusive is
    declined with ``decline_code`` "card_declined"; a decline is a business answer (201),
    not an error. ``amount`` may have zero to two decimals on the way in ("12", "12.5").
``POST /v1/refunds`` ``{"reference": "order-42"}``
    Needs an ``Idempotency-Key``. Refunds every succeeded, not yet refunded charge with
    that reference (a sandbox simplification: no partial refunds). 201 with ``{"id":
    "re_...", "status": "refunded" | "nothing_to_refund", "reference", "amount",
    "currency"}`` (amount "0.00" and currency null when there is nothing to refund).
``GET /v1/charges?reference=...``
    200 ``{"data": [charge, ...]}`` oldest first, each with ``"refunded": true|false``.

Idempotency (both POSTs): the first request with a key is executed and its response
(status and body) stored; a repeat with the same key and the same request (method, path
and JSON body) returns that stored response with ``Idempotent-Replayed: true`` and
changes nothing. The same key with a different request is 409
``{"error": "idempotency_key_reused"}``. Keys are global, not per endpoint. As with
Stripe, only executed requests are stored: a 400 or a simulated 503 is not, so a retry
with the same key after a 503 really runs. Concurrent requests with the same new key are
serialised by an SQLite write transaction (``BEGIN IMMEDIATE``) around "look up key,
execute, store response": the losers wait for the winner's commit and then replay its
response, so they never see a 409 ``request_in_progress``.

Errors: 400 ``{"error": "invalid_request", "field": "...", "message": "..."}`` for a
missing or malformed field (unknown fields included), missing Idempotency-Key (field
"Idempotency-Key") or a body that is not a JSON object (field "body"); 401
``{"error": "unauthorized"}`` when a key is configured and ``Authorization: Bearer <key>``
is missing or wrong; 404/405 for unknown paths/methods; 500 ``{"error": "internal"}`` for
a bug (the traceback goes to the log).

Simulated trouble, for resilience tests, applies to ``/v1/...`` only and happens before
authentication and before any state change, in this order: sleep ``latency_ms``; if
``outage``, 503 ``{"error": "unavailable"}``; else 503 with probability ``failure_rate``.

Control endpoints (no auth: a loopback test tool, never exposed):
``GET /_sandbox/config``; ``POST /_sandbox/config`` with any subset of
``{"latency_ms": int >= 0, "failure_rate": 0..1, "outage": bool}`` -> 200 whole config;
``GET /_sandbox/stats`` -> ``{"charges": {"succeeded", "declined", "total"}, "refunds":
{"refunded", "nothing_to_refund", "total"}, "unavailable": <503s since start>}``;
``GET /healthz`` -> 200 always, outage or not, so a launcher can tell the process is up.
"""
