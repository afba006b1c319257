"""`make up`: the services mode on this machine, no Docker needed.

    python -m launcher.up            # start (or resume) and follow the logs; Ctrl-C stops it all
    python -m launcher.up status     # what the supervisor says of every process
    python -m launcher.up down       # stop a running `make up` from another terminal
    python -m launcher.up reset      # delete its data (only while it is stopped)

Starts PostgreSQL, RabbitMQ and Redis from the installed binaries in a private folder
(``var/services``, or ``$WAYBILL_SERVICES_DIR``), provisions a database and role and a broker
user per context, migrates, declares the bus topology, loads the demo data, then runs every
process of ``deployment.processes()`` plus the nginx gateway under supervisord
(``launcher.supervision``): a process that exits is started again, one that keeps crashing
is given up on and reported, and the others keep running. Every process's log is printed
here with its name in front. Each Waybill process serves its metrics on a loopback port of
its own, listed in ``prometheus.yml`` in the folder (a scrape configuration) and by ``status``.

How big it runs is read from the environment (``launcher.topology``): replicas of any
process (``WAYBILL_REPLICAS=orders-web=2,...``), a RabbitMQ cluster
(``WAYBILL_BROKER_NODES=3``, its data in ``rabbitmq-cluster/``, apart from a single node's),
contexts' databases on PostgreSQL servers of their own (``WAYBILL_DATABASE_SERVERS=separate``).

The folder outlives the processes: the databases (PostgreSQL with fsync on), the broker's
data (a fixed node name, so RabbitMQ finds its queues again on new ports), Redis's
append-only file, the payment sandbox's data and the secrets that sessions, tokens and
payments depend on (``secrets/``) are all kept, so the next start resumes with everything
that was committed. Provisioning and migrations run again, harmlessly: the roles and
broker users get new passwords, which only these processes use.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import time
from pathlib import Path

import yaml

from .deployment import LAGGING_VARIABLE, processes
from .gateway import Gateway, upstreams
from .polling import wait_for
from .servers import free_port, kill_group, missing_packages, stored_secret
from .services import answers
from .stack import REPO, Stack, metrics_addresses, prometheus_config
from .supervision import Supervisor, control_socket, gateway_program, process_program, rpc
from .topology import Servers, Topology

SERVICES_DIR_VARIABLE = "WAYBILL_SERVICES_DIR"
# Every process's metrics address, for an operator's Prometheus (and for `make status`).
PROMETHEUS_FILE = "prometheus.yml"
# How long a start waits for what an earlier, killed run left stopping (its servers and
# supervisor stop by themselves once the launcher is gone: parent-death signals).
LEFTOVER_TIMEOUT = 90.0
DOWN_TIMEOUT = 120.0
COLOURS = ("36", "33", "32", "35", "34", "31", "96", "93", "92", "95", "94")


def services_dir() -> Path:
    return Path(os.environ.get(SERVICES_DIR_VARIABLE) or REPO / "var" / "services").resolve()


# --- Who is running ------------------------------------------------------------------------
def _stat(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name (state, ppid, ...), or None."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _started(pid: int) -> str | None:
    """When ``pid`` started (clock ticks since boot): with the pid, names one process, so a
    pid file from before a reboot, or a pid used again since, is never taken for ours.
    A zombie counts until it is reaped: PostgreSQL, for one, refuses to start while the pid
    in its lock file exists at all."""
    fields = _stat(pid)
    return fields[19] if fields else None


class Pids:
    """``pids.json``: the launcher's pid and those of the servers and the supervisor it
    started, so ``down`` finds the launcher and a new start waits for an old run's leftovers."""

    def __init__(self, workdir: Path):
        self.path = workdir / "pids.json"

    def _read(self) -> dict[str, list]:
        try:
            return json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}

    def add(self, **pids: int | None) -> None:
        self.path.write_text(json.dumps(self._read() | {name: [pid, _started(pid)] for name, pid in pids.items()}))

    def alive(self) -> dict[str, int]:
        """Those of the recorded processes that still run, by name."""
        return {name: pid for name, (pid, started) in self._read().items() if started and _started(pid) == started}

    def launcher(self) -> int | None:
        pid = self.alive().get("launcher")
        return pid if pid != os.getpid() else None

    def leftovers(self) -> dict[str, int]:
        return {name: pid for name, pid in self.alive().items() if name != "launcher"}

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)


