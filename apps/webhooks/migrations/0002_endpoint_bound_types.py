from django.db import migrations, models


def bound_as_before(apps, schema_editor):
    """Until now the webhooks queue was bound to every type it handles: an existing active
    endpoint's types are bound already (the first reconcile unbinds what nobody wants)."""
    endpoints = apps.get_model("webhooks", "WebhookEndpoint").objects.using(schema_editor.connection.alias)
    for endpoint in endpoints.filter(active=True).only("id", "event_types"):
        endpoints.filter(pk=endpoint.pk).update(bound_types=endpoint.event_types)


class Migration(migrations.Migration):

    dependencies = [
        ('webhooks', '0001_initial'),
    ]

    operations = [
        migrations.AddField(
            model_name='webhookendpoint',
            name='bound_types',
            field=models.JSONField(default=list, editable=False),
        ),
        migrations.RunPython(bound_as_before, migrations.RunPython.noop),
    ]
