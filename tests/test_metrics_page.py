"""/metrics is for staff and scrapers only (config/metrics.py): no credentials or wrong ones
is a 401 that says how to authenticate, a customer is a 403, and a staff user's API token,
a staff session or the metrics token get the exposition, as prometheus_client negotiates it."""

from __future__ import annotations

import pytest
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from rest_framework.authtoken.models import Token

from tests.support.scrape import Scrape

pytestmark = pytest.mark.django_db(databases="__all__")

METRICS_TOKEN = "scraper-secret-0123456789abcdef"


@pytest.fixture
def staff(django_user_model):
    return django_user_model.objects.create_user("operator", password="x" * 20, is_staff=True)


@pytest.fixture
def customer(django_user_model):
    return django_user_model.objects.create_user("alice", password="x" * 20)


def token_of(user) -> str:
    return f"Token {Token.objects.get_or_create(user=user)[0].key}"


def test_anonymous_is_told_to_authenticate(client):
    response = client.get("/metrics")
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == 'Token realm="waybill"'
    assert b"waybill_" not in response.content


def test_a_customer_is_refused_by_token_and_by_session(client, customer):
    assert client.get("/metrics", HTTP_AUTHORIZATION=token_of(customer)).status_code == 403
    client.force_login(customer)
    assert client.get("/metrics").status_code == 403


def test_a_wrong_api_token_is_a_401(client):
    response = client.get("/metrics", HTTP_AUTHORIZATION="Token not-a-key")
    assert response.status_code == 401 and "WWW-Authenticate" in response


def test_staff_by_token_gets_the_exposition(client, staff):
    response = client.get("/metrics", HTTP_AUTHORIZATION=token_of(staff))
    assert response.status_code == 200
    assert response["Content-Type"] == CONTENT_TYPE_PLAIN_0_0_4
    scrape = Scrape(response.content.decode())
    for name in ("waybill_messages_consumed", "waybill_handler_seconds", "waybill_outbox_backlog",
                 "waybill_dead_letters", "waybill_sagas", "waybill_payment_breaker_state", "waybill_live_connections"):
        assert name in scrape.families, name


def test_staff_by_session_gets_it_and_openmetrics_when_asked(client, staff):
    client.force_login(staff)
    response = client.get("/metrics", HTTP_ACCEPT="application/openmetrics-text; version=1.0.0")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/openmetrics-text; version=1.0.0")
    assert response.content.endswith(b"# EOF\n")


def test_the_metrics_token_lets_a_scraper_in_and_nothing_else_does(client, settings):
    assert client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {METRICS_TOKEN}").status_code == 401  # none set
    settings.WAYBILL_METRICS_TOKEN = METRICS_TOKEN
    assert client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {METRICS_TOKEN}").status_code == 200
    wrong = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {METRICS_TOKEN[:-1]}")
    assert wrong.status_code == 401
    assert wrong["WWW-Authenticate"] == 'Token realm="waybill", Bearer realm="waybill metrics"'


def test_it_only_reads(client, staff):
    assert client.post("/metrics", HTTP_AUTHORIZATION=token_of(staff)).status_code == 405
