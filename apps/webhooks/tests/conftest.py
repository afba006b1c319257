"""Fixtures of the webhooks context's tests: webhook settings for a receiver on loopback,
and three users (a staff member and two customers)."""

import pytest


@pytest.fixture(autouse=True)
def webhook_settings(settings):
    settings.WAYBILL_WEBHOOK_ALLOW_LOOPBACK = True
    settings.WAYBILL_WEBHOOK_RETRY_BASE_SECONDS = 0.0  # every retry due at once
    settings.WAYBILL_WEBHOOK_MAX_ATTEMPTS = 4
    settings.WAYBILL_WEBHOOK_TIMEOUT_SECONDS = 2.0
    return settings


@pytest.fixture
def staff(django_user_model):
    return django_user_model.objects.create_user("ops", password="x" * 20, is_staff=True)


@pytest.fixture
def alice(django_user_model):
    return django_user_model.objects.create_user("alice", password="x" * 20)


@pytest.fixture
def bob(django_user_model):
    return django_user_model.objects.create_user("bob", password="x" * 20)
