"""Private PostgreSQL, RabbitMQ and Redis servers: on 127.0.0.1, on free ports, in a folder.

Each server is a plain child process of the caller, never a system service: nothing is
shared with (or breaks because of) a server the machine already runs, and any number of
them can run side by side (one per test session, say)::

    with PostgresServer(tmp / "pg") as pg, RabbitMQServer(tmp / "mq") as mq:
        print(pg.superuser_url, mq.admin_url, pg.startup_seconds)

``start()`` blocks until the server accepts connections (or raises ServerError with the
tail of the server's log); ``stop()`` shuts it down gracefully, then kills whatever is left
of its process group. Every server runs in a session of its own (a Ctrl-C in the
launcher's terminal reaches the launcher, which stops the servers in order, not the
servers themselves) with a parent-death signal, so even a caller killed with SIGKILL
takes its servers down with it. Linux delivers that signal when the *thread* that
started the server exits: call start() from a thread that outlives the server (the main
thread, as the launcher and pytest fixtures do), never from a short-lived worker thread.

Secrets (the PostgreSQL superuser's and the RabbitMQ admin's passwords, the Erlang
cookie) are random, kept in files of mode 0600/0400 inside the folder, and reused when a
folder is started again.
"""

from __future__ import annotations

import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import time
from pathlib import Path
from typing import Iterable, Self

HOST = "127.0.0.1"

# Debian puts daemons in sbin folders that a non-root PATH often lacks.
_SEARCH_PATH = os.pathsep.join(
    [os.environ.get("PATH", ""), "/usr/local/sbin", "/usr/sbin", "/sbin"]
)
# The plain scripts, not the /usr/sbin wrappers: those `su` to the rabbitmq user and use
# /var/lib/rabbitmq as HOME, so they would neither see our folder nor our Erlang cookie.
RABBITMQ_BIN = Path("/usr/lib/rabbitmq/bin")


class ServerError(RuntimeError):
    """A server could not be prepared, started or driven."""


