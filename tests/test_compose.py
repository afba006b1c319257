"""docker-compose.yml describes the deployment that `make up` runs: the same processes, with
the same commands and variables, because both come from launcher/deployment.py. No Docker
here: the committed files are read and checked, and the pieces that do real work inside
the containers (the PostgreSQL init script, RabbitMQ's definitions, the setup step) run
against this machine's private servers, as the services suite does."""

from __future__ import annotations

import json
import os
import re
import runpy
import shutil
import socket
import subprocess
import sys
from urllib.parse import urlsplit

import pytest
import yaml

from launcher import compose, provision
from launcher.deployment import CONTEXTS, ROUTES, database_variable, processes
from launcher.servers import QUORUM_WAL_MAX_BYTES, PostgresServer, RabbitMQServer, missing_packages
from launcher.stack import REPO

DEPLOYMENT = processes(host="0.0.0.0")
COMPOSE_TEXT = (REPO / "docker-compose.yml").read_text()
SERVICES = yaml.safe_load(COMPOSE_TEXT)["services"]
NGINX_TEXT = (REPO / "deploy" / "nginx" / "nginx.conf").read_text()


def resolve(value: str, **given: str) -> str:
    """Compose's interpolation: ``${NAME:-default}`` and ``${NAME:?error}``, from ``given``."""
    def one(match: re.Match) -> str:
        name, operator, argument = match.groups()
        if name in given:
            return given[name]
        if operator == ":-":
            return argument
        raise KeyError(f"{name} is required: {argument}")
    return re.sub(r"\$\{(\w+)(:-|:\?)([^}]*)\}", one, value)


def service_env(name: str, **given: str) -> dict[str, str]:
    return {k: resolve(v, **given) for k, v in SERVICES[name]["environment"].items()}


# --- (a) the same processes, commands and variables as the launcher ------------------------
@pytest.mark.parametrize("process", DEPLOYMENT, ids=lambda p: p.name)
def test_every_process_is_a_service_with_its_command_and_variables(process):
    service = SERVICES[process.name]
    assert service["image"] == compose.APP_IMAGE
    assert service["command"] == list(process.command)
    environment = service["environment"]
    missing = [name for name in process.variables if not (isinstance(environment.get(name), str) and environment[name])]
    assert not missing, f"{process.name} does not define {missing}"


def test_no_other_app_service_runs_for_long():
    app = {name for name, service in SERVICES.items() if service.get("image") == compose.APP_IMAGE}
    one_shot = {name for name in app if SERVICES[name]["restart"] == "no"}
    assert one_shot == {"setup", "rabbitmq-definitions"}
    assert app - one_shot == {p.name for p in DEPLOYMENT}


def test_every_long_running_service_is_restarted_when_it_exits_as_under_make_up():
    from launcher.supervision import RESTART

    long_running = {name: service for name, service in SERVICES.items() if service.get("restart") != "no"}
    assert {p.name for p in DEPLOYMENT} | {"postgres", "rabbitmq", "redis", "gateway"} == set(long_running)
    assert {service["restart"] for service in long_running.values()} == {RESTART.compose}


WAYBILL_PROCESSES = [p for p in DEPLOYMENT if p.kind != "sandbox"]  # the sandbox is no Waybill process


def test_the_payment_sandbox_needs_nothing_but_its_key():
    service = SERVICES["payment-sandbox"]
    assert "depends_on" not in service
    assert service["environment"]["WAYBILL_PAYMENT_API_KEY"]
    assert service_env("orders-payments-worker", WAYBILL_SECRET_KEY="x")["WAYBILL_PAYMENT_GATEWAY_URL"] == "http://payment-sandbox:8000"


