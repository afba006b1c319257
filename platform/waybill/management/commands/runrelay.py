import signal
import threading

from django.conf import settings
from django.core.management import BaseCommand

from waybill import contexts, metrics
from waybill.runtime import Runtime


class Command(BaseCommand):
    help = (
        "Services mode: run the outbox relays of the contexts in WAYBILL_CONTEXTS (their "
        "consumers run in the Celery worker). Stops cleanly on SIGINT or SIGTERM."
    )

    def handle(self, *args, **options):
        stopping = threading.Event()
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda *_: stopping.set())
        metrics.serve_configured()
        runtime = Runtime(contexts.all_contexts(), consumers=False)
        runtime.start()
        self.stdout.write(f"relay running for {', '.join(settings.WAYBILL_CONTEXTS)}")
        stopping.wait()
        runtime.stop()
        self.stdout.write("relay stopped")
