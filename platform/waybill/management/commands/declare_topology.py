from django.core.management import BaseCommand

from waybill import bus, contexts


class Command(BaseCommand):
    help = (
        "Declare the bus topology (exchanges, every context's queue and bindings, the dead-letter "
        "queue) with the broker account in WAYBILL_BROKER_URL. Run once per deployment with all "
        "contexts installed, before the services start: a topic exchange drops what no queue is "
        "bound to yet."
    )

    def handle(self, *args, **options):
        with bus.connect() as connection:
            connection.ensure_connection(max_retries=5)
            bus.declare(connection)
        names = ", ".join(bus.queue_name(c.name) for c in contexts.all_contexts())
        self.stdout.write(f"declared {bus.EVENTS.name}, {bus.COMMANDS.name}, {bus.DEAD.name} and {names}")
