"""An X-Forwarded-For the client made up never changes the address its sign-in attempts are
counted against: embedded (runplatform, no proxy trusted) and behind the services' gateway
(nginx as launcher.gateway configures it, in front of a web process started with the
services' own command and WAYBILL_TRUSTED_PROXIES=1)."""

from __future__ import annotations

import signal
import subprocess
import sys

import httpx
import pytest
from launcher.deployment import ROUTES, web_command
from launcher.gateway import Gateway
from launcher.servers import free_port

from .harness import DEMO_PASSWORD, READY_TIMEOUT, REPO_DIR, copy_data_dir, subprocess_env, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("embedded")]

GUESSES = 4
STRICT = {"WAYBILL_THROTTLE_AUTH": f"{GUESSES}/minute"}


def _guess_with_made_up_addresses(base_url: str) -> list[int]:
    """Wrong passwords, each from a different "address", then the right one."""
    url = f"{base_url}/api/v1/auth/token/"
    answers = [httpx.post(url, json={"username": "alice", "password": f"guess-{i}"},
                          headers={"X-Forwarded-For": f"203.0.113.{i}"}, timeout=10).status_code
               for i in range(GUESSES)]
    right = httpx.post(url, json={"username": "alice", "password": DEMO_PASSWORD},
                       headers={"X-Forwarded-For": "198.51.100.7"}, timeout=10)
    return [*answers, right.status_code]


def test_embedded_ignores_a_client_x_forwarded_for(platform_factory):
    platform = platform_factory("forwarded", start=False).start(env=STRICT)
    assert _guess_with_made_up_addresses(platform.base_url) == [400] * GUESSES + [429]


@pytest.fixture
def gateway_in_front_of_a_web_process(demo_data_template, tmp_path):
    data_dir = copy_data_dir(demo_data_template, tmp_path / "data")
    port = free_port()
    head, *rest = web_command("127.0.0.1", str(port))
    env = subprocess_env(data_dir, {**STRICT, "WAYBILL_TRUSTED_PROXIES": "1",
                                    "PYTHONPATH": f"{REPO_DIR / 'platform'}:{REPO_DIR}"})
    with (tmp_path / "web.log").open("wb") as log:
        web = subprocess.Popen([sys.executable if head == "python" else head, *rest], cwd=REPO_DIR, env=env,
                               stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    address = f"127.0.0.1:{port}"
    gateway = Gateway(tmp_path / "gateway", port=free_port(),
                      upstreams=dict.fromkeys((*set(ROUTES.values()), "shell"), [address]))
    try:
        wait_for(lambda: httpx.get(f"http://{address}/healthz", timeout=2).status_code == 200, READY_TIMEOUT,
                 "the web process to answer /healthz", ignore=(httpx.TransportError,),
                 describe=lambda: (tmp_path / "web.log").read_text()[-2000:])
        gateway.write_conf()  # nginx as the supervisor runs it (launcher.supervision.gateway_program)
        nginx = subprocess.Popen(gateway.command(), cwd=gateway.workdir, stdin=subprocess.DEVNULL)
        wait_for(lambda: httpx.get(f"{gateway.url}/healthz", timeout=2).status_code == 200, READY_TIMEOUT,
                 "the gateway to answer", ignore=(httpx.TransportError,))
        yield gateway
    finally:
        if "nginx" in locals():
            nginx.send_signal(signal.SIGQUIT)
            nginx.wait(30)
        web.terminate()
        web.wait(30)


def test_the_gateway_overwrites_a_client_x_forwarded_for(gateway_in_front_of_a_web_process):
    assert _guess_with_made_up_addresses(gateway_in_front_of_a_web_process.url) == [400] * GUESSES + [429]
