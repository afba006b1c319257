"""(a) The usual Django way: a Celery app whose task is sent with ``delay()`` from
``transaction.on_commit``. JSON only, publisher confirms, persistent messages, to a
durable quorum queue (bench.celery). Nothing consumes the tasks during the run: the
bench counts them in the queue."""

import os

from celery import Celery
from kombu import Exchange, Queue

from .broker import CELERY_EXCHANGE, QUORUM, QUEUES

app = Celery("bench_relay", broker=os.environ["BENCH_BROKER_URL"])
app.conf.update(
    task_serializer="json",
    accept_content=["json"],
    result_backend=None,
    task_ignore_result=True,
    broker_transport_options={"confirm_publish": True},
    task_default_delivery_mode="persistent",
    task_queues=[Queue(QUEUES["on_commit_delay"], Exchange(CELERY_EXCHANGE, type="direct", durable=True),
                       routing_key=CELERY_EXCHANGE, durable=True, queue_arguments=QUORUM)],
    task_default_queue=QUEUES["on_commit_delay"],
    task_default_exchange=CELERY_EXCHANGE,
    task_default_routing_key=CELERY_EXCHANGE,
)


@app.task(name="shop.shipment_recorded")
def shipment_recorded(envelope: dict) -> None:
    """Would tell the rest of the world; never runs during the bench."""
