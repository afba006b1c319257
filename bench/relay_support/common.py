"""What the publishers of the relay scenario share: the message, the fixed-rate driver,
a progress counter the parent can read after a SIGKILL, and result passing."""

from __future__ import annotations

import json
import mmap
import os
import queue
import struct
import sys
import threading
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path


def envelope(i: int = 0) -> dict:
    """One ``orders.order_placed`` envelope as Waybill writes it (JSON form, ~600 bytes).

    Every system publishes this same document, so message sizes match. ``waybill_proc``
    checks it against the product's registered schema before using it."""
    order_id = str(uuid.uuid4())
    return {
        "id": str(uuid.uuid4()),
        "type": "orders.order_placed",
        "schema_version": 1,
        "aggregate_id": order_id,
        "aggregate_version": 1,
        "occurred_at": datetime.now(timezone.utc).isoformat().replace("+00:00", "Z"),
        "correlation_id": str(uuid.uuid4()),
        "causation_id": None,
        "traceparent": None,
        "payload": {
            "order_id": order_id,
            "customer_id": 1 + i % 1000,
            "status": "PENDING",
            "reason": "",
            "lines": [
                {"sku": "KETTLE-1", "name": "Electric kettle", "quantity": 2, "unit_price": "24.90"},
                {"sku": "MUG-3", "name": "Stoneware mug", "quantity": 4, "unit_price": "7.50"},
            ],
            "total": "79.80",
        },
    }


def message_id_of(body: bytes | str) -> str | None:
    """The envelope id inside a message body, whoever published it: the envelope itself
    (Waybill, django-outbox-pattern, Kombu) or a Celery task whose first argument it is."""
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    if isinstance(doc, list):  # Celery protocol 2: [args, kwargs, embed]
        try:
            doc = doc[0][0]
        except (IndexError, KeyError, TypeError):
            return None
    return doc.get("id") if isinstance(doc, dict) else None


class Progress:
    """A counter in a file, mmapped: a publisher bumps it after each confirmed message
    and the parent reads it even after the publisher died of SIGKILL."""

    def __init__(self, path: str | Path):
        path = Path(path)
        if not path.exists() or path.stat().st_size < 8:
            path.write_bytes(b"\0" * 8)
        self._file = open(path, "r+b")
        self._map = mmap.mmap(self._file.fileno(), 8)

    def set(self, value: int) -> None:
        self._map[:8] = struct.pack("<q", value)

    def get(self) -> int:
        return struct.unpack("<q", self._map[:8])[0]


def open_loop(*, rate: float, seconds: float, workers: int,
              send: Callable[[int], tuple[str, float]], out: str | Path | None = None,
              progress: Progress | None = None) -> dict:
    """Offer ``rate`` messages a second for ``seconds`` whatever happens downstream (open
    loop): message i is due at t0 + i/rate and is handed to a pool of ``workers`` threads
    (request threads of an app server). ``send(i)`` returns (message id, commit time).
    Writes ``id intended started committed done`` lines (epoch seconds) to ``out``."""
    total = int(rate * seconds)
    jobs: queue.Queue = queue.Queue()
    records: list[tuple | None] = [None] * total
    done = [0]
    lock = threading.Lock()
    errors: list[str] = []

    def work() -> None:
        while (job := jobs.get()) is not None:
            i, intended = job
            started = time.time()
            try:
                ident, committed = send(i)
            except Exception as exc:  # noqa: BLE001 - counted, reported
                errors.append(repr(exc))
                continue
            records[i] = (ident, intended, started, committed, time.time())
            with lock:
                done[0] += 1
                if progress is not None:
                    progress.set(done[0])

    threads = [threading.Thread(target=work, daemon=True) for _ in range(workers)]
    for thread in threads:
        thread.start()
    t0 = time.time() + 0.05
    for i in range(total):
        intended = t0 + i / rate
        delay = intended - time.time()
        if delay > 0:
            time.sleep(delay)
        jobs.put((i, intended))
    for _ in threads:
        jobs.put(None)
    for thread in threads:
        thread.join()
    elapsed = time.time() - t0
    if out is not None:
        with open(out, "w") as f:
            for record in records:
                if record is not None:
                    f.write("%s %.6f %.6f %.6f %.6f\n" % record)
    return {"offered": total, "completed": done[0], "seconds": elapsed,
            "achieved_per_s": done[0] / elapsed if elapsed > 0 else 0.0,
            "errors": len(errors), "first_error": errors[0] if errors else None}


def emit(result: dict) -> None:
    """The last stdout line of a *_proc run is its JSON result."""
    sys.stdout.write("\nRESULT " + json.dumps(result) + "\n")
    sys.stdout.flush()


def committed_ids(path: str, ids: list[str]) -> dict:
    """Write the message ids a system committed, one per line, for the loss count."""
    with open(path, "w") as f:
        f.write("\n".join(ids) + ("\n" if ids else ""))
    return {"committed": len(ids)}


def env_int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))
