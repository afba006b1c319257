"""Periodic kernel work, driven by Celery beat in services mode and run by the hosting
context's worker on its own task queue (``waybill.tasks.<context>``)."""

from celery import shared_task

from . import contexts
from .consumer import ContextConsumer
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


@shared_task(name="waybill.context_sweep", ignore_result=True)
def context_sweep(context_name: str) -> None:
    """Due inbox retries and periodic work (overdue saga steps) of every consumer that
    lives in the context's database."""
    for registration in contexts.hosted_by(context_name):
        ContextConsumer(registration).sweep()


def task_queue_name(context_name: str) -> str:
    return f"waybill.tasks.{context_name}"
