"""The local stack on embedded defaults: `python -m deploy.localstack up|down|status|restart NAME|logs`.

Runs, on 127.0.0.1 only and under supervisor (deploy/supervision.py): Redis, SecantusDB
(MongoDB protocol), Tansu (Kafka protocol), the read and write gunicorn pools, the cache
consumers, the outbox relay, the cache inspector and HAProxy; with MONITORING=1, Prometheus
with the alert rules of deploy/alerts.yml. supervisor restarts whatever dies; `down` stops
them all through it, by their PIDs, and supervisord last.

Addresses come from the environment; a server whose URL is already set (MONGODB_URI,
KAFKA_BOOTSTRAP_SERVERS, REDIS_URL) is used as it is and not started.
"""

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from . import redis_topology
from .processes import PYTHON, ROOT, SERVERS, VENV_BIN, Process, env_int, local_profile, port_open, redis_socket
from .supervision import Program, Supervisor

# What HAProxy's edge reads from the environment, as the app does.
# Where the edge reads the cache: one server (or a replica: EDGE_REDIS_URL, its socket), or a
# cluster's nodes (REDIS_TOPOLOGY=cluster: REDIS_CLUSTER_NODES, and EDGE_REDIS_SOCKETS by address).
EDGE_REDIS = ("EDGE_REDIS_URL", "EDGE_REDIS_SOCKET", "REDIS_TOPOLOGY", "REDIS_CLUSTER_NODES", "EDGE_REDIS_SOCKETS")
EDGE_SETTINGS = (
    "EDGE_HITS",
    "EDGE_REDIS_TIMEOUT_MS",
    "EDGE_HIT_LOG_PERCENT",
    "CQRS_CACHE_PREFIX",
    "DJANGO_ALLOWED_HOSTS",
    "CORS_ALLOWED_ORIGINS",
)