def free_port() -> int:
    """A TCP port that is free on 127.0.0.1 right now, for a server or process to bind soon.

    Not one the OS would pick (``bind(0)``): that range is also where every outgoing
    connection takes its source port, and where the next ``bind(0)`` of another process is
    handed the port just released, so with several deployments starting side by side (the
    test run's xdist workers) a port chosen a minute before its process binds it was found
    taken. Instead, below the ephemeral range, in a slice of its own per test worker (or
    per process), each port handed out once. Another process could still take it first;
    the server then fails with "address in use" in its log tail.
    """
    global _next_port
    low, high = _port_slice()
    if _next_port is None or not low <= _next_port < high:
        _next_port = low + secrets.randbelow(high - low)
    for _ in range(high - low):
        port, _next_port = _next_port, low + (_next_port + 1 - low) % (high - low)
        if port in _handed_out:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind((HOST, port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    raise ServerError(f"no free port left in {low}-{high - 1}")


_handed_out: set[int] = set()
_next_port: int | None = None
PORT_SLICES = 8


def _port_slice() -> tuple[int, int]:
    """[low, high) of this process's ports: from 10000 up to the ephemeral range's start,
    cut in PORT_SLICES, the slice of this pytest-xdist worker (gw0, gw1, ...) or process."""
    try:
        ephemeral = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        ephemeral = 32768
    width = (ephemeral - 10000) // PORT_SLICES
    worker = os.environ.get("PYTEST_XDIST_WORKER", "").removeprefix("gw")
    index = int(worker) if worker.isdigit() else os.getpid()
    low = 10000 + (index % PORT_SLICES) * width
    return low, low + width


def _which(name: str) -> str | None:
    return shutil.which(name, path=_SEARCH_PATH)


def postgres_bindir() -> Path | None:
    """The newest /usr/lib/postgresql/<major>/bin (Debian), else wherever `postgres` is."""
    versions = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/postgres"),
        key=lambda p: int(p.parts[-3]) if p.parts[-3].isdigit() else 0,
    )
    if versions:
        return versions[-1].parent
    found = _which("postgres")
    return Path(found).parent if found else None


# Debian package -> "is its server binary here?"
_PACKAGES = {
    "postgresql": lambda: postgres_bindir() is not None,
    "rabbitmq-server": lambda: (RABBITMQ_BIN / "rabbitmq-server").exists(),
    "redis-server": lambda: _which("redis-server") is not None,
    "nginx": lambda: _which("nginx") is not None,
}


def missing_packages(packages: Iterable[str] = tuple(_PACKAGES)) -> list[str]:
    """Debian package names (of `packages`, default all four) whose binaries are absent."""
    return [name for name in packages if not _PACKAGES[name]()]


def stored_secret(path: Path, *, mode: int = 0o600, nbytes: int = 16) -> str:
    """Read a secret from `path`, creating it (`nbytes` random bytes as hex: safe in URLs
    and config files, and a valid Erlang cookie) the first time."""
    if path.exists():
        return path.read_text().strip()
    value = secrets.token_hex(nbytes)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(value)
    os.chmod(path, mode)
    return value


def _tail(path: Path, lines: int) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def kill_group(pgid: int, sig: int = signal.SIGKILL) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass  # nothing left in the group


class _Server:
    """One server process: spawn, wait until ready, stop. Subclasses fill in the hooks."""

    name = "server"
    # Sent to the process (through the parent-death signal too) for a graceful stop.
    stop_signal = signal.SIGTERM

    def __init__(self, data_dir: Path | str, port: int | None = None):
        self.data_dir = Path(data_dir).resolve()
        self.port = port or free_port()
        self.startup_seconds: float | None = None  # how long the last start() took
        self._proc: subprocess.Popen | None = None
        self._began = 0.0

    # -- hooks ---------------------------------------------------------------------
    def _prepare(self) -> None:
        """Create files the server needs (runs before every start)."""

    def _command(self) -> list[str]:
        raise NotImplementedError

    def _env(self) -> dict[str, str] | None:
        return None  # inherit the caller's environment

    def _check_ready(self) -> None:
        """Raise unless the server accepts connections."""
        raise NotImplementedError

    def _graceful_stop(self, timeout: float) -> None:
        self._proc.send_signal(self.stop_signal)

    def _after_stop(self) -> None:
        """Clean up helpers (RabbitMQ's epmd)."""

    def _log_files(self) -> list[Path]:
        return [self.log_path]

    # -- public ----------------------------------------------------------------------
    @property
    def log_path(self) -> Path:
        """The server's stdout and stderr."""
        return self.data_dir / f"{self.name.lower()}.log"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def log_tail(self, lines: int = 40) -> str:
        parts = [f"--- {p} ---\n{_tail(p, lines)}" for p in self._log_files() if p.exists()]
        return "\n".join(parts) or "(no log written)"

    def start(self, timeout: float = 60.0) -> Self:
        """Start the server and return self once it accepts connections."""
        if self.running:
            return self
        return self.spawn().ready(timeout)

    def spawn(self) -> Self:
        """Start the server's process and return at once (``ready`` waits for it): a
        cluster's nodes start side by side, each from the caller's thread (see the
        module's docstring: the parent-death signal follows the thread that started it)."""
        self._began = time.monotonic()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        try:
            self._prepare()
            with open(self.log_path, "ab") as log:
                self._proc = subprocess.Popen(
                    self._command(),
                    env=self._env(),
                    cwd=self.data_dir,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # own process group: killpg reaches every child
                )
        except BaseException:
            self.stop()  # even on Ctrl-C: never leave a half-started server behind
            raise
        return self

    def ready(self, timeout: float = 60.0) -> Self:
        """Return self once the spawned server accepts connections (or stop it and raise)."""
        try:
            self._wait_ready(time.monotonic() + timeout, timeout)
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - self._began
        return self

    def kill(self) -> None:
        """SIGKILL the server's whole process group, as a crash of its machine would: no
        clean shutdown, nothing flushed that was not already. ``start`` brings it back."""
        proc, self._proc = self._proc, None
        if proc is not None:
            kill_group(proc.pid)
            proc.wait()
        self._after_stop()

    def _wait_ready(self, deadline: float, timeout: float) -> None:
        last_error: Exception | None = None
        while True:
            if self._proc.poll() is not None:
                raise ServerError(
                    f"{self.name} exited with code {self._proc.returncode} while starting "
                    f"on port {self.port}.\n{self.log_tail()}"
                )
            try:
                self._check_ready()
                return
            except Exception as exc:  # not up yet: refused, starting up, ...
                last_error = exc
            if time.monotonic() > deadline:
                raise ServerError(
                    f"{self.name} did not accept connections on {HOST}:{self.port} within "
                    f"{timeout:.0f}s (last error: {last_error!r}).\n{self.log_tail()}"
                )
            time.sleep(0.1)

    def stop(self, timeout: float = 20.0) -> None:
        """Stop gracefully within `timeout` seconds, then kill. Safe to call twice."""
        proc = self._proc
        deadline = time.monotonic() + timeout
        try:
            if proc is not None:
                if proc.poll() is None:
                    try:
                        self._graceful_stop(timeout)
                        proc.wait(max(0.1, deadline - time.monotonic()))
                    except Exception:  # hook failed or timed out: no more manners
                        pass
                # Kill what is left of the group (leader and any child it orphaned).
                kill_group(proc.pid)
                proc.wait()
        finally:
            self._proc = None
            self._after_stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} port={self.port} dir={self.data_dir}>"


