from pathlib import Path

from django.core.management import BaseCommand, CommandError

from waybill import contractlock


class Command(BaseCommand):
    help = (
        f"Write {contractlock.LOCK_FILE}: every registered message's JSON Schema per version. Refuses a "
        "change that breaks a published version (a removed or retyped field, a new required field, a "
        "narrowed enum, a version gone): publish it as a new version, with its upcaster, instead. "
        "With --check, writes nothing and fails when the lock is not what the registry says."
    )

    def add_arguments(self, parser):
        parser.add_argument("--path", default=contractlock.LOCK_FILE, help="the lock file (default: %(default)s)")
        parser.add_argument("--check", action="store_true", help="only compare; exit 1 on any difference")

    def handle(self, *args, path, check, **options):
        lock = Path(path)
        current = contractlock.locked_schemas()
        found = contractlock.changes(contractlock.read_lock(lock), current)
        for change in found:
            self.stdout.write(f"{'BREAKING ' if change.breaking else ''}{change}")
        if breaking := [change for change in found if change.breaking]:
            raise CommandError(f"{len(breaking)} breaking change(s) to published versions; the lock is unchanged")
        if check:
            if found:
                raise CommandError(f"{lock} is out of date: run `make contracts-lock`")
            return
        lock.write_text(contractlock.lock_text(current))
        self.stdout.write(f"wrote {lock} ({sum(len(v) for v in current.values())} message versions)")
