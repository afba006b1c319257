"""The bus speaks JSON only and acknowledges late, in Kombu and in Celery alike."""

from django.conf import settings

from config.celery import app


def test_celery_accepts_and_sends_json_only():
    assert app.conf.accept_content == ["json"]
    assert app.conf.task_serializer == "json"
    assert app.conf.result_serializer == "json"


def test_celery_acks_after_the_work_and_requeues_on_a_lost_worker():
    assert app.conf.task_acks_late is True
    assert app.conf.task_reject_on_worker_lost is True
    assert app.conf.worker_prefetch_multiplier == 1


def test_each_context_has_its_own_task_queue_and_exchange():
    queues = {q.name: q.exchange.name for q in app.conf.task_queues}
    assert queues == {f"waybill.tasks.{c}": f"waybill.tasks.{c}" for c in settings.WAYBILL_CONTEXTS}


def test_the_relay_publishes_with_confirms():
    assert settings.WAYBILL_BROKER_TRANSPORT_OPTIONS["confirm_publish"] is True
    assert app.conf.broker_transport_options["confirm_publish"] is True
