from django.db import migrations, models

from waybill.inbox import dead_letter_text_bodies_to_bytes


class Migration(migrations.Migration):
    """Dead letters keep the exact bytes (a binary body), their size, a bounded preview,
    the content type, encoding and headers; existing rows are carried over."""

    dependencies = [
        ('orders', '0003_saga_payments'),
    ]

    operations = [
        migrations.RenameField(model_name='deadletter', old_name='body', new_name='text_body'),
        migrations.RenameField(model_name='paymentdeadletter', old_name='body', new_name='text_body'),
        migrations.AddField(
            model_name='deadletter',
            name='body_size',
            field=models.PositiveBigIntegerField(default=0),
        ),
        migrations.AddField(
            model_name='deadletter',
            name='content_encoding',
            field=models.CharField(blank=True, max_length=64),
        ),
        migrations.AddField(
            model_name='deadletter',
            name='content_type',
            field=models.CharField(blank=True, max_length=200),
        ),
        migrations.AddField(
            model_name='deadletter',
            name='headers',
            field=models.JSONField(blank=True, default=dict),
        ),
        migrations.AddField(
            model_name='deadletter',
            name='preview',
            field=models.TextField(blank=True, help_text='The start of the body as text, NULs and bad bytes made visible.'),
        ),
        migrations.AddField(
            model_name='paymentdeadletter',
            name='body_size',
            field=models.PositiveBigIntegerField(default=0),
        ),
        migrations.AddField(
            model_name='paymentdeadletter',
            name='content_encoding',
            field=models.CharField(blank=True, max_length=64),
        ),
        migrations.AddField(
            model_name='paymentdeadletter',
            name='content_type',
            field=models.CharField(blank=True, max_length=200),
        ),
        migrations.AddField(
            model_name='paymentdeadletter',
            name='headers',
            field=models.JSONField(blank=True, default=dict),
        ),
        migrations.AddField(
            model_name='paymentdeadletter',
            name='preview',
            field=models.TextField(blank=True, help_text='The start of the body as text, NULs and bad bytes made visible.'),
        ),
        migrations.AddField(
            model_name='deadletter',
            name='body',
            field=models.BinaryField(default=b'', help_text='The message exactly as it arrived on the wire.'),
        ),
        migrations.AddField(
            model_name='paymentdeadletter',
            name='body',
            field=models.BinaryField(default=b'', help_text='The message exactly as it arrived on the wire.'),
        ),
        dead_letter_text_bodies_to_bytes('orders', 'deadletter', 'paymentdeadletter'),
        migrations.RemoveField(model_name='deadletter', name='text_body'),
        migrations.RemoveField(model_name='paymentdeadletter', name='text_body'),
    ]
