"""The kernel's abstract models, concrete per context in its own database: the outbox, the
inbox and the dead letters (and the migration steps written once for them). Contexts
subclass them in their ``models`` (``waybill.models`` is part of the kernel's public face,
see ``waybill.api``).

The outbox: a message is a row written in the same transaction as the state change it
describes (``outbox.outbox_record``), so both commit or neither does (invariant 1); the
relay publishes committed rows.

The inbox: a message's effects and its inbox row commit in one transaction, and the broker is acked
only after that commit, so a redelivered or duplicated message finds its row and has no
second effect (invariant 3). A failed message is kept here with its next try time, so
retries survive restarts; after the last try it becomes a dead letter."""

from django.db import models
from django.db.models import Q
from django.utils import timezone


class OutboxMessageBase(models.Model):
    """A message waiting for, or done with, the relay. Concrete per context, in its database.

    ``id`` gives commit order within an aggregate as long as whoever writes an aggregate's
    messages holds that aggregate's row lock (the services and the saga do), so a later
    change of it always gets a larger id."""

    id = models.BigAutoField(primary_key=True)
    message_id = models.UUIDField(unique=True, editable=False)
    message_type = models.CharField(max_length=120)
    kind = models.CharField(max_length=16)
    aggregate_id = models.CharField(max_length=64)
    aggregate_version = models.PositiveBigIntegerField()
    envelope = models.JSONField()
    created_at = models.DateTimeField(default=timezone.now)
    sent_at = models.DateTimeField(null=True, blank=True)
    # When the relay first published it, and never changed after (publishing it again resets
    # ``sent_at`` only): the order of the event history embedded (``history.OutboxArchive``),
    # which nothing rewrites.
    first_sent_at = models.DateTimeField(null=True, blank=True)
    publish_attempts = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True)
    # An operator skipped it (``operations.outbox_skip``): never published, so the rows of its
    # aggregate behind it may go. ``sent_at`` is set too, so nothing waits for it; with no
    # ``first_sent_at`` it is in no event history.
    skipped_at = models.DateTimeField(null=True, blank=True)
    skip_reason = models.TextField(blank=True)

    class Meta:
        abstract = True
        ordering = ["id"]
        indexes = [
            # The relay's work list: pending rows in commit order.
            models.Index(fields=["sent_at", "id"], name="%(app_label)s_outbox_pending"),
            models.Index(fields=["aggregate_id", "id"], name="%(app_label)s_outbox_aggregate"),
            models.Index(fields=["first_sent_at", "id"], name="%(app_label)s_outbox_archive"),
            # The aggregates the relay holds back (a row of theirs failed to publish): usually
            # none, so asking whether a pending row's aggregate is among them is a lookup in
            # a small index, not a scan of the backlog for every batch. (After a broker outage
            # the rows of the windows in flight are in it until they are published again.)
            models.Index(fields=["aggregate_id"], condition=Q(sent_at__isnull=True, publish_attempts__gt=0),
                         name="%(app_label)s_outbox_failing"),
        ]

    def __str__(self) -> str:
        return f"{self.message_type} {self.aggregate_id} v{self.aggregate_version}"


class InboxMessageBase(models.Model):
    class Status(models.TextChoices):
        PROCESSED = "processed"
        RETRYING = "retrying"
        DEAD = "dead"

    message_id = models.UUIDField(unique=True, editable=False)
    message_type = models.CharField(max_length=120)
    status = models.CharField(max_length=16, choices=Status.choices)
    attempts = models.PositiveIntegerField(default=0)
    envelope = models.JSONField()
    received_at = models.DateTimeField(default=timezone.now)
    processed_at = models.DateTimeField(null=True, blank=True)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    # host:pid of the process that applied it: shows competing workers sharing the load.
    processed_by = models.CharField(max_length=200, blank=True)

    class Meta:
        abstract = True
        ordering = ["-received_at"]
        indexes = [
            models.Index(fields=["status", "next_attempt_at"], name="%(app_label)s_%(class)s_due"),
        ]

    def __str__(self) -> str:
        return f"{self.message_type} {self.message_id} ({self.status})"