def child_pids(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        fields = _stat(int(stat.parent.name))
        if fields and fields[1] == str(pid):
            found.append(int(stat.parent.name))
    return found


def _wait_for_leftovers(pids: Pids) -> None:
    left = pids.leftovers()
    if not left:
        return
    print(f"waiting for what the last run left stopping: {', '.join(left)} ...", flush=True)
    if "supervisord" in left:
        # Its own shutdown stops one process after the other; stopping them all at once is
        # what it does anyway, sooner. Each is the leader of its process group.
        for child in child_pids(left["supervisord"]):
            kill_group(child, signal.SIGTERM)
    try:
        wait_for(lambda: not pids.leftovers(), LEFTOVER_TIMEOUT, "the last run's servers to stop")
    except AssertionError:
        for name, pid in pids.leftovers().items():
            print(f"killing {name} (pid {pid}), still running after {LEFTOVER_TIMEOUT:.0f}s", flush=True)
            os.kill(pid, signal.SIGKILL)
        wait_for(lambda: not pids.leftovers(), 30, "the last run's servers to die")


# --- Logs on the terminal ------------------------------------------------------------------
class LogFollower:
    """Prints what every process writes to ``logs/<name>.log``, as it comes, with the
    process's name in front (what honcho did). Starts at the end of what an earlier run wrote."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.offsets = {path.name: path.stat().st_size for path in folder.glob("*.log")}
        self.partial: dict[str, bytes] = {}
        self.colour = sys.stdout.isatty()

    def print_new(self) -> None:
        paths = sorted(self.folder.glob("*.log"))
        width = max((len(path.stem) for path in paths), default=0)
        for index, path in enumerate(paths):
            offset = self.offsets.get(path.name, 0)
            size = path.stat().st_size
            if size < offset:
                offset = 0  # rotated by the supervisor
            if size == offset:
                continue
            with open(path, "rb") as log:
                log.seek(offset)
                chunk = self.partial.pop(path.name, b"") + log.read(size - offset)
            self.offsets[path.name] = size
            *lines, rest = chunk.split(b"\n")
            if rest:
                self.partial[path.name] = rest
            prefix = f"{path.stem:<{width}} |"
            if self.colour:
                prefix = f"\033[{COLOURS[index % len(COLOURS)]}m{prefix}\033[0m"
            for line in lines:
                print(f"{prefix} {line.decode(errors='replace')}")
        sys.stdout.flush()


# --- make up -------------------------------------------------------------------------------
def _terminate(signum, frame) -> None:
    raise KeyboardInterrupt  # SIGTERM (`make down`, an orchestrator) stops like Ctrl-C


def run() -> int:
    missing = missing_packages()
    if missing:
        print(f"make up needs these Debian packages: {' '.join(missing)}\n"
              f"Install them with: apt-get install -y {' '.join(missing)}", file=sys.stderr)
        return 1
    port = int(os.environ.get("WAYBILL_PORT", "8000"))
    workdir = services_dir()
    workdir.mkdir(parents=True, exist_ok=True)
    pids = Pids(workdir)
    if pids.launcher():
        print(f"make up is already running in {workdir} (pid {pids.launcher()}): `make down` stops it.",
              file=sys.stderr)
        return 1
    _wait_for_leftovers(pids)
    resumed = (workdir / "postgres" / "pgdata" / "PG_VERSION").exists()
    print(f"{'resuming' if resumed else 'starting'} the services deployment in {workdir}"
          f"{'' if resumed else ' (new)'}; `make reset` deletes it", flush=True)
    pids.clear()
    pids.add(launcher=os.getpid())
    signal.signal(signal.SIGTERM, _terminate)

    topology = Topology.from_environment()
    if refusal := topology.refuses_layout_of(workdir):
        print(refusal, file=sys.stderr)
        pids.clear()
        return 1
    servers = Servers(workdir, topology, persistent=True)
    supervisor = Supervisor(workdir / "supervisor", logs=workdir / "logs")
    began = time.monotonic()
    try:
        servers.start(announce=lambda server: print(f"starting {server!r} ...", flush=True),
                      started=lambda server: pids.add(**{node.data_dir.name: node.pid for node in servers.server_processes
                                                         if node.pid}))
        lagging = os.environ.get(LAGGING_VARIABLE, "")
        port_of = {p.name: str(free_port()) for p in processes(lagging=lagging, replicas=topology.replicas)
                   if p.listens}
        deployment = processes(port_of=port_of, lagging=lagging, replicas=topology.replicas)
        metrics = metrics_addresses(deployment)
        (workdir / PROMETHEUS_FILE).write_text(prometheus_config(metrics))
        secrets = workdir / "secrets"
        secrets.mkdir(mode=0o700, exist_ok=True)
        stack = Stack(
            workdir=workdir,
            database_urls=servers.database_urls(),
            broker_urls=servers.broker_urls(),
            redis_url=servers.redis.url,
            # Kept: sessions are signed with the key, and the sandbox knows orders by the API key.
            secret_key=stored_secret(secrets / "secret-key", nbytes=40),
            payment_api_key=stored_secret(secrets / "payment-api-key", nbytes=24),
            payment_gateway_url=f"http://127.0.0.1:{port_of['payment-sandbox']}",
            otel_exporter=os.environ.get("WAYBILL_OTEL_EXPORTER", "none"),
            supervisor_url=supervisor.url,
            lagging=lagging,
            broker_management_url=servers.broker.management_url,
            metrics_addresses=metrics,
        )
        print("migrating, declaring the bus topology, loading demo data ...", flush=True)
        stack.prepare()

        gateway = Gateway(workdir / "gateway", port=port, upstreams=upstreams(deployment, port_of))
        supervisor.logs.mkdir(parents=True, exist_ok=True)
        logs = LogFollower(supervisor.logs)
        supervisor.start()
        pids.add(supervisord=supervisor.pid)
        for process in deployment:
            supervisor.add(process_program(stack, process))
        supervisor.add(gateway_program(gateway))
        password = os.environ.get("WAYBILL_DEMO_PASSWORD", "waybill-demo")
        announced = False
        while supervisor.running:
            logs.print_new()
            if not announced and answers(gateway.url + "/readyz"):
                announced = True
                print(f"\nWaybill services mode on {gateway.url}/ (ready in {time.monotonic() - began:.0f}s; "
                      f"Ctrl-C or `make down` stops everything, `make status` shows each process)\n"
                      f"Demo accounts: alice, bob (customers), admin (staff) - password {password!r}\n", flush=True)
            time.sleep(0.2)
        print("the supervisor exited: stopping the servers", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nstopping every process, then the servers ...", flush=True)
        return 0
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second one must not cut the stop short
        supervisor.stop()
        servers.stop()
        pids.clear()
        print(f"stopped; the data stays in {workdir}", flush=True)


# --- make status / down / reset --------------------------------------------------------------
def status() -> int:
    workdir = services_dir()
    socket = control_socket(workdir / "supervisor")
    if not Pids(workdir).launcher() or not socket.exists():
        print(f"nothing is running in {workdir}")
        return 1
    metrics = _metrics_targets(workdir / PROMETHEUS_FILE)
    for info in rpc(f"unix://{socket}").supervisor.getAllProcessInfo():
        address = metrics.get(info["name"], "")
        print(f"{info['name']:<28} {info['statename']:<9} {address:<21} {info['description']}")
    return 0


def _metrics_targets(path: Path) -> dict[str, str]:
    """Process name -> metrics address, as this run's scrape configuration has them."""
    try:
        config = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return {}
    return {static["labels"]["process"]: target for job in config["scrape_configs"]
            for static in job["static_configs"] for target in static["targets"]}


def down() -> int:
    workdir = services_dir()
    pids = Pids(workdir)
    pid = pids.launcher()
    if pid is None:
        print(f"nothing is running in {workdir}")
        return 0
    print(f"stopping make up (pid {pid}): every process, then the servers ...", flush=True)
    os.kill(pid, signal.SIGTERM)
    wait_for(lambda: not pids.alive(), DOWN_TIMEOUT, "make up to stop")
    print(f"stopped; the data stays in {workdir} (`make reset` deletes it)")
    return 0


def reset() -> int:
    workdir = services_dir()
    pids = Pids(workdir)
    if pids.launcher() or pids.leftovers():
        print(f"make up is running in {workdir}: `make down` first", file=sys.stderr)
        return 1
    if workdir.exists():
        print(f"deleting {workdir}: every database, the broker's queues, the secrets and the logs", flush=True)
        shutil.rmtree(workdir)
    else:
        print(f"{workdir} does not exist: nothing to delete")
    return 0


def main(argv: list[str]) -> int:
    match argv:
        case []:
            return run()
        case ["status"]:
            return status()
        case ["down"]:
            return down()
        case ["reset"]:
            return reset()
        case _:
            print("usage: python -m launcher.up [status | down | reset]", file=sys.stderr)
            return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
