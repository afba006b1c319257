import asyncio
import logging
import os

import uvicorn
from django.conf import settings
from django.core.management import BaseCommand

from paymentsandbox.process import SandboxProcess
from waybill import channelgroups, contexts
from waybill.runtime import Runtime

log = logging.getLogger(__name__)


def forwarded_headers_options() -> dict:
    """uvicorn's handling of X-Forwarded-For/-Proto, from WAYBILL_TRUSTED_PROXIES as the
    throttle reads it. uvicorn's default trusts them from 127.0.0.1, which is where every
    local client connects from: 25 wrong passwords with 25 made-up addresses were 25 first
    tries. With proxies declared, the server is reachable through them only, and trusts
    them from any peer, as the services' web processes do (launcher/deployment.py)."""
    if settings.WAYBILL_TRUSTED_PROXIES > 0:
        return {"proxy_headers": True, "forwarded_allow_ips": "*"}
    return {"proxy_headers": False}


class Command(BaseCommand):
    help = (
        "Run Waybill in one process: the ASGI server plus the relay and consumers of every "
        "hosted context, and the payment sandbox unless WAYBILL_PAYMENT_GATEWAY_URL names a "
        "provider. Stops cleanly on Ctrl-C."
    )

    def add_arguments(self, parser):
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=settings.WAYBILL_PORT)

    def handle(self, *args, host, port, **options):
        sandbox = None
        if not settings.WAYBILL_PAYMENT_GATEWAY_URL:
            port_setting = os.environ.get("WAYBILL_PAYMENT_SANDBOX_PORT")
            sandbox = SandboxProcess(
                settings.DATA_DIR / "payment-sandbox",
                port=int(port_setting) if port_setting else None,
                api_key=settings.WAYBILL_PAYMENT_API_KEY or None,
            ).start()
            settings.WAYBILL_PAYMENT_GATEWAY_URL = sandbox.url
            self.stdout.write(f"Payment sandbox on {sandbox.url} (declines totals from 2000.00 to 2999.99)")
        runtime = Runtime(contexts.all_contexts())
        runtime.start()
        server = uvicorn.Server(
            uvicorn.Config("config.asgi:application", host=host, port=port, lifespan="off",
                           log_level="info", access_log=False, ws_max_size=settings.WAYBILL_WS_MAX_FRAME_BYTES,
                           **forwarded_headers_options())
        )
        self.stdout.write(self.style.SUCCESS(f"Waybill is running on http://{host}:{port}/  (Ctrl-C stops it)"))
        if settings.WAYBILL_DEMO_ACCOUNTS:
            self.stdout.write(
                f"Demo accounts: alice, bob (customers), admin (staff) - password "
                f"{settings.WAYBILL_DEMO_PASSWORD!r} (from WAYBILL_DEMO_PASSWORD)"
            )
        async def serve():
            # Projections push from the runtime's threads; the in-memory channel layer
            # needs them on this loop (see waybill.channelgroups).
            channelgroups.serve_from(asyncio.get_running_loop())
            await server.serve()

        try:
            asyncio.run(serve())  # returns on SIGINT/SIGTERM, after in-flight requests finish
        except KeyboardInterrupt:
            pass  # uvicorn re-raises Ctrl-C once it has shut down; that is our cue too
        finally:
            runtime.stop()
            if sandbox is not None:
                sandbox.stop()
            self.stdout.write("Waybill stopped.")
