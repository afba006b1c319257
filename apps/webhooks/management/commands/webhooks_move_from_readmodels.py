"""Move an existing deployment's webhooks out of the readmodels database, where they were
kept while webhooks was part of readmodels, into the webhooks database: endpoints (with
their secrets), deliveries, attempts, and the consumer's inbox and dead letters. Then drop
the old tables.

It must run where both databases are configured (embedded: always; services mode: the
setup step), after both are migrated: ``migrateall`` and the setup step run it, as the
webhooks manifest's ``after_migrate``. No migration can do this, since each context's
migrations run with its own database and role alone; readmodels' migration
0011_webhooks_moved only took the models out of its state and left the tables.

Safe to run again, and after a crash at any point: rows are copied in batches by their
identity (the primary key; the inbox's message id), skipping those already there; the old
tables are dropped only once every one of their rows is found in the new ones, equal in
what never changes. A row of the same identity that differs stops the move, dropping
nothing. Once the old tables are gone, there is nothing to do.

This is the one place a context reads another's tables, once: readmodels' historical
models (its migration state at 0010, the last that had them) describe the old tables."""

from __future__ import annotations

from dataclasses import dataclass

from django.contrib.auth.models import Permission
from django.core.management import BaseCommand, CommandError
from django.core.management.color import no_style
from django.db import connections, models, transaction
from django.db.migrations.loader import MigrationLoader

from ...models import DeadLetter, InboxMessage, WebhookAttempt, WebhookDelivery, WebhookEndpoint
from ...services import DB

OLD_DB = OLD_APP = "readmodels"
# The last readmodels migration whose state has the webhook tables: their frozen schema.
OLD_STATE = (OLD_APP, "0010_dead_letter_bytes")
BATCH = 500


@dataclass(frozen=True)
class Table:
    old: str  # the model in readmodels' old state
    new: type[models.Model]
    key: str  # what identifies a row in both tables
    same: tuple[str, ...]  # what never changes: a row found under its key must agree on these

    @property
    def keeps_pk(self) -> bool:
        return self.key == self.new._meta.pk.attname


# In the order of their foreign keys; dropped the other way round.
TABLES = (
    Table("WebhookEndpoint", WebhookEndpoint, "id", ("owner_id", "url", "secret", "created_at")),
    Table("WebhookDelivery", WebhookDelivery, "id", ("endpoint_id", "message_id", "event_type", "body", "created_at")),
    Table("WebhookAttempt", WebhookAttempt, "id", ("delivery_id", "started_at", "response_ms", "succeeded")),
    # An inbox row is its message: the new inbox numbers its rows itself.
    Table("WebhookInbox", InboxMessage, "message_id", ("message_type", "received_at")),
    Table("WebhookDeadLetter", DeadLetter, "id", ("message_id", "reason", "created_at")),
)


def old_models(loader: MigrationLoader | None = None) -> dict[str, type[models.Model]]:
    """The old tables, as readmodels' historical models describe them (name -> model)."""
    loader = loader or MigrationLoader(connections[OLD_DB])
    state = loader.project_state(OLD_STATE, at_end=True)
    return {table.old: state.apps.get_model(OLD_APP, table.old) for table in TABLES}


