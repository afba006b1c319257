"""The services deployment as the services tests share it (see tests/conftest.py)."""

import pytest

from .support import sign_in


@pytest.fixture(scope="module")
def deployment(services_deployment):
    return services_deployment


@pytest.fixture(scope="module")
def tokens(deployment) -> dict[str, str]:
    return sign_in(deployment)
