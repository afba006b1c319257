from django.db import migrations

from waybill.models import dead_letter_bytes_operations


class Migration(migrations.Migration):
    """Dead letters keep the exact bytes (a binary body), their size, a bounded preview,
    the content type, encoding and headers; existing rows are carried over."""

    dependencies = [
        ('readmodels', '0009_process_gauge'),
    ]

    operations = dead_letter_bytes_operations('readmodels', 'deadletter', 'webhookdeadletter')
