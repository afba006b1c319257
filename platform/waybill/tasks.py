"""Periodic kernel work driven by Celery beat in services mode, run by the context's
worker from its own task queue (``waybill.tasks.<context>``). Inbox retries and saga
deadlines are swept by the consumer step itself (``worker``), where the consumer runs."""

from celery import shared_task

from . import contexts
from .relay import Relay


@shared_task(name="waybill.relay_sweep", ignore_result=True)
def relay_sweep(context_name: str) -> int:
    """The relay's fallback: publish whatever a missed wake-up left behind. Safe beside the
    relay process: rows are claimed with SKIP LOCKED."""
    relay = Relay(contexts.get(context_name))
    try:
        return relay.drain()
    finally:
        relay.close()
