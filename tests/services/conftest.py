"""The services deployment as the services tests share it (see tests/conftest.py)."""

import pytest

from .support import sign_in


@pytest.fixture(scope="module")
def deployment(services_deployment):
    return services_deployment


@pytest.fixture(scope="module")
def tokens(deployment) -> dict[str, str]:
    return sign_in(deployment)


@pytest.fixture
def on_the_broker(settings, broker_urls) -> str:
    """This test process reads the deployment's broker (as the admin, the topology's owner):
    the event history, for one."""
    settings.WAYBILL_BROKER_URL = broker_urls["admin"]
    settings.WAYBILL_HISTORY = "stream"
    return broker_urls["admin"]