class Command(BaseCommand):
    help = ("Move webhooks' endpoints, secrets and delivery history from the readmodels database into the "
            "webhooks database, verify, and drop the old tables. Idempotent.")

    def handle(self, *args, **options):
        if OLD_DB not in connections.databases:
            self.stdout.write(f"the {OLD_DB} database is not configured here: nothing to move")
            return
        if WebhookEndpoint._meta.db_table not in connections[DB].introspection.table_names():
            raise CommandError(f"migrate the {DB} database first")
        present = set(connections[OLD_DB].introspection.table_names())
        loader = MigrationLoader(connections[OLD_DB])
        old = old_models(loader)
        tables = [table for table in TABLES if old[table.old]._meta.db_table in present]
        if not tables:
            if options["verbosity"] > 1:
                self.stdout.write(f"no webhook tables in the {OLD_DB} database: nothing to move")
            return
        if OLD_STATE not in loader.applied_migrations:
            # Their schema is the one of OLD_STATE; and a later readmodels migration may
            # still change them (0010 does, the dead letters).
            raise CommandError(f"migrate the {OLD_DB} database first (to {OLD_STATE[1]} at least)")
        copied = {}
        for table in tables:
            copied[table.old] = self._copy(table, old[table.old])
            self.stdout.write(f"{table.new._meta.verbose_name_plural}: {copied[table.old]} rows in the {DB} database")
        self._grant_permissions(tables)
        with connections[OLD_DB].schema_editor() as editor:  # one transaction (PostgreSQL, SQLite)
            for table in tables:
                # Counted again with writers held off: a process of the old deployment still
                # running (readmodels' webhooks worker) may have written a row behind the copy.
                model = old[table.old]
                if connections[OLD_DB].vendor == "postgresql":
                    editor.execute(f"LOCK TABLE {editor.quote_name(model._meta.db_table)} IN EXCLUSIVE MODE")
                if (now := model._default_manager.using(OLD_DB).count()) != copied[table.old]:
                    raise CommandError(
                        f"{model._meta.db_table} gained {now - copied[table.old]} rows while they were copied: "
                        "stop the old deployment's processes and run this again; nothing dropped")
            for table in reversed(tables):
                editor.delete_model(old[table.old])
        self.stdout.write(f"dropped the old tables from the {OLD_DB} database: "
                          + ", ".join(old[t.old]._meta.db_table for t in reversed(tables)))

    def _grant_permissions(self, tables: list[Table]) -> None:
        """Whoever could see or mend a table under readmodels can under webhooks: Django's
        permissions are named for the app (``readmodels.change_webhookdelivery`` becomes
        ``webhooks.change_webhookdelivery``), and operators who are not superusers would
        otherwise lose the admin's webhook pages. Granting twice is harmless."""
        for table in tables:
            old_name, new_name = table.old.lower(), table.new._meta.model_name
            granted = Permission.objects.filter(content_type__app_label=OLD_APP, content_type__model=old_name)
            for old_permission in granted:
                action = old_permission.codename.removesuffix(f"_{old_name}")
                new_permission = Permission.objects.filter(
                    content_type__app_label=table.new._meta.app_label, content_type__model=new_name,
                    codename=f"{action}_{new_name}").first()
                if new_permission is not None:
                    new_permission.group_set.add(*old_permission.group_set.all())
                    new_permission.user_set.add(*old_permission.user_set.all())

    def _copy(self, table: Table, old_model: type[models.Model]) -> int:
        """Copy every row not yet in the new table, then check that every one is there.
        Returns how many rows the old table has."""
        fields = [f.attname for f in old_model._meta.concrete_fields if table.keeps_pk or not f.primary_key]
        rows = old_model._default_manager.using(OLD_DB).order_by("pk")
        new_rows = table.new._default_manager.using(DB)
        total, last = 0, None
        while True:
            batch = list((rows if last is None else rows.filter(pk__gt=last)).values("pk", *fields)[:BATCH])
            if not batch:
                break
            last = batch[-1]["pk"]
            with transaction.atomic(using=DB):
                new_rows.bulk_create([table.new(**{name: row[name] for name in fields}) for row in batch],
                                     ignore_conflicts=True)
            found = {row[0]: row[1:] for row in new_rows.filter(**{f"{table.key}__in": [r[table.key] for r in batch]})
                     .values_list(table.key, *table.same)}
            for row in batch:
                if found.get(row[table.key]) != tuple(row[name] for name in table.same):
                    raise CommandError(
                        f"{old_model._meta.db_table} {table.key}={row[table.key]} is not in {table.new._meta.db_table} "
                        "as it is in the old table (another row under that identity?): nothing dropped")
            total += len(batch)
        if table.keeps_pk and isinstance(table.new._meta.pk, models.AutoField):
            # PostgreSQL: rows inserted with their ids leave the id sequence behind them.
            with connections[DB].cursor() as cursor:
                for sql in connections[DB].ops.sequence_reset_sql(no_style(), [table.new]):
                    cursor.execute(sql)
        return total