@pytest.mark.parametrize("process", WAYBILL_PROCESSES, ids=lambda p: p.name)
def test_each_process_talks_as_its_own_context(process):
    env = service_env(process.name, WAYBILL_SECRET_KEY="x")
    hosted = CONTEXTS if process.context is None else (process.context,)
    assert env["DJANGO_SETTINGS_MODULE"] == "config.settings.production"
    assert env["WAYBILL_CONTEXTS"] == ",".join(hosted)
    assert SERVICES[process.name]["environment"]["WAYBILL_SECRET_KEY"].startswith("${WAYBILL_SECRET_KEY:?")
    databases = {name for name in env if name.endswith("_DATABASE_URL")}
    assert databases == {database_variable(alias) for alias in ("default", *hosted)}
    for alias in ("default", *hosted):  # each database through its own role
        url = urlsplit(env[database_variable(alias)])
        assert (url.username, url.hostname, url.path) == (f"waybill_{alias}", "postgres", f"/waybill_{alias}")
    broker = urlsplit(env["WAYBILL_BROKER_URL"])
    # The shell runs no consumer: like `make up`, it holds the admin account.
    assert broker.username == (compose.ADMIN_USER if process.context is None else f"waybill_{process.context}")
    assert (broker.hostname, broker.path) == ("rabbitmq", "/waybill")


def test_only_the_shell_holds_the_management_api_as_the_admin():
    """The console's queue figures; a context with the admin's management credentials
    could read and purge every other context's queues."""
    holders = {name for name, service in SERVICES.items()
               if "WAYBILL_BROKER_MANAGEMENT_URL" in service.get("environment", {})}
    assert holders == {"shell-web"}
    url = urlsplit(service_env("shell-web", WAYBILL_SECRET_KEY="x")["WAYBILL_BROKER_MANAGEMENT_URL"])
    admin_password = resolve(compose.broker_password("admin"))
    assert (url.scheme, url.username, url.password, url.hostname, url.port) == (
        "http", compose.ADMIN_USER, admin_password, "rabbitmq", 15672)
    assert SERVICES["rabbitmq"]["image"].endswith("-management")  # the image that has the plugin


def test_app_processes_wait_for_setup_and_healthy_servers():
    for process in WAYBILL_PROCESSES:
        depends = dict(SERVICES[process.name]["depends_on"])
        assert depends.pop("setup") == {"condition": "service_completed_successfully"}
        assert depends == {name: {"condition": "service_healthy"} for name in ("postgres", "rabbitmq", "redis")}
    assert SERVICES["setup"]["command"] == ["python", "-m", "launcher.compose", "setup"]


# --- (b) the committed files are the generated ones -------------------------------------------
def test_committed_files_are_what_launcher_compose_generates():
    regenerate = "regenerate with `PYTHONPATH=platform .venv/bin/python -m launcher.compose`"
    assert COMPOSE_TEXT == compose.compose_yaml(), f"docker-compose.yml was edited by hand: {regenerate}"
    assert NGINX_TEXT == compose.nginx_conf(), f"deploy/nginx/nginx.conf was edited by hand: {regenerate}"
    assert COMPOSE_TEXT.startswith("# Generated by")


def test_no_dollar_sign_escapes_compose_interpolation():
    body = COMPOSE_TEXT.split("\nname:", 1)[1]  # the header's shell example is a comment
    assert not re.findall(r"\$(?![{$])", body)


# --- (c) the gateway routes as launcher.gateway --------------------------------------------------
def test_gateway_routes_every_prefix_to_its_service():
    location = r"location (\S+) \{\s*set \$service ([\w-]+):8000;\s*proxy_pass http://\$service;"
    routes = dict(re.findall(location, NGINX_TEXT))
    expected = {prefix: f"{context}-web" for prefix, context in ROUTES.items()} | {"/": "shell-web"}
    assert routes == expected
    assert set(routes.values()) <= set(SERVICES)
    for header in ("Upgrade $http_upgrade", "Connection $connection_upgrade"):  # WebSockets on /ws/
        assert f"proxy_set_header {header};" in NGINX_TEXT
    gateway = SERVICES["gateway"]
    assert "./deploy/nginx/nginx.conf:/etc/nginx/nginx.conf:ro" in gateway["volumes"]
    assert gateway["ports"] == ["127.0.0.1:${WAYBILL_PORT:-8000}:80"]
    assert set(gateway["depends_on"]) == {p.name for p in DEPLOYMENT if p.is_web}


