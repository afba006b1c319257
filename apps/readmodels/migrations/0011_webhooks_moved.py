from django.db import migrations


class Migration(migrations.Migration):
    """Webhooks became a bounded context of its own, with its own database (apps/webhooks).
    Its models leave readmodels' state only: the tables stay, with an existing deployment's
    endpoints, secrets and delivery history, until the webhooks context has copied them into
    its database and dropped them (``manage.py webhooks_move_from_readmodels``, run after
    every migration by ``migrateall`` and the services' setup step). No migration could do
    that: each context's migrations run with its own database and role alone."""

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