class DeadLetterBase(models.Model):
    """A message this context will not process, with why and how often it tried.

    ``body`` is the message exactly as it arrived, byte for byte, whatever it holds (NULs,
    invalid UTF-8, a pickle): a binary column, so storing it never fails on its content.
    People read ``preview`` instead: storable text of bounded size (see
    ``waybill.wire.preview``); the admin offers the bytes as a download. ``envelope`` is
    the message as a JSON object, when it decoded as one within the limits; replay needs it."""

    message_id = models.UUIDField(null=True, blank=True, db_index=True)
    message_type = models.CharField(max_length=120, blank=True)
    reason = models.TextField()
    attempts = models.PositiveIntegerField(default=1)
    body = models.BinaryField(default=b"", help_text="The message exactly as it arrived on the wire.")
    body_size = models.PositiveBigIntegerField(default=0)
    preview = models.TextField(blank=True, help_text="The start of the body as text, NULs and bad bytes made visible.")
    content_type = models.CharField(max_length=200, blank=True)
    content_encoding = models.CharField(max_length=64, blank=True)
    headers = models.JSONField(default=dict, blank=True)
    envelope = models.JSONField(null=True, blank=True)
    routing_key = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    replayed_at = models.DateTimeField(null=True, blank=True)
    # Why, grouped (``waybill.failures``): one cause, one fingerprint, whatever the message.
    reason_kind = models.CharField(max_length=16, blank=True)
    error_type = models.CharField(max_length=200, blank=True)
    fingerprint = models.CharField(max_length=20, blank=True)
    traceback = models.TextField(blank=True)  # the handler's, at its last attempt
    # An operator gave it up for good (``operations.dead_letters_discard``), and why.
    discarded_at = models.DateTimeField(null=True, blank=True)
    discard_reason = models.TextField(blank=True)

    class Meta:
        abstract = True
        ordering = ["-created_at"]
        indexes = [
            # The console's groups: the open dead letters of each cause.
            models.Index(fields=["fingerprint", "created_at"], condition=Q(replayed_at__isnull=True,
                         discarded_at__isnull=True), name="%(app_label)s_%(class)s_open"),
        ]

    def __str__(self) -> str:
        return f"{self.message_type or '(unreadable)'}: {self.reason[:80]}"


class ReplayPositionBase(models.Model):
    """How far a replay of the history has come (``waybill.replay``): written in the same
    transaction as the effects of what it applied, in the database it applies to, so after
    a crash it goes on from exactly there. A rebuild's row is in its green tables."""

    name = models.CharField(max_length=100, primary_key=True)
    position = models.JSONField(null=True, blank=True)  # the history's, after the last batch applied
    applied = models.PositiveBigIntegerField(default=0)
    refused = models.PositiveBigIntegerField(default=0)  # its handler raised: kept as dead in the inbox
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        abstract = True

    def __str__(self) -> str:
        return f"{self.name}: {self.applied} applied"


class RebuildBase(models.Model):
    """One blue/green rebuild of a context's projections (``waybill.rebuild``), in the live
    database: what the operator asked for and how far it is, for the admin and the terminal."""

    class Status(models.TextChoices):
        REPLAYING = "replaying"
        SWITCHING = "switching"
        SWITCHED = "switched"
        FAILED = "failed"

    projections = models.JSONField(default=list)  # the names rebuilt
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.REPLAYING)
    started_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)
    done = models.PositiveBigIntegerField(default=0)  # history messages read so far
    total = models.PositiveBigIntegerField(null=True, blank=True)  # about how many there are
    events_per_s = models.FloatField(null=True, blank=True)
    switched_at = models.DateTimeField(null=True, blank=True)
    # Where the tables it replaced are kept until dropped (a schema, a file); "" once dropped.
    replaced = models.CharField(max_length=500, blank=True)
    error = models.TextField(blank=True)
    running_on = models.CharField(max_length=200, blank=True)  # host:pid of the process rebuilding it

    class Meta:
        abstract = True
        ordering = ["-started_at"]

    def __str__(self) -> str:
        return f"rebuild {self.pk} of {', '.join(self.projections)}: {self.status}"

    @property
    def eta_seconds(self) -> float | None:
        if not self.total or not self.events_per_s or self.status != self.Status.REPLAYING:
            return None
        return max(self.total - self.done, 0) / self.events_per_s