@pytest.mark.skipif(not (shutil.which("nginx") or os.path.exists("/usr/sbin/nginx")), reason="nginx is not installed")
def test_gateway_config_is_valid_nginx(tmp_path):
    (tmp_path / "nginx.conf").write_text(NGINX_TEXT)
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    result = subprocess.run([nginx, "-t", "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf"),
                             "-g", f"pid {tmp_path}/nginx.pid;"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


# --- (d) health ---------------------------------------------------------------------------------
def test_every_service_has_a_health_check_or_is_one_shot():
    waited_for = {name for service in SERVICES.values() for name, how in service.get("depends_on", {}).items()
                  if how["condition"] == "service_completed_successfully"}
    for name, service in SERVICES.items():
        if service.get("restart") == "no":
            assert name in waited_for, f"nothing waits for the one-shot {name}"
        else:
            assert service["healthcheck"]["test"][0] == "CMD", name


def test_connection_health_check_sees_an_established_connection():
    connected = runpy.run_path(str(REPO / "deploy" / "healthcheck.py"))["connected"]
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        assert not connected(port)
        with socket.create_connection(("127.0.0.1", port)):
            assert connected(port)


# --- What runs inside the containers, on this machine's servers ---------------------------------
def _require_servers() -> None:
    missing = missing_packages(("postgresql", "rabbitmq-server"))
    if missing:
        message = f"missing Debian packages {', '.join(missing)} (bin/ensure-servers installs them)"
        if os.environ.get("WAYBILL_SKIP_SERVICES") == "1":
            pytest.skip(message)
        pytest.fail(message, pytrace=False)


class RabbitMQWithDefinitions(RabbitMQServer):
    """A private node configured by deploy/rabbitmq/rabbitmq.conf, which loads the
    definitions from this folder instead of compose's volume."""

    @property
    def admin_url(self) -> str:  # no default vhost or user once definitions load at boot
        return self.url(self.admin_user, self.admin_password, compose.VHOST)

    def _prepare(self) -> None:
        super()._prepare()
        ours = (REPO / "deploy" / "rabbitmq" / "rabbitmq.conf").read_text()
        with open(self.data_dir / "rabbitmq.conf", "a") as conf:
            conf.write(ours.replace("/etc/rabbitmq/waybill", str(self.data_dir)))


@pytest.fixture(scope="module")
def compose_postgres(tmp_path_factory):
    """A private PostgreSQL set up by compose's init script (not provision_postgres)."""
    _require_servers()
    with PostgresServer(tmp_path_factory.mktemp("postgres"), fast=True) as server:
        subprocess.run(["bash", str(REPO / "deploy" / "postgres" / "init-waybill.sh")], check=True, env={
            **os.environ, **service_env("postgres"), "POSTGRES_USER": "postgres", "PGHOST": "127.0.0.1",
            "PGPORT": str(server.port), "PGPASSWORD": server.superuser_password})
        yield server


@pytest.fixture(scope="module")
def compose_rabbitmq(tmp_path_factory):
    """A private RabbitMQ that loaded compose's definitions at boot (not provision_rabbitmq)."""
    _require_servers()
    server = RabbitMQWithDefinitions(tmp_path_factory.mktemp("rabbitmq"))
    server.data_dir.mkdir(parents=True, exist_ok=True)
    env = service_env("rabbitmq-definitions", WAYBILL_ADMIN_BROKER_PASSWORD=server.admin_password)
    definitions = str(server.data_dir / "definitions.json")
    subprocess.run([sys.executable, "-m", "launcher.compose", "rabbitmq-definitions", definitions], check=True,
                   cwd=REPO, env={**os.environ, **env, "PYTHONPATH": f"{REPO / 'platform'}:{REPO}"})
    with server:
        yield server


def _local(url: str, *servers) -> str:
    """A compose URL, pointed at this machine's server instead of the compose service."""
    for server in servers:
        service = "postgres:5432" if isinstance(server, PostgresServer) else "rabbitmq:5672"
        url = url.replace(f"@{service}/", f"@127.0.0.1:{server.port}/")
    return url


def test_postgres_init_script_gives_each_role_its_own_database_alone(compose_postgres):
    import psycopg

    urls = {alias: resolve(_local(url, compose_postgres)) for alias, url in compose.database_urls().items()}
    for alias, url in urls.items():
        with psycopg.connect(url) as conn:  # the password compose gives the services
            conn.execute("CREATE TABLE owned_here (id int); DROP TABLE owned_here")  # owns the public schema
            assert conn.execute("SELECT current_user, current_database()").fetchone() == (f"waybill_{alias}",) * 2
        for db in ("postgres", "template1", *(f"waybill_{other}" for other in urls if other != alias)):
            with pytest.raises(psycopg.OperationalError, match="permission denied"):
                psycopg.connect(url.rsplit("/", 1)[0] + f"/{db}").close()


def test_rabbitmq_boots_with_the_definitions(compose_rabbitmq):
    from kombu import Connection

    users = compose_rabbitmq.rabbitmqctl("list_users", "--silent")
    assert "guest" not in users  # loading definitions at boot skips the default user
    expected = provision.rabbitmq_definitions(admin_user=compose.ADMIN_USER, passwords=dict.fromkeys(CONTEXTS, ""))
    permissions = compose_rabbitmq.rabbitmqctl("list_permissions", "--silent", "-p", compose.VHOST)
    for grant in expected["permissions"]:
        assert "\t".join((grant["user"], grant["configure"], grant["write"], grant["read"])) in permissions
    for who, url in compose.broker_urls().items():
        if who == "admin":
            continue  # the fixture's own password: proven by the node's ready check
        with Connection(resolve(_local(url, compose_rabbitmq)), connect_timeout=5) as conn:
            conn.connect()


def test_setup_migrates_and_declares_the_topology(compose_postgres, compose_rabbitmq):
    given = {"WAYBILL_SECRET_KEY": "test", "WAYBILL_ADMIN_BROKER_PASSWORD": compose_rabbitmq.admin_password}
    env = {k: _local(v, compose_postgres, compose_rabbitmq) for k, v in service_env("setup", **given).items()}
    env["PYTHONPATH"] = f"{REPO / 'platform'}:{REPO}"
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("WAYBILL_", "DJANGO_"))}
    result = subprocess.run([sys.executable, "-m", "launcher.compose", "setup"], cwd=REPO, env=clean | env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    queues = compose_rabbitmq.rabbitmqctl("list_queues", "--silent", "-p", compose.VHOST, "name")
    assert all(f"waybill.{context}" in queues for context in CONTEXTS)
    definitions = json.loads((compose_rabbitmq.data_dir / "definitions.json").read_text())
    assert [u["name"] for u in definitions["users"]] == [compose.ADMIN_USER, *(f"waybill_{c}" for c in CONTEXTS)]


def test_the_web_processes_frame_limit_is_the_settings_default():
    from django.conf import settings

    from launcher.deployment import WS_MAX_FRAME_BYTES

    assert settings.WAYBILL_WS_MAX_FRAME_BYTES == WS_MAX_FRAME_BYTES
    assert all(str(WS_MAX_FRAME_BYTES) in p.command for p in DEPLOYMENT if p.is_web)


def test_the_gateways_body_limit_is_the_settings_default():
    from django.conf import settings

    from launcher.gateway import MAX_BODY_BYTES

    assert settings.WAYBILL_REQUEST_MAX_BYTES == MAX_BODY_BYTES
    assert f"client_max_body_size {MAX_BODY_BYTES};" in NGINX_TEXT


@pytest.mark.parametrize("process", WAYBILL_PROCESSES, ids=lambda p: p.name)
def test_every_process_serves_its_metrics_on_the_compose_network_alone(process):
    service = SERVICES[process.name]
    host, port = resolve(service["environment"]["WAYBILL_METRICS_ADDR"]).rsplit(":", 1)
    assert (host, service["expose"]) == ("0.0.0.0", [port])
    assert "ports" not in service  # published to no host: the metrics server has no sign-in


def test_compose_rabbitmq_bounds_the_quorum_log_in_memory_as_the_launcher_does():
    conf = (REPO / "deploy" / "rabbitmq" / "rabbitmq.conf").read_text()
    assert f"raft.wal_max_size_bytes = {QUORUM_WAL_MAX_BYTES}" in conf.splitlines()
