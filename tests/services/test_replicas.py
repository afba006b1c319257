"""Replicas behind the gateway: the shared deployment runs readmodels' web process twice
(tests/conftest.py, ``SERVICES_REPLICAS``). The gateway spreads new connections over both;
a replica killed is taken out (passive health check: the request that finds it gone goes on
to the other, so nobody sees an error) and put back once it answers again."""

from __future__ import annotations

import contextlib
import json
import signal

import httpx
import pytest
from websockets.sync.client import connect

from launcher.deployment import METRICS_VARIABLE
from launcher.polling import wait_for
from .support import FLOW_TIMEOUT, client, metric, place, product

pytestmark = pytest.mark.xdist_group("services")

SERVICE = "readmodels-web"
# Sockets opened at a time: the gateway takes the replicas in turn, so each gets some.
SOCKETS = 6


def _live(deployment, name: str) -> float:
    """WebSockets and SSE streams open on replica ``name``, as its own metrics count them."""
    return metric(deployment.stack.process_env(deployment.specs[name])[METRICS_VARIABLE], "waybill_live_connections")


@contextlib.contextmanager
def _sockets(deployment, cookie: str, count: int = SOCKETS):
    url = deployment.base_url.replace("http://", "ws://") + "/ws/v1/orders/"
    with contextlib.ExitStack() as stack:
        yield [stack.enter_context(connect(url, additional_headers={"Cookie": cookie, "Origin": deployment.base_url},
                                           open_timeout=30)) for _ in range(count)]


def _pushed_until(socket, order_id: str, status: str) -> None:
    while True:
        change = json.loads(socket.recv(timeout=FLOW_TIMEOUT))
        if change.get("type") == "change" and change["data"].get("id") == order_id and change["data"]["status"] == status:
            return


def test_the_gateway_spreads_sockets_over_the_replicas_takes_a_dead_one_out_and_puts_it_back(deployment, tokens):
    first, second = deployment.replica_names(SERVICE)
    cookie = deployment.session_cookie("alice")
    with _sockets(deployment, cookie):
        wait_for(lambda: _live(deployment, first) >= 1 and _live(deployment, second) >= 1, FLOW_TIMEOUT,
                 "both replicas to hold some of the sockets")

    deployment.kill(second, signal.SIGKILL)
    try:
        # Every request and socket meanwhile reaches the replica that is left, not an error.
        with client(deployment, tokens, "alice") as alice:
            statuses = [alice.get("/api/v1/read/orders/").status_code for _ in range(SOCKETS * 2)]
        assert statuses == [200] * len(statuses)
        # ...because the gateway took the dead one out, not only because it tried the next.
        second_port = deployment.port_of[second]
        wait_for(lambda: any("upstream server temporarily disabled" in line and f":{second_port}" in line
                             for line in (deployment.gateway.workdir / "error.log").read_text().splitlines()),
                 FLOW_TIMEOUT, f"the gateway to take {second} out")
        sku = product(deployment, tokens, on_hand=10)
        with _sockets(deployment, cookie) as sockets:
            assert _live(deployment, first) >= SOCKETS
            [order_id] = place(deployment, tokens, sku, 1)
            for socket in sockets:  # the push crosses the channel layer to the replica holding them
                _pushed_until(socket, order_id, "CONFIRMED")
    finally:
        deployment.start_process(second)
        deployment.wait_ready(second)

    # Back in the gateway's rotation once its fail_timeout has passed: new sockets reach it.
    def reaches_the_second() -> bool:
        with _sockets(deployment, cookie, count=2):
            return _live(deployment, second) >= 1

    wait_for(reaches_the_second, FLOW_TIMEOUT, f"the gateway to send sockets to {second} again")


def test_every_web_replica_is_ready_on_a_port_of_its_own(deployment):
    replicas = deployment.replica_names(SERVICE)
    assert replicas == [SERVICE, f"{SERVICE}-2"]
    ports = {deployment.port_of[name] for name in replicas}
    assert len(ports) == 2
    for name in replicas:
        assert httpx.get(f"http://127.0.0.1:{deployment.port_of[name]}/readyz", timeout=10).status_code == 200
    conf = (deployment.gateway.workdir / "nginx.conf").read_text()
    assert all(f"127.0.0.1:{port} max_fails=2" in conf for port in ports)
