"""The event consumers inside a Celery worker: a worker bootstep that starts, for each
consumer the worker hosts (``WAYBILL_CONSUMERS``), the same threads the embedded runtime
starts (``runtime.start_consumers``): one per partition queue, consuming in batches on a
broker connection of its own, and the consumer's scheduler (``waybill.scheduler``) with
the relay's backstop. A bulkhead's retries and jobs (payments) stay in the bulkhead's own
worker.

Threads with their own connections, not Kombu consumers on Celery's: Celery's event loop
hands over one message per turn, so a batch could only be cut by guessing, and a slow job
on its timer would stop consuming. Each thread reconnects by itself with backoff, and a
scheduler runs only while its consumer is on the bus (orders' saga clock counts on that).
The bootstep belongs to the worker, not to Celery's consumer: it starts once and stops at
shutdown, not at every reconnect of Celery's own connection.
"""

import logging
import threading
import time

from celery import Celery, bootsteps
from celery.worker.consumer import Consumer as CeleryConsumer
from django.conf import settings

from . import contexts

log = logging.getLogger(__name__)

# How long a stopping worker waits for its threads in all, within the 30 s a supervisor
# (compose's stop_grace_period) gives it before a SIGKILL: what is unfinished then comes
# again from the broker.
STOP_SECONDS = 20.0


def _hosted():
    return [
        context for context in contexts.all_contexts()
        if context.handlers and (not settings.WAYBILL_CONSUMERS or context.name in settings.WAYBILL_CONSUMERS)
    ]


class ContextConsumers(bootsteps.StartStopStep):
    def start(self, worker):
        # Only once Django is set up (the worker's init did it by now).
        from . import metrics
        from .runtime import start_consumers

        metrics.serve_configured()  # in the worker's main process, where the consumer threads count
        hosted = _hosted()
        self._stop = threading.Event()
        self._threads = [thread for context in hosted
                         for thread in start_consumers(context, self._stop, relay_backstop=True)]
        log.info("consumers started: %s", ", ".join(context.name for context in hosted))

    def stop(self, worker):
        if (stop := getattr(self, "_stop", None)) is None:
            return
        # A consumer waiting for its database gives its messages back unacked; a batch or
        # a job in flight finishes first (each is short, or bounded by its timeouts).
        stop.set()
        deadline = time.monotonic() + STOP_SECONDS
        for thread in self._threads:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))

    terminate = stop  # a cold shutdown: the same, the joins are bounded


class Consumer(CeleryConsumer):
    """Celery's consumer (``CELERY_WORKER_CONSUMER``) without native delayed delivery, which
    Celery turns on by itself once a task queue is a quorum queue (ours are: a classic one
    lives on one node of a cluster). It declares ``celery_delayed_*`` exchanges and queues on
    every broker node, which a context's broker user may not (its own task queue alone), so
    every start and every failover logged ACCESS_REFUSED and a CRITICAL; and nothing here
    sends a task with a countdown or an ETA, which is all it is for."""

    class Blueprint(CeleryConsumer.Blueprint):
        default_steps = [step for step in CeleryConsumer.Blueprint.default_steps
                         if not step.endswith(":DelayedDelivery")]


def install(app: Celery) -> None:
    app.steps["worker"].add(ContextConsumers)
