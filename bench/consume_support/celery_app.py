"""The comparison: a plain Celery task consuming inventory's reservations, the usual way in
Django, on the product's own models and handler (settings: the product's, via the
environment ``launcher.stack.Stack.env`` gives a process hosting inventory).

    celery -A bench.consume_support.celery_app:app worker -Q bench.consume.celery --pool solo

One task per message, ``acks_late=True`` (acked after it returned), prefetch multiplier 1,
database connections reused across tasks (``CELERY_DB_REUSE_MAX``), JSON only, persistent messages in a durable quorum queue. Per message one
``transaction.atomic()`` on inventory's database: look the message id up in inventory's
inbox table and stop if it is there (dedupe, as a Django developer would), write the inbox
row, and call inventory's real handler (``apps.inventory.handlers.on_reserve_stock``), which
writes the reservation, two product updates and three outbox rows (``stock_reserved``, two
``product_updated``); Waybill's consumer writes the same but for the state documents, of
which a batch keeps each product's last.
"""

import os

import django
from celery import Celery
from kombu import Exchange, Queue

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.base")
django.setup()

from django.db import transaction  # noqa: E402
from django.utils import timezone  # noqa: E402

from apps.inventory import handlers  # noqa: E402
from apps.inventory.contracts import ReserveStock  # noqa: E402
from apps.inventory.models import InboxMessage  # noqa: E402
from waybill.messages import Envelope  # noqa: E402

QUEUE = "bench.consume.celery"
DB = "inventory"

app = Celery("bench_consume", broker=os.environ["BENCH_BROKER_URL"])
app.conf.update(
    task_serializer="json",
    accept_content=["json"],
    result_backend=None,
    task_ignore_result=True,
    task_acks_late=True,
    worker_prefetch_multiplier=1,
    broker_transport_options={"confirm_publish": True},
    task_default_delivery_mode="persistent",
    task_queues=[Queue(QUEUE, Exchange(QUEUE, type="direct", durable=True), routing_key=QUEUE, durable=True,
                       queue_arguments={"x-queue-type": "quorum"})],
    task_default_queue=QUEUE,
    task_default_exchange=QUEUE,
    task_default_routing_key=QUEUE,
    worker_hijack_root_logger=False,
    worker_enable_remote_control=False,
    worker_send_task_events=False,
)
# Celery's Django fixup closes every database connection before and after each task
# unless told to reuse them (then it closes them every CELERY_DB_REUSE_MAX tasks): a new
# PostgreSQL connection (and its SCRAM handshake) per message would cost more than the
# message's work, and no one tuning a Celery consumer leaves it so. Reused, as Waybill's
# worker reuses its connections (CONN_MAX_AGE).
# BENCH_CELERY_CLOSE_PER_TASK=1 measures Celery's default instead (an experiment, not the bench).
if os.environ.get("BENCH_CELERY_CLOSE_PER_TASK") != "1":
    app.conf["CELERY_DB_REUSE_MAX"] = 1_000_000


@app.task(name="bench.consume.reserve_stock", acks_late=True)
def reserve_stock(envelope: dict) -> str:
    with transaction.atomic(using=DB):
        inbox = InboxMessage.objects.using(DB)
        if inbox.filter(message_id=envelope["id"]).exists():
            return "duplicate"
        inbox.create(message_id=envelope["id"], message_type=envelope["type"], envelope=envelope,
                     status=InboxMessage.Status.PROCESSED, attempts=1, processed_at=timezone.now(),
                     processed_by=f"celery:{os.getpid()}")
        handlers.on_reserve_stock(Envelope.model_validate(envelope), ReserveStock.model_validate(envelope["payload"]))
    return "applied"
