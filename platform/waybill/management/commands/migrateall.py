from django.conf import settings
from django.core.management import BaseCommand, call_command


class Command(BaseCommand):
    help = "Migrate every database: default (auth, sessions, admin) and one per bounded context."

    def handle(self, *args, **options):
        for alias in settings.DATABASES:
            self.stdout.write(f"migrating database {alias!r}")
            call_command("migrate", database=alias, interactive=False, verbosity=options["verbosity"] - 1 if options["verbosity"] else 0)
