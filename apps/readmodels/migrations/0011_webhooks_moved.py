from django.db import migrations


class Migration(migrations.Migration):
    """Webhooks became a bounded context of its own, with its own database (apps/webhooks).
    Its models leave readmodels' state only: the tables stay, with an existing deployment's
    endpoints, secrets and delivery history, for the webhooks context to move into its own
    database. No migration could do that: each context's migrations run with its own
    database and role alone."""

    dependencies = [
        ("readmodels", "0010_dead_letter_bytes"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.DeleteModel(name="WebhookAttempt"),
                migrations.DeleteModel(name="WebhookDelivery"),
                migrations.DeleteModel(name="WebhookEndpoint"),
                migrations.DeleteModel(name="WebhookInbox"),
                migrations.DeleteModel(name="WebhookDeadLetter"),
            ],
            database_operations=[],
        ),
    ]
