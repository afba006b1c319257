from django.db import models


class Shipment(models.Model):
    """The state change of (a): one row per message, committed before ``delay()``.
    No migrations: ``migrate --run-syncdb`` creates the table."""

    message_id = models.UUIDField(unique=True)
    payload = models.JSONField()
    created_at = models.DateTimeField(auto_now_add=True)
