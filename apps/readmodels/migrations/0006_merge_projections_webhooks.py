from django.db import migrations


class Migration(migrations.Migration):
    """Joins two branches written in parallel: the projections and the webhooks."""

    dependencies = [
        ("readmodels", "0005_projections"),
        ("readmodels", "0005_webhooks"),
    ]

    operations = []