# The address HAProxy connects to the local pools from, and the only one whose X-Forwarded-For
# they believe (CQRS_TRUSTED_PROXIES): a client on this host connects from 127.0.0.1, so it
# cannot choose the address the admin's login limit counts it under.
HAPROXY_SOURCE = "127.0.0.64"


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
    metrics_port_base: int  # the relay's /metrics; consumer N's is this + N; the inspector's follows
    monitoring: bool  # MONITORING=1: Prometheus, scraping every process, with the alert rules
    prometheus_port: int
    servers: dict  # each server's URL variable -> its URL (the ones it runs, and external ones)
    own_servers: dict  # the servers it runs: name -> port
    edge_settings: dict  # what HAProxy's edge reads (EDGE_SETTINGS), as `up` found them set
    redis_ports: dict  # REDIS_TOPOLOGY=sentinel|cluster: its other nodes' (deploy/redis_topology.py)

    SHAPE = (
        "port",
        "stats_port",
        "read_instances",
        "write_instances",
        "consumers",
        "read_port_base",
        "write_port_base",
        "metrics_port_base",
        "monitoring",
        "prometheus_port",
        "servers",
        "own_servers",
        "edge_settings",
        "redis_ports",
    )

    @classmethod
    def from_env(cls) -> "Stack":
        """The stack as the environment describes it; once `up` has run, as `up` saved it, so
        that `make status` and `make down` see every instance of `make up READ_INSTANCES=3`."""
        run_dir = Path(os.environ.get("CQRS_RUN_DIR", ROOT / ".run")).resolve()
        saved = run_dir / "stack.json"
        if saved.exists():  # (a stack saved by an older version lacks the later keys)
            defaults = {"monitoring": False, "prometheus_port": 0, "edge_settings": {}, "redis_ports": {}}
            return cls(run_dir=run_dir, **{**defaults, **json.loads(saved.read_text())})
        servers, own = {}, {}
        for server in SERVERS:
            if os.environ.get(server.variable):
                servers[server.variable] = os.environ[server.variable]
            else:
                own[server.name] = env_int(server.port_variable, server.default_port)
                servers[server.variable] = server.url.format(port=own[server.name])
        # Redis's unix socket, for the edge (deploy/edge.lua): the embedded one's, or the one given
        # beside REDIS_URL when Redis runs on this host.
        if "redis" in own and redis_socket(run_dir) is not None:
            servers["EDGE_REDIS_SOCKET"] = str(redis_socket(run_dir))
        elif "redis" not in own and os.environ.get("EDGE_REDIS_SOCKET"):
            servers["EDGE_REDIS_SOCKET"] = os.environ["EDGE_REDIS_SOCKET"]
        # REDIS_TOPOLOGY=sentinel: a primary, a replica and three sentinels of its own, or the
        # sentinels given (REDIS_SENTINELS, with the edge's replica in EDGE_REDIS_URL).
        # REDIS_TOPOLOGY=cluster: six nodes of its own, or the nodes given (REDIS_CLUSTER_NODES).
        redis_ports = {}
        topology = os.environ.get("REDIS_TOPOLOGY", "single")
        if topology in ("sentinel", "cluster"):
            if "redis" in own:
                redis_ports = redis_topology.topology_ports(topology)
                servers.pop("EDGE_REDIS_SOCKET", None)
                servers.update(redis_topology.app_env(run_dir, redis_ports, own["redis"]))
            else:
                given = ("REDIS_TOPOLOGY", "REDIS_SENTINELS", "REDIS_SENTINEL_SERVICE", "EDGE_REDIS_URL")
                given += ("REDIS_CLUSTER_NODES", "EDGE_REDIS_SOCKETS")
                servers.update({name: os.environ[name] for name in given if name in os.environ})
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
            monitoring=os.environ.get("MONITORING", "") == "1",
            prometheus_port=env_int("PROMETHEUS_PORT", 9090),
            servers=servers,
            own_servers=own,
            edge_settings={name: os.environ[name] for name in EDGE_SETTINGS if name in os.environ},
            redis_ports=redis_ports,
        )

    @property
    def inspector_metrics_port(self) -> int:
        return self.metrics_port_base + self.consumers + 1

    @property
    def supervisor(self) -> Supervisor:
        return Supervisor(self.run_dir)

    def save_shape(self) -> None:
        (self.run_dir / "pids").mkdir(parents=True, exist_ok=True)
        (self.run_dir / "stack.json").write_text(json.dumps({name: getattr(self, name) for name in self.SHAPE}))
        (self.run_dir / "servers.env").write_text("".join(f"{k}={v}\n" for k, v in self.servers.items()))

    # --- its programs ----------------------------------------------------------------------------
    def started_servers(self) -> list[Process]:
        """The servers this stack runs: those whose URL the environment did not give at `up`
        (under REDIS_TOPOLOGY=sentinel, Redis is its two nodes)."""
        started = []
        for server in SERVERS:
            if server.name not in self.own_servers:
                continue
            if server.name == "redis" and self.redis_ports:
                started += redis_topology.processes(self.run_dir, self.own_servers["redis"], self.redis_ports)[0]
            else:
                started.append(server.process(self.run_dir, self.own_servers[server.name]))
        return started

    def sentinels(self) -> list[Process]:
        """The sentinels this stack runs (REDIS_TOPOLOGY=sentinel), started once its nodes are."""
        if not self.redis_ports:
            return []
        return redis_topology.processes(self.run_dir, self.own_servers["redis"], self.redis_ports)[1]

    def app_env(self) -> dict:
        env = {**self.servers, "CQRS_RUN_DIR": str(self.run_dir), "PYTHONUNBUFFERED": "1"}
        env["CQRS_TRUSTED_PROXIES"] = os.environ.get("CQRS_TRUSTED_PROXIES", HAPROXY_SOURCE)
        env.update(local_profile(self.own_servers))  # what the stand-ins it runs need
        return env

    def pools(self) -> list[Process]:
        processes = []
        for role, count, base in (
            ("read", self.read_instances, self.read_port_base),
            ("write", self.write_instances, self.write_port_base),
        ):
            for index in range(count):
                port = base + index
                argv = [str(VENV_BIN / "gunicorn"), "-c", str(ROOT / f"deploy/gunicorn_{role}.py"), "cqrs_site.wsgi"]
                env = {
                    **self.app_env(),
                    "GUNICORN_BIND": f"127.0.0.1:{port}",
                    "DJANGO_SETTINGS_MODULE": f"cqrs_site.settings.{role}",
                    # Its workers' metrics, added up by its /metrics.
                    "PROMETHEUS_MULTIPROC_DIR": str(self.run_dir / "metrics" / f"{role}-{index + 1}"),
                }
                processes.append(Process(f"{role}-{index + 1}", argv, self.run_dir, port, env, ready_path="/readyz"))
        return processes

    def workers(self) -> list[Process]:
        """The consumers, the relay and the inspector: manage.py commands, no HTTP."""
        env = {**self.app_env(), "DJANGO_SETTINGS_MODULE": "cqrs_site.settings.consumer"}
        # Static membership (a stable group.instance.id each) unless the broker's profile says no.
        static = {**os.environ, **env}.get("CONSUMER_STATIC_MEMBERSHIP", "1") != "0"
        processes = []
        for index in range(self.consumers):
            name = f"consumer-{index + 1}"
            ready = self.run_dir / "pids" / f"{name}.ready"
            argv = [PYTHON, str(ROOT / "manage.py"), "run_consumer", "cache", "--ready-file", str(ready)]
            own = {"METRICS_PORT": str(self.metrics_port_base + index + 1)}
            if static:
                own["CONSUMER_INSTANCE_ID"] = name
            processes.append(Process(name, argv, self.run_dir, env={**env, **own}, ready_file=ready))
        relay = [PYTHON, str(ROOT / "manage.py"), "run_relay"]
        processes.append(
            Process("relay", relay, self.run_dir, env={**env, "METRICS_PORT": str(self.metrics_port_base)})
        )
        inspector = [PYTHON, str(ROOT / "manage.py"), "run_inspector"]
        port = str(self.metrics_port_base + self.consumers + 1)
        processes.append(Process("inspector", inspector, self.run_dir, env={**env, "METRICS_PORT": port}))
        return processes

    def haproxy(self) -> Process:
        config = self.run_dir / "haproxy.cfg"
        argv = [shutil.which("haproxy") or "/usr/sbin/haproxy", "-db", "-f", str(config)]
        env = {
            "HAPROXY_BIND": f"127.0.0.1:{self.port}",
            "HAPROXY_STATS_BIND": f"127.0.0.1:{self.stats_port}",
            # The edge (deploy/edge.lua) reads the cache as the app does.
            "REDIS_URL": self.servers["REDIS_URL"],
            **{name: self.servers[name] for name in EDGE_REDIS if name in self.servers},
            **self.edge_settings,
        }
        # HAProxy writes its log lines to stdout without blocking and drops those a full pipe
        # refuses (haproxy_process_dropped_logs_total): supervisord, behind on a busy machine,
        # lost request lines that way (measured: 956 of 1,500 into a pipe nobody read). Its
        # stdout is its log file itself, a regular file that never refuses a write.
        return Process("haproxy", argv, self.run_dir, self.port, env=env, writes_own_log=True)

    def write_haproxy_config(self) -> None:
        (self.run_dir / "haproxy.cfg").write_text(
            haproxy_render(
                [
                    f"server read-{i + 1} 127.0.0.1:{self.read_port_base + i} source {HAPROXY_SOURCE}"
                    for i in range(self.read_instances)
                ],
                [
                    f"server write-{i + 1} 127.0.0.1:{self.write_port_base + i} source {HAPROXY_SOURCE}"
                    for i in range(self.write_instances)
                ],
            )
        )

    def api_token_ensure(self) -> None:
        """The API client's token in .run/api-token: kept while its file is there (only its hash is
        in the database, so it cannot be printed again), made anew (--rotate) when it is not."""
        token_file = self.run_dir / "api-token"
        if not token_file.exists():
            token_file.write_text(self.manage("create_api_token", "api-client", "--rotate") + "\n")
            token_file.chmod(0o600)

    def prometheus(self) -> Process:
        """Prometheus (Debian's package), its data and config under the run directory."""
        argv = [
            shutil.which("prometheus") or "/usr/bin/prometheus",
            f"--config.file={self.run_dir / 'prometheus.yml'}",
            f"--storage.tsdb.path={self.run_dir / 'prometheus'}",
            "--storage.tsdb.retention.time=2d",
            f"--web.listen-address=127.0.0.1:{self.prometheus_port}",
        ]
        return Process("prometheus", argv, self.run_dir, self.prometheus_port, ready_path="/-/ready")

    def prometheus_config(self) -> dict:
        """Prometheus's config for this stack: every process's /metrics (the targets file `up`
        writes) and the alert rules. JSON, which Prometheus reads as YAML. PROMETHEUS_INTERVAL
        (default 5s) sets the scrape and rule evaluation interval."""
        interval = os.environ.get("PROMETHEUS_INTERVAL", "5s")
        return {
            "global": {"scrape_interval": interval, "evaluation_interval": interval},
            "rule_files": [str(ROOT / "deploy/alerts.yml")],
            "scrape_configs": [
                {"job_name": "cqrs", "file_sd_configs": [{"files": [str(self.run_dir / "prometheus-targets.json")]}]}
            ],
        }

    def layers(self) -> list[list[Process]]:
        """The programs in start order: servers, then the apps, then HAProxy in front (and
        Prometheus beside it, with MONITORING=1)."""
        front = [self.haproxy(), *([self.prometheus()] if self.monitoring else [])]
        servers = [self.started_servers(), *([self.sentinels()] if self.redis_ports else [])]
        return [*servers, [*self.pools(), *self.workers()], front]

    def all_processes(self) -> list[Program]:
        supervisor = self.supervisor
        programs = []
        for layer in self.layers():
            for process in layer:
                program = Program(**{name: getattr(process, name) for name in Process.__dataclass_fields__})
                program.supervisor = supervisor
                programs.append(program)
        return programs

    def program(self, name: str) -> Program:
        [program] = [p for p in self.all_processes() if p.name == name]
        return program

    # --- commands --------------------------------------------------------------------------------
    def manage(self, *args: str, settings: str = "write") -> str:
        result = subprocess.run(
            [PYTHON, str(ROOT / "manage.py"), *args],
            cwd=ROOT,
            env={**os.environ, **self.app_env(), "DJANGO_SETTINGS_MODULE": f"cqrs_site.settings.{settings}"},
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            raise RuntimeError(f"manage.py {' '.join(args)} failed:\n{result.stdout}{result.stderr}")
        return result.stdout.strip()

    def up(self) -> None:
        """Start the stack; on a running one, start only what is not running (nothing restarts)."""
        supervisor = self.supervisor
        if supervisor.running():
            started = self._start_missing()
            print(f"the stack is running under {self.run_dir}; started {', '.join(started) or 'nothing'}")
            return
        if port_open(self.port):
            raise SystemExit(f"port {self.port} is in use; set PORT to another")
        if self.monitoring and not shutil.which("prometheus"):
            raise SystemExit("MONITORING=1 needs Prometheus: make install MONITORING=1 (Debian's prometheus)")
        self.save_shape()
        self.write_haproxy_config()
        (self.run_dir / "prometheus-targets.json").write_text(json.dumps(self.metrics_targets(), indent=2))
        (self.run_dir / "prometheus.yml").write_text(json.dumps(self.prometheus_config(), indent=2))
        layers = [[self.program(p.name) for p in layer] for layer in self.layers()]
        supervisor.write_config([(p, 10 * (n + 1)) for n, layer in enumerate(layers) for p in layer])
        try:
            supervisor.start_daemon(env=dict(os.environ))
            *servers, apps, front = layers
            if self.redis_ports:
                redis_topology.cluster_reset(self.run_dir)  # (a sentinel topology has no cluster)
            for layer in servers:
                self._start(layer)
            if self.redis_topology == "cluster" and self.redis_ports:  # (not one given by REDIS_CLUSTER_NODES)
                redis_topology.cluster_form(self.own_servers["redis"], self.redis_ports)
            self.manage("migrate", "--noinput")
            self.manage("collectstatic", "--noinput")
            admin = self.manage("ensure_admin_user", "--password-file", str(self.run_dir / "admin-password"))
            self.manage("ensure_indexes")
            self.manage("create_topics")
            self.api_token_ensure()
            self._start(apps)
            self._start(front)
        except BaseException:
            self.down(quiet=True)
            raise
        self.print_summary()
        print(admin)

    def _start(self, programs: list[Program]) -> None:
        """Start these programs, and return once each is ready and supervisor counts it RUNNING
        (up for its startsecs), so that `status` right after `up` shows them all."""
        for program in programs:
            program.start()
        for program in programs:
            program.wait_ready()
        deadline = time.monotonic() + 30
        while any(self.supervisor.info().get(p.name, {}).get("statename") != "RUNNING" for p in programs):
            if time.monotonic() > deadline:
                raise RuntimeError(f"not RUNNING under supervisor: {[p.name for p in programs]}")
            time.sleep(0.1)

    def _start_missing(self) -> list[str]:
        info = self.supervisor.info()
        started = []
        for layer in self.layers():
            missing = [
                self.program(p.name)
                for p in layer
                if info.get(p.name, {}).get("statename") not in ("RUNNING", "STARTING", "BACKOFF")
            ]
            self._start(missing)
            started += [program.name for program in missing]
        return started

    def restart(self, name: str) -> None:
        program = self.program(name)
        program.stop()
        program.start()
        program.wait_ready()
        print(f"restarted {name} (pid {program.pid()})")

    def down(self, quiet: bool = False) -> None:
        # supervisord stops its programs front to back (highest priority first), then itself.
        if self.supervisor.shutdown() and not quiet:
            print(f"stopped the stack under {self.run_dir}")
        for name in ("servers.env", "stack.json", "supervisor.sock"):
            (self.run_dir / name).unlink(missing_ok=True)

    def status(self) -> int:
        info, restarts, down = self.supervisor.info(), self.supervisor.restarts(), 0
        if not info:
            print(f"the stack is not running under {self.run_dir}")
            return 1
        for program in self.all_processes():
            row = info.get(program.name, {})
            pid = row.get("pid") if row.get("statename") == "RUNNING" else None
            where = f"127.0.0.1:{program.port}" if program.port else "-"
            if pid is None:
                state, down = row.get("statename", "UNKNOWN"), down + 1
            elif program.ready_path:
                state = "ready" if program._http_ready() else "NOT READY"
            elif program.ready_file:
                # The consumer writes its PID into the file once the group took it in.
                holder = program.ready_file.read_text().strip() if program.ready_file.exists() else ""
                state = "in group" if holder == str(pid) else "NOT IN GROUP"
            elif program.port:
                state = "listening" if port_open(program.port) else "NOT LISTENING"
            else:
                state = "running"
            restarted = restarts.get(program.name, 0)
            print(f"{program.name:<12} {pid or '-'!s:>8}  {where:<18} {state:<13} restarts {restarted}")
        return 1 if down else 0

    def metrics_targets(self) -> list[dict]:
        """Where each process serves /metrics, as Prometheus file_sd target groups (written to
        <run dir>/prometheus-targets.json, which the Prometheus of MONITORING=1 reads)."""
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
            {"targets": [f"127.0.0.1:{self.inspector_metrics_port}"], "labels": {"job": "inspector"}},
            {"targets": [f"127.0.0.1:{self.stats_port}"], "labels": {"job": "haproxy"}},
        ]

    @property
    def redis_topology(self) -> str:
        return self.servers.get("REDIS_TOPOLOGY", "single")

    def redis_summary(self) -> str:
        if self.redis_topology == "cluster":
            return f"cluster of {self.servers['REDIS_CLUSTER_NODES']}; edge routes by slot"
        if self.redis_topology != "sentinel":
            return self.servers["REDIS_URL"]
        edge = self.servers.get("EDGE_REDIS_URL", "the primary")
        service, sentinels = self.servers["REDIS_SENTINEL_SERVICE"], self.servers["REDIS_SENTINELS"]
        return f"service {service} of sentinels {sentinels}; edge reads {edge}"

    def print_summary(self) -> None:
        print(
            f"""
The stack is up, under supervisor (logs, data and state under {self.run_dir}):
  API (HAProxy)    http://127.0.0.1:{self.port}/api/   GET/HEAD -> read pool, others -> write pool
  admin            http://127.0.0.1:{self.port}/admin/   (staff account below)
  HAProxy stats    http://127.0.0.1:{self.stats_port}/
  read pool        {", ".join(f"127.0.0.1:{self.read_port_base + i}" for i in range(self.read_instances))}
  write pool       {", ".join(f"127.0.0.1:{self.write_port_base + i}" for i in range(self.write_instances))}
  workers          {self.consumers} x run_consumer cache, run_relay, run_inspector
  metrics          /metrics on each pool instance, consumers on {
                ", ".join(str(self.metrics_port_base + i + 1) for i in range(self.consumers))
            }, relay on {self.metrics_port_base}, inspector on {
                self.metrics_port_base + self.consumers + 1
            }, HAProxy on {self.stats_port}
                   (Prometheus targets: {self.run_dir / "prometheus-targets.json"})
{self.monitoring_summary()}
  MongoDB          {self.servers["MONGODB_URI"]}
  Kafka            {self.servers["KAFKA_BOOTSTRAP_SERVERS"]}
  Redis            {self.redis_summary()}
  API token        {self.run_dir / "api-token"}  (send as: Authorization: Token <key>)
supervisor restarts any process that dies: `make status` shows restart counts, `make restart NAME`
restarts one, `make down` stops it all."""
        )

    def monitoring_summary(self) -> str:
        if not self.monitoring:
            return "  Prometheus       off (make up MONITORING=1 starts it, with the alert rules)"
        return f"  Prometheus       http://127.0.0.1:{self.prometheus_port}/alerts  (rules: deploy/alerts.yml)"

    def logs(self) -> None:
        os.execvp("tail", ["tail", "-n", "20", "-F", *map(str, sorted((self.run_dir / "logs").glob("*.log")))])


def main(argv: list[str]) -> int:
    stack = Stack.from_env()
    command = argv[1] if len(argv) > 1 else "status"
    if command == "up":
        if not stack.supervisor.running():
            (stack.run_dir / "stack.json").unlink(missing_ok=True)  # left by an `up` that never came down
            stack = Stack.from_env()
        stack.up()
    elif command == "down":
        stack.down()
    elif command == "status":
        return stack.status()
    elif command == "restart" and len(argv) == 3:
        stack.restart(argv[2])
    elif command == "logs":
        stack.logs()
    elif command == "haproxy-compose":
        print(haproxy_compose(), end="")
    else:
        print("usage: python -m deploy.localstack up|down|status|restart NAME|logs|haproxy-compose", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
