from django.conf import settings
from django.core.management import BaseCommand, call_command


class Command(BaseCommand):
    help = ("Migrate every database: default (auth, sessions, admin) and one per bounded context; then run "
            "the hosted contexts' after-migrate commands (their manifests' ``after_migrate``).")

    def handle(self, *args, **options):
        verbosity = options["verbosity"] - 1 if options["verbosity"] else 0
        for alias in settings.DATABASES:
            self.stdout.write(f"migrating database {alias!r}")
            call_command("migrate", database=alias, interactive=False, verbosity=verbosity)
        for name in settings.WAYBILL_CONTEXTS:
            for command in settings.WAYBILL_MANIFESTS[name].after_migrate:
                self.stdout.write(f"{name}: {command}")
                call_command(command, verbosity=verbosity)
