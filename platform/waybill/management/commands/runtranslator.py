import signal
import threading

from django.core.management import BaseCommand, CommandError

from waybill import bus, contexts, metrics
from waybill.runtime import start_translators


class Command(BaseCommand):
    help = (
        "Services mode: translate for the consumers of WAYBILL_CONTEXTS that WAYBILL_LAGGING lists "
        "(waybill.translator). Stops cleanly on SIGINT or SIGTERM."
    )

    def handle(self, *args, **options):
        lagging = [context for context in contexts.all_contexts() if context.name in bus.lagging()]
        if not lagging:
            raise CommandError("none of this process's consumers is listed in WAYBILL_LAGGING: nothing to translate")
        stopping = threading.Event()
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda *_: stopping.set())
        metrics.serve_configured()
        threads = [thread for context in lagging for thread in start_translators(context, stopping)]
        self.stdout.write(f"translating for {', '.join(context.name for context in lagging)}")
        stopping.wait()
        for thread in threads:
            thread.join(timeout=20)
        self.stdout.write("translator stopped")
