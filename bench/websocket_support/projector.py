"""Drive customers' order changes through the read side's own projection: for each order,
``apps.readmodels.services.order_step_project`` with the order's snapshot (what the
readmodels worker's handler calls for ``orders.order_placed`` / ``orders.order_confirmed``),
one transaction per order, one after another as a consumer applies them; after each commit
it pushes the document to the customer's group through the Redis channel layer, exactly as
in the worker.

Bypassed on purpose, all upstream of the measured commit: the order service and saga, the
relay, RabbitMQ and the Celery consumer (whose per-message costs cap the rate at a few
dozen changes a second on this machine, and whose stock reservations would broadcast a
catalog change to every socket with each order).

Long-lived, run with the readmodels worker's environment: reads one JSON command per
line on stdin, ``{"status": "PENDING", "version": 1, "orders": [[order_id, customer_id],
...], "rate": per_second_or_null}``, projects them (paced at ``rate`` if given, else as
fast as it can) and answers one JSON line ``{"projected": n, "seconds": s, "publish_ms":
[...]}``, the last being how long each push (``changelog.change_push``, i.e.
``waybill.channelgroups.group_send`` after the commit) took in this process.
"""

from __future__ import annotations

import json
import sys
import time
import uuid
from decimal import Decimal


def main() -> None:
    import django

    django.setup()
    from django.utils import timezone

    from apps.readmodels import services
    from apps.readmodels.live import changelog

    # Time the push itself (group_send after the commit) without changing it.
    publish, publish_ms = changelog.change_push, []

    def timed_publish(**kwargs):
        began = time.perf_counter()
        try:
            return publish(**kwargs)
        finally:
            publish_ms.append((time.perf_counter() - began) * 1000)

    changelog.change_push = timed_publish

    line = {"sku": "MUG-2", "name": "Stoneware mug", "quantity": 1, "unit_price": "12.50"}
    # The timeline step each status is reached by, as the worker's handlers apply them.
    steps = {"PENDING": "placed", "CONFIRMED": "confirmed"}
    print(json.dumps({"ready": True}), flush=True)
    for raw in sys.stdin:
        command = json.loads(raw)
        rate = command.get("rate")
        began = time.perf_counter()
        projected = 0
        for n, (order_id, customer_id) in enumerate(command["orders"]):
            if rate:  # open loop: the n-th change is due at n / rate, however long the others took
                delay = began + n / rate - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
            order_id, version = uuid.UUID(order_id), int(command["version"])
            projected += services.order_step_project(
                # One message per order and version: a repeated command is a repeated message.
                order_id=order_id, message_id=uuid.uuid5(order_id, f"bench-{version}"), occurred_at=timezone.now(),
                step=steps[command["status"]], step_status=services.OK,
                state=services.OrderState(customer_id=customer_id, status=command["status"], reason="",
                                          lines=[line], total=Decimal(line["unit_price"]), currency="EUR",
                                          order_version=version),
            )
        print(json.dumps({"projected": projected, "seconds": time.perf_counter() - began,
                          "publish_ms": publish_ms}), flush=True)
        publish_ms.clear()


if __name__ == "__main__":
    main()
