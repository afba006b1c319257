"""The one Celery app. Each context's worker consumes its own task queue
(``waybill.tasks.<context>``) and, through a worker bootstep (``waybill.worker``), its
event queue, on consumer threads of its own: a slow context cannot starve another's
workers (bulkheads). The same bootstep runs the kernel's scheduler for the consumers the
worker hosts, so no beat process is needed.

    WAYBILL_CONTEXTS=orders celery -A config.celery:app worker -Q waybill.tasks.orders
"""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.dev")

app = Celery("waybill")
app.config_from_object("django.conf:settings", namespace="CELERY")

from waybill import worker  # noqa: E402 - needs the app above

worker.install(app)
