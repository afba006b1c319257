"""The one Celery app. Each context's worker consumes its own task queue
(``waybill.tasks.<context>``) and, through a consumer bootstep, its event queue: a slow
context cannot starve another's workers (bulkheads).

    WAYBILL_CONTEXTS=orders celery -A config.celery:app worker -Q waybill.tasks.orders
    WAYBILL_CONTEXTS=orders celery -A config.celery:app beat
"""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.dev")

app = Celery("waybill")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks(["waybill"])

from waybill import worker  # noqa: E402 - needs the app above

worker.install(app)
