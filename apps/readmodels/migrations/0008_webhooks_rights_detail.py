from django.db import migrations, models


class Migration(migrations.Migration):
    """Webhooks: rights are no longer copied to the endpoint (they are read per delivery);
    an attempt keeps the full failure detail for staff, apart from the class its owner sees."""

    dependencies = [
        ("readmodels", "0006_merge_projections_webhooks"),
    ]

    operations = [
        migrations.RemoveField(model_name="webhookendpoint", name="owner_is_staff"),
        migrations.AddField(model_name="webhookattempt", name="detail", field=models.TextField(blank=True)),
    ]
