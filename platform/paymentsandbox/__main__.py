"""``python -m paymentsandbox``: run the payment gateway sandbox until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading

from .server import SandboxConfig, SandboxServer
from .store import InvalidRequest, Store

API_KEY_ENV = "WAYBILL_PAYMENT_API_KEY"
DRAIN_SECONDS = 5.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m paymentsandbox", description="Stripe-like payment sandbox.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True, help="0 lets the OS pick (the ready line shows it)")
    parser.add_argument("--data-dir", required=True, help="folder for payments.sqlite3 (created if missing)")
    parser.add_argument("--api-key", default=None, help=f"required bearer token; default ${API_KEY_ENV}, else none")
    parser.add_argument("--latency-ms", type=int, default=0)
    parser.add_argument("--failure-rate", type=float, default=0.0)
    args = parser.parse_args(argv)

    try:
        config = SandboxConfig(latency_ms=args.latency_ms, failure_rate=args.failure_rate)
    except InvalidRequest as error:
        parser.error(f"--{error.field.replace('_', '-')}: {error.message}")
    api_key = args.api_key or os.environ.get(API_KEY_ENV) or None
    server = SandboxServer((args.host, args.port), store=Store(args.data_dir), config=config, api_key=api_key)

    # serve_forever() runs in a thread so that the main thread, where Python runs signal
    # handlers, is free to call shutdown() (which blocks until that loop has stopped).
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    # A short poll interval: shutdown() waits up to one interval for the loop to notice.
    loop = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="serve", daemon=True)
    loop.start()
    host, port = server.server_address[:2]
    print(f"payment sandbox listening on http://{host}:{port}", flush=True)
    stop.wait()
    server.shutdown()
    drained = server.drain(DRAIN_SECONDS)
    server.server_close()
    print(f"payment sandbox stopped{'' if drained else ' (requests still running were cut off)'}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
