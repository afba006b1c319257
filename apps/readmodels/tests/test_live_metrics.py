"""``waybill_live_connections`` is the count the live limits are checked against: a
WebSocket opened shows in this process's metrics, and its close takes it away again."""

from __future__ import annotations

import pytest

from tests.support.scrape import Scrape
from waybill import metrics

from .test_live_socket import application, fresh_channel_layer, opened, run, token, users  # noqa: F401

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")


def live_connections() -> float:
    return Scrape(metrics.exposition()[0].decode()).value("waybill_live_connections")


def test_an_open_socket_is_a_live_connection_until_it_closes(application, token):
    async def scenario():
        assert live_connections() == 0
        socket = await opened(application, "/ws/v1/streams/", token["alice"])
        assert live_connections() == 1
        await socket.disconnect()

    run(scenario())
    assert live_connections() == 0