def _setpriv(pdeathsig: signal.Signals | None, user: str | None = None) -> list[str]:
    """Command prefix (util-linux setpriv, which execs: the pid stays the server's) that
    delivers `pdeathsig` to the server when its parent dies, and runs it as `user`.

    One setpriv for both: the kernel clears the parent-death signal when the uid changes.
    """
    options = []
    if pdeathsig is not None:
        options.append(f"--pdeathsig={pdeathsig.name.removeprefix('SIG')}")
    if user is not None:
        options += [f"--reuid={user}", f"--regid={user}", "--init-groups"]
    if _which("setpriv") is None:
        if user is not None:
            raise ServerError("setpriv (util-linux) is needed to run a server as " + user)
        return []  # elsewhere we only lose the parent-death safety net
    return ["setpriv", *options, "--"]


def _grant_traverse(path: Path) -> None:
    """Let other users (the postgres user) pass through every folder above `path`.

    Adds only the search bit (o+x): they can reach a known path but not list anything.
    Needed because temp roots such as /tmp/pytest-of-root are mode 0700.
    """
    for folder in [path, *path.parents]:
        mode = folder.stat().st_mode
        if not mode & stat.S_IXOTH:
            os.chmod(folder, stat.S_IMODE(mode) | stat.S_IXOTH)


