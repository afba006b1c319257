"""Inbox and dead letters: the consumer side's tables, concrete per context.

A message's effects and its inbox row commit in one transaction, and the broker is acked
only after that commit, so a redelivered or duplicated message finds its row and has no
second effect (invariant 3). A failed message is kept here with its next try time, so
retries survive restarts; after the last try it becomes a dead letter."""

from django.db import models
from django.utils import timezone


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
    """A message this context will not process, with why, how often it tried, and the
    original message exactly as received."""

    message_id = models.UUIDField(null=True, blank=True, db_index=True)
    message_type = models.CharField(max_length=120, blank=True)
    reason = models.TextField()
    attempts = models.PositiveIntegerField(default=1)
    body = models.TextField(help_text="The message as it arrived on the wire.")
    envelope = models.JSONField(null=True, blank=True)
    routing_key = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    replayed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        abstract = True
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.message_type or '(unreadable)'}: {self.reason[:80]}"
