import logging

import uvicorn
from django.conf import settings
from django.core.management import BaseCommand

from waybill.runtime import Runtime

log = logging.getLogger(__name__)


class Command(BaseCommand):
    help = (
        "Run Waybill in one process: the ASGI server plus the relay and consumers of every "
        "context in WAYBILL_CONTEXTS. Stops cleanly on Ctrl-C."
    )

    def add_arguments(self, parser):
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=settings.WAYBILL_PORT)

    def handle(self, *args, host, port, **options):
        runtime = Runtime(settings.WAYBILL_CONTEXTS)
        runtime.start()
        server = uvicorn.Server(
            uvicorn.Config("config.asgi:application", host=host, port=port, lifespan="off",
                           log_level="info", access_log=False)
        )
        self.stdout.write(self.style.SUCCESS(f"Waybill is running on http://{host}:{port}/  (Ctrl-C stops it)"))
        if settings.WAYBILL_DEMO_ACCOUNTS:
            self.stdout.write(
                f"Demo accounts: alice, bob (customers), admin (staff) - password "
                f"{settings.WAYBILL_DEMO_PASSWORD!r} (from WAYBILL_DEMO_PASSWORD)"
            )
        try:
            server.run()  # returns on SIGINT/SIGTERM, after in-flight requests finish
        except KeyboardInterrupt:
            pass  # uvicorn re-raises Ctrl-C once it has shut down; that is our cue too
        finally:
            runtime.stop()
            self.stdout.write("Waybill stopped.")
