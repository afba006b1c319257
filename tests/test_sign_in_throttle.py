"""The browser sign-in form shares the token endpoint's per-address budget (scope "auth")."""

import pytest
from django.core.cache import cache
from rest_framework.throttling import ScopedRateThrottle

pytestmark = pytest.mark.django_db(databases=["default"])


@pytest.fixture
def three_a_minute(monkeypatch):
    # DRF reads the rates once, at import; the test sets its own.
    monkeypatch.setattr(ScopedRateThrottle, "THROTTLE_RATES", {"auth": "3/minute"})
    cache.clear()
    yield
    cache.clear()


def test_guessing_passwords_in_the_form_is_throttled_with_retry_after(client, django_user_model, three_a_minute):
    django_user_model.objects.create_user("carol", password="right-horse-battery")
    for _ in range(3):
        response = client.post("/accounts/login/", {"username": "carol", "password": "wrong"})
        assert response.status_code == 200  # the form again, with its error
    response = client.post("/accounts/login/", {"username": "carol", "password": "right-horse-battery"})
    assert response.status_code == 429
    assert int(response["Retry-After"]) > 0
    assert b"Too many sign-in attempts" in response.content


def test_the_form_and_the_token_endpoint_share_one_budget(client, django_user_model, three_a_minute):
    django_user_model.objects.create_user("dave", password="right-horse-battery")
    for _ in range(3):
        assert client.post("/api/v1/auth/token/", {"username": "dave", "password": "wrong"}).status_code == 400
    assert client.post("/accounts/login/", {"username": "dave", "password": "right-horse-battery"}).status_code == 429


def test_signing_in_still_works_within_the_budget(client, django_user_model, three_a_minute):
    django_user_model.objects.create_user("erin", password="right-horse-battery")
    response = client.post("/accounts/login/", {"username": "erin", "password": "right-horse-battery"})
    assert response.status_code == 302