def first_sent_operations(app_label: str, model_name: str = "outboxmessage") -> list:
    """The step of each context's migration that gave sent rows their ``first_sent_at`` (the
    send time they had), written once for all of them, and frozen."""
    from django.db import migrations

    def forwards(apps, schema_editor):
        rows = apps.get_model(app_label, model_name).objects.using(schema_editor.connection.alias)
        rows.filter(sent_at__isnull=False, first_sent_at__isnull=True).update(first_sent_at=models.F("sent_at"))

    return [migrations.RunPython(forwards, migrations.RunPython.noop)]


def dead_letter_causes_operations(app_label: str, *model_names: str) -> list:
    """The step of each context's migration that gave existing dead letters their kind,
    exception type and fingerprint, read from the reason they were stored with (written
    once for all of them; ``waybill.failures`` reads reasons as the consumer words them)."""
    from django.db import migrations

    from .failures import Failure

    def forwards(apps, schema_editor):
        for model_name in model_names:
            rows = apps.get_model(app_label, model_name).objects.using(schema_editor.connection.alias)
            for pk, reason, message_type in rows.values_list("pk", "reason", "message_type").iterator():
                failure = Failure.of(reason)
                rows.filter(pk=pk).update(reason_kind=failure.kind, error_type=failure.error_type[:200],
                                          fingerprint=failure.fingerprint(message_type))

    return [migrations.RunPython(forwards, migrations.RunPython.noop)]


def dead_letter_bytes_operations(app_label: str, *model_names: str) -> list:
    """The operations of each context's migration that made dead-letter bodies binary,
    written once for all of them, and frozen: later changes of ``DeadLetterBase`` get
    migrations of their own.

    The old text ``body`` becomes the bytes and preview of each row, so every existing
    dead letter stays readable. Rows written before were decoded with replacement
    characters, so their bytes are that text in UTF-8: the closest to the original that is
    left. Backwards, NULs become replacement characters, since a text column refuses them."""
    from django.db import migrations

    from .wire import preview

    def new_fields() -> dict[str, models.Field]:
        return {
            "body": models.BinaryField(default=b"", help_text="The message exactly as it arrived on the wire."),
            "body_size": models.PositiveBigIntegerField(default=0),
            "preview": models.TextField(
                blank=True, help_text="The start of the body as text, NULs and bad bytes made visible."),
            "content_type": models.CharField(max_length=200, blank=True),
            "content_encoding": models.CharField(max_length=64, blank=True),
            "headers": models.JSONField(default=dict, blank=True),
        }

    def forwards(apps, schema_editor):
        for model_name in model_names:
            rows = apps.get_model(app_label, model_name).objects.using(schema_editor.connection.alias)
            for pk, text in rows.values_list("pk", "text_body").iterator():
                data = text.encode("utf-8", errors="surrogatepass")
                rows.filter(pk=pk).update(body=data, body_size=len(data), preview=preview(data, 4096))

    def backwards(apps, schema_editor):
        for model_name in model_names:
            rows = apps.get_model(app_label, model_name).objects.using(schema_editor.connection.alias)
            for pk, data in rows.values_list("pk", "body").iterator():
                text = bytes(data).decode("utf-8", errors="replace").replace("\x00", "\ufffd")
                rows.filter(pk=pk).update(text_body=text)

    return [
        *(migrations.RenameField(model_name, "body", "text_body") for model_name in model_names),
        *(migrations.AddField(model_name, name, field)
          for model_name in model_names for name, field in new_fields().items()),
        migrations.RunPython(forwards, backwards),
        *(migrations.RemoveField(model_name, "text_body") for model_name in model_names),
    ]


class Console(models.Model):
    """The operations console (``waybill.console_admin``) has no table: this model carries its
    rights, in the identity store beside the others. Looking and acting are separate, so an
    operators group may look while acting (redrive, discard, republish, skip, compensate)
    takes more; the groups are made at migrate time (``waybill.apps``)."""

    class Meta:
        managed = False
        default_permissions = ()
        permissions = [
            ("view_console", "Can look at the operations console"),
            ("operate_console", "Can act from the operations console (redrive, discard, republish, skip)"),
        ]
        verbose_name = "operations console"
        verbose_name_plural = "operations console"