class PostgresServer(_Server):
    """A PostgreSQL cluster in ``data_dir/pgdata``, listening on 127.0.0.1 only.

    Authentication: scram-sha-256 passwords on TCP (the superuser `postgres` too, with a
    random password), so a role's URL is its only key. No Unix socket: a socket path inside
    a deep folder (a test's temporary one, say) can pass the 107 bytes a Unix socket path
    may have, and PostgreSQL would not start. As root, the cluster is owned by and run as the
    `postgres` OS user, since PostgreSQL refuses to run as root.

    fast=True (tests) turns off fsync, synchronous_commit and full_page_writes: a crash
    can lose or corrupt data, which a throw-away test cluster does not mind. `settings`
    adds or overrides server settings (``{"max_connections": "300"}``).
    """

    name = "PostgreSQL"
    stop_signal = signal.SIGINT  # "fast" shutdown: roll back clients, then exit cleanly

    def __init__(self, data_dir: Path | str, port: int | None = None, *, fast: bool = True,
                 settings: dict[str, str] | None = None):
        super().__init__(data_dir, port)
        self.fast = fast
        self.settings = dict(settings or {})
        self.pgdata = self.data_dir / "pgdata"
        self._bindir = postgres_bindir()

    @property
    def superuser_password(self) -> str:
        return stored_secret(self.data_dir / "superuser.password")

    @property
    def superuser_url(self) -> str:
        return f"postgresql://postgres:{self.superuser_password}@{HOST}:{self.port}/postgres"

    def url(self, user: str, password: str, database: str) -> str:
        return f"postgresql://{user}:{password}@{HOST}:{self.port}/{database}"

    def _as_postgres(self, pdeathsig: signal.Signals | None = None) -> list[str]:
        """Prefix that drops root to the postgres OS user (PostgreSQL refuses root)."""
        return _setpriv(pdeathsig, user="postgres" if os.geteuid() == 0 else None)

    def _prepare(self) -> None:
        if self._bindir is None:
            raise ServerError("PostgreSQL is not installed: apt-get install -y postgresql")
        self.pgdata.mkdir(mode=0o700, exist_ok=True)
        if os.geteuid() == 0:
            owner = pwd.getpwnam("postgres")
            os.chown(self.pgdata, owner.pw_uid, owner.pw_gid)
            _grant_traverse(self.data_dir)
        if (self.pgdata / "PG_VERSION").exists():
            return  # an existing cluster: keep its data and its superuser password
        # initdb reads the password from a file that the postgres user can open (as
        # another uid it cannot reopen our stdin pipe through /dev/stdin).
        pwfile = self.data_dir / "initdb.pwfile"
        with os.fdopen(os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
            f.write(self.superuser_password)
        if os.geteuid() == 0:
            os.chown(pwfile, owner.pw_uid, owner.pw_gid)
        try:
            result = subprocess.run(
                self._as_postgres() + [
                    str(self._bindir / "initdb"), "-D", str(self.pgdata),
                    "--username=postgres", f"--pwfile={pwfile}",
                    "--auth-host=scram-sha-256", "--auth-local=peer",
                    "--encoding=UTF8", "--locale=C", "--no-instructions",
                ] + (["--no-sync"] if self.fast else []),
                capture_output=True, text=True, cwd="/",
            )
        finally:
            pwfile.unlink()
        if result.returncode != 0:
            raise ServerError(f"initdb failed:\n{result.stdout}{result.stderr}")

    def _command(self) -> list[str]:
        settings = {
            "listen_addresses": HOST,
            "port": str(self.port),
            "unix_socket_directories": "",  # TCP only, see above
        }
        if self.fast:
            settings |= {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}
        settings |= self.settings
        args = [f"--{key}={value}" for key, value in settings.items()]
        return self._as_postgres(self.stop_signal) + [
            str(self._bindir / "postgres"), "-D", str(self.pgdata), *args]

    def _check_ready(self) -> None:
        import psycopg

        psycopg.connect(self.superuser_url, connect_timeout=2).close()


class RedisServer(_Server):
    """A Redis that keeps nothing on disk (no RDB snapshots, no AOF), unless
    ``persistent``: then an append-only file in the folder, synced every second."""

    name = "Redis"

    def __init__(self, data_dir: Path | str, port: int | None = None, *, persistent: bool = False):
        super().__init__(data_dir, port)
        self.persistent = persistent

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    def _command(self) -> list[str]:
        binary = _which("redis-server")
        if binary is None:
            raise ServerError("Redis is not installed: apt-get install -y redis-server")
        keep = ["--appendonly", "yes", "--appendfsync", "everysec"] if self.persistent else ["--appendonly", "no"]
        return _setpriv(self.stop_signal) + [
            binary, "--port", str(self.port), "--bind", HOST, "--dir", str(self.data_dir),
            "--save", "", *keep, "--daemonize", "no"]

    def _check_ready(self) -> None:
        # A bare PING: redis-py would retry with back-off, hiding an early exit.
        with socket.create_connection((HOST, self.port), timeout=1) as conn:
            conn.sendall(b"PING\r\n")
            if not conn.recv(16).startswith(b"+PONG"):
                raise ServerError("no PONG")


# The quorum queues' write-ahead log (Ra) keeps every entry in memory until its file reaches
# this size and is written out to segments; at RabbitMQ's default, 512 MiB, a soak's broker
# grew a steady 5 MiB a minute for 30 minutes (docs/chaos/soak.md). At 64 MiB the next soak
# saw a sawtooth of about 30 MiB between roll-overs; at 16 MiB the quorum tables' share fell
# from 7.6 to 3.7 MiB over the third soak, rolling over four times as often (a file written
# out in the background). The same here and in compose's deploy/rabbitmq/rabbitmq.conf
# (tests/test_compose.py holds them equal).
QUORUM_WAL_MAX_BYTES = 16 * 1024 * 1024


class RabbitMQServer(_Server):
    """A single RabbitMQ node whose every file (and Erlang's own epmd) is private.

    Node name ``waybill-<port>@localhost`` unless ``node`` names it: RabbitMQ keeps its data
    (``mnesia/<node>``: users, queues, quorum queue logs) under the node's name, so a
    node that must find its data again on another port needs a fixed one. AMQP on 127.0.0.1:<port>; Erlang distribution
    and epmd on other free loopback ports, so it coexists with any other node or epmd.
    HOME is ``data_dir`` because that is where Erlang looks for the cookie that
    rabbitmqctl must share with the node. Runs as the calling user (root is fine for
    Erlang). `plugins` lists plugins to enable; ``rabbitmq_stomp`` also gets a free port
    (``.stomp_port``), ``rabbitmq_management`` one on loopback for its HTTP API
    (``.management_port``, ``.management_url`` as the admin). The admin user
    (``.admin_url``, vhost "/") is created on first boot from the config file
    (``default_user``), which saves slow rabbitmqctl calls.
    """

    name = "RabbitMQ"
    admin_user = "waybill_admin"

    def __init__(self, data_dir: Path | str, port: int | None = None, *, plugins: Iterable[str] = (),
                 node: str | None = None, cluster: RabbitMQCluster | None = None):
        super().__init__(data_dir, port)
        self.plugins = list(plugins)
        self.node = node or f"waybill-{self.port}@localhost"
        # A node of ``cluster`` shares its epmd (nodes find each other there), its Erlang
        # cookie and its admin, and knows its peers (classic config peer discovery).
        self.cluster = cluster
        self.dist_port = free_port()
        self.epmd_port = cluster.epmd_port if cluster else free_port()
        self.stomp_port = free_port() if "rabbitmq_stomp" in self.plugins else None
        self.management_port = free_port() if "rabbitmq_management" in self.plugins else None
        self._epmd: subprocess.Popen | None = None

    @property
    def secrets_dir(self) -> Path:
        """Where the admin password and the Erlang cookie are kept: a cluster's are its own."""
        return self.cluster.data_dir if self.cluster else self.data_dir

    @property
    def admin_password(self) -> str:
        return stored_secret(self.secrets_dir / "admin.password")

    @property
    def admin_url(self) -> str:
        return self.url(self.admin_user, self.admin_password, vhost="")

    @property
    def management_url(self) -> str:
        """The management API's base URL with the admin's credentials (what
        ``WAYBILL_BROKER_MANAGEMENT_URL`` takes); "" without the plugin."""
        if self.management_port is None:
            return ""
        return f"http://{self.admin_user}:{self.admin_password}@{HOST}:{self.management_port}"

    def url(self, user: str, password: str, vhost: str) -> str:
        """amqp URL; vhost "" is the default vhost "/"."""
        return f"amqp://{user}:{password}@{HOST}:{self.port}/{vhost}"

    def _env(self) -> dict[str, str]:
        d = self.data_dir
        # Drop the caller's RabbitMQ/Erlang settings: they would point at the system node.
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RABBITMQ_", "ERL_"))}
        return env | {
            "HOME": str(d),
            "LANG": env.get("LANG") or "C.UTF-8",
            "ERL_EPMD_PORT": str(self.epmd_port),
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_IP_ADDRESS": HOST,
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(d / "mnesia"),
            "RABBITMQ_LOG_BASE": str(d / "log"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(d / "enabled_plugins"),
            "RABBITMQ_CONFIG_FILE": str(d / "rabbitmq.conf"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(d / "advanced.config"),  # need not exist
            "RABBITMQ_CONF_ENV_FILE": str(d / "rabbitmq-env.conf"),  # not /etc/rabbitmq's
            # Distribution on loopback only (RABBITMQ_DIST_PORT fixes just the port); epmd
            # is ours (below), so the node must not spawn a daemonized one of its own.
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS":
                "-kernel inet_dist_use_interface {127,0,0,1} -start_epmd false",
        }

    def _prepare(self) -> None:
        if not (RABBITMQ_BIN / "rabbitmq-server").exists():
            raise ServerError("RabbitMQ is not installed: apt-get install -y rabbitmq-server")
        d = self.data_dir
        # Erlang reads the cookie from HOME and insists on mode 0400; a cluster's nodes share one.
        if self.cluster is None:
            stored_secret(d / ".erlang.cookie", mode=0o400)
        elif not (d / ".erlang.cookie").exists():
            cookie = stored_secret(self.cluster.data_dir / "erlang.cookie")
            with os.fdopen(os.open(d / ".erlang.cookie", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o400), "w") as f:
                f.write(cookie)
        (d / "rabbitmq-env.conf").touch()
        (d / "enabled_plugins").write_text(f"[{','.join(self.plugins)}].\n")
        config = [
            f"listeners.tcp.1 = {HOST}:{self.port}",
            f"default_user = {self.admin_user}",
            f"default_pass = {self.admin_password}",
            "default_user_tags.administrator = true",
            "log.file.level = info",
            f"raft.wal_max_size_bytes = {QUORUM_WAL_MAX_BYTES}",
        ]
        if self.stomp_port:
            config.append(f"stomp.listeners.tcp.1 = {HOST}:{self.stomp_port}")
        if self.management_port:
            # Loopback only: the API acts with whatever account signs in, the admin's too.
            config += [f"management.tcp.ip = {HOST}", f"management.tcp.port = {self.management_port}"]
        if self.cluster:
            # A new node joins the first of its peers that answers (RabbitMQ's own clustering:
            # the same as `rabbitmqctl join_cluster`, done at first boot); one that was a
            # member finds its cluster again from its data.
            config += ["cluster_formation.peer_discovery_backend = classic_config",
                       *(f"cluster_formation.classic_config.nodes.{i} = {peer}"
                         for i, peer in enumerate(self.cluster.node_names, 1))]
        (d / "rabbitmq.conf").write_text("\n".join(config) + "\n")
        os.chmod(d / "rabbitmq.conf", 0o600)  # it holds the admin password
        if self.cluster is None:
            self._epmd = start_epmd(self.epmd_port, cwd=d)

    def _command(self) -> list[str]:
        # The script stays in the foreground and turns SIGTERM into a graceful stop.
        return _setpriv(self.stop_signal) + [str(RABBITMQ_BIN / "rabbitmq-server")]

    def _check_ready(self) -> None:
        from kombu import Connection

        # A plain TCP probe first: it fails at once, while a failed kombu connect()
        # sleeps 2 s before its own retry. The AMQP listener opens late in the boot.
        for port in filter(None, (self.port, self.stomp_port, self.management_port)):
            socket.create_connection((HOST, port), timeout=1).close()
        with Connection(self.admin_url, connect_timeout=2) as conn:
            conn.connect()  # the broker answers AMQP and the admin user exists

    def rabbitmqctl(self, *args: str, timeout: float = 60.0) -> str:
        """Run rabbitmqctl against this node; return its stdout, raise on failure."""
        result = subprocess.run(
            [str(RABBITMQ_BIN / "rabbitmqctl"), "-n", self.node, *args],
            env=self._env(), cwd=self.data_dir, capture_output=True, text=True,
            timeout=timeout, stdin=subprocess.DEVNULL,
        )
        if result.returncode != 0:
            raise ServerError(
                f"rabbitmqctl {' '.join(args)} failed ({result.returncode}):\n"
                f"{result.stdout}{result.stderr}"
            )
        return result.stdout

    def _graceful_stop(self, timeout: float) -> None:
        self.rabbitmqctl("stop", timeout=timeout)

    def _after_stop(self) -> None:
        epmd, self._epmd = self._epmd, None
        if epmd is not None:
            epmd.kill()  # epmd holds no state worth a graceful stop
            epmd.wait()

    def _log_files(self) -> list[Path]:
        return [self.log_path, self.data_dir / "log" / f"{self.node}.log"]


def start_epmd(port: int, *, cwd: Path) -> subprocess.Popen:
    """Erlang's port mapper, our own, in the foreground, as our child: we know which one to
    stop, and it listens on loopback only."""
    return subprocess.Popen(
        _setpriv(signal.SIGTERM) + [_which("epmd") or "epmd", "-port", str(port), "-address", HOST],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        cwd=cwd, start_new_session=True,
    )


class RabbitMQCluster:
    """Three (``size``) RabbitMQ nodes on loopback clustered the way RabbitMQ clusters:
    node names ``<prefix>-1@localhost``..., each with its own ports and data folder
    (``data_dir/node-<i>``), one Erlang cookie, one epmd, one admin. Quorum queues and
    streams declared once every node is up are replicated on all of them.

    It answers as one server where the launcher provisions and connects (``url`` and
    ``admin_url`` list every node, ``;``-separated, Kombu's and Celery's failover form;
    ``rabbitmqctl`` asks a running node), and each of ``nodes`` can be killed and started
    again on its own. ``start`` starts a new cluster's first node, then the others, which
    join it; a cluster that ran before starts every node at once, since each waits for
    the others' copies of the metadata (the last to stop holds the newest)."""

    name = "RabbitMQ cluster"

    def __init__(self, data_dir: Path | str, *, size: int = 3, plugins: Iterable[str] = (),
                 prefix: str = "waybill"):
        self.data_dir = Path(data_dir).resolve()
        self.epmd_port = free_port()
        self.node_names = tuple(f"{prefix}-{i}@localhost" for i in range(1, size + 1))
        self._epmd: subprocess.Popen | None = None
        self.nodes = [RabbitMQServer(self.data_dir / f"node-{i}", plugins=plugins, node=name, cluster=self)
                      for i, name in enumerate(self.node_names, 1)]

    admin_user = RabbitMQServer.admin_user

    @property
    def admin_password(self) -> str:
        return stored_secret(self.data_dir / "admin.password")

    @property
    def admin_url(self) -> str:
        return self.url(self.admin_user, self.admin_password, vhost="")

    def url(self, user: str, password: str, vhost: str) -> str:
        return ";".join(node.url(user, password, vhost) for node in self.nodes)

    @property
    def management_url(self) -> str:
        """Every node's management API, ";"-separated: each answers for the whole cluster,
        and the console asks the first that answers."""
        return ";".join(filter(None, (node.management_url for node in self.nodes)))

    @property
    def running(self) -> bool:
        return any(node.running for node in self.nodes)

    def rabbitmqctl(self, *args: str, timeout: float = 60.0) -> str:
        node = next((node for node in self.nodes if node.running), self.nodes[0])
        return node.rabbitmqctl(*args, timeout=timeout)

    def members(self) -> set[str]:
        """The nodes running in the cluster, as RabbitMQ's own status says."""
        status = json.loads(self.rabbitmqctl("cluster_status", "--formatter", "json"))
        return set(status["running_nodes"])

    def start(self, timeout: float = 120.0) -> Self:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self._epmd is None:
            self._epmd = start_epmd(self.epmd_port, cwd=self.data_dir)
        try:
            stopped = [node for node in self.nodes if not node.running]
            # A node that ran before waits for its peers' metadata: those start side by side.
            # A blank one (a new cluster, or a node whose data was lost) joins a running
            # peer, so it starts after them; a new cluster's first node starts alone.
            known = [node for node in stopped if (node.data_dir / "mnesia").exists()]
            blank = [node for node in stopped if node not in known]
            if blank and not known and not self.running:
                blank[0].start(timeout)
                blank = blank[1:]
            for group in (known, blank):
                for node in group:
                    node.spawn()
                for node in group:
                    self._boot(node, timeout)
        except BaseException:
            self.stop()
            raise
        return self

    # RabbitMQ 3.10's nodes, started side by side after all were killed, sometimes refuse to
    # boot ("incompatible_feature_flags": a peer's feature flags read while it is itself
    # booting); the same node starts once its peers are up. Seen in the chaos run.
    BOOT_ATTEMPTS = 3

    def _boot(self, node: RabbitMQServer, timeout: float) -> None:
        for attempt in range(1, self.BOOT_ATTEMPTS + 1):
            try:
                node.ready(timeout)
                return
            except ServerError:
                if attempt == self.BOOT_ATTEMPTS:
                    raise
                node.spawn()  # ready() stopped what was left of it

    def stop(self, timeout: float = 20.0) -> None:
        for node in reversed(self.nodes):
            node.stop(timeout)
        epmd, self._epmd = self._epmd, None
        if epmd is not None:
            epmd.kill()
            epmd.wait()

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(node.log_tail(lines) for node in self.nodes)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<RabbitMQCluster {', '.join(self.node_names)} dir={self.data_dir}>"
