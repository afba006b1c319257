from pathlib import Path

from django.conf import settings
from django.core.management import BaseCommand, CommandError

from waybill import catalog, contractlock


class Command(BaseCommand):
    help = (
        f"Write {contractlock.LOCK_FILE} (every registered message's JSON Schema per version) and "
        f"{catalog.CATALOG_FILE} (the AsyncAPI catalog), from a process that hosts every context. "
        "Refuses a change that breaks a published version (a removed or retyped field, a new "
        "required field, a narrowed enum, a version gone): publish it as a new version, with its "
        "upcaster, instead. With --check, writes nothing and fails when either file is not what "
        "the registry says."
    )

    def add_arguments(self, parser):
        parser.add_argument("--path", default=contractlock.LOCK_FILE, help="the lock file (default: %(default)s)")
        parser.add_argument("--catalog", dest="catalog_path", default=str(catalog.CATALOG_FILE),
                            help="the AsyncAPI document (default: %(default)s)")
        parser.add_argument("--check", action="store_true", help="only compare; exit 1 on any difference")

    def handle(self, *args, path, catalog_path, check, **options):
        if missing := sorted(set(settings.WAYBILL_MANIFESTS) - set(settings.WAYBILL_CONTEXTS)):
            # Their contracts and consumers would be missing from both files.
            raise CommandError(f"run it where every context is hosted; WAYBILL_CONTEXTS leaves out {missing}")
        lock, document = Path(path), Path(catalog_path)
        current = contractlock.locked_schemas()
        found = contractlock.changes(contractlock.read_lock(lock), current)
        for change in found:
            self.stdout.write(f"{'BREAKING ' if change.breaking else ''}{change}")
        if breaking := [change for change in found if change.breaking]:
            raise CommandError(f"{len(breaking)} breaking change(s) to published versions; the lock is unchanged")
        described = catalog.catalog_text(catalog.catalog())
        # By text: an edit the comparison does not weigh (a description) still updates the lock.
        stale = [str(lock)] if not lock.exists() or lock.read_text() != contractlock.lock_text(current) else []
        if not document.exists() or document.read_text() != described:
            stale.append(str(document))
        if check:
            if stale:
                raise CommandError(f"{' and '.join(stale)} out of date: run `make contracts-lock`")
            return
        lock.write_text(contractlock.lock_text(current))
        document.parent.mkdir(parents=True, exist_ok=True)
        document.write_text(described)
        self.stdout.write(f"wrote {lock} ({sum(len(v) for v in current.values())} message versions) and {document}")
