"""Start, drive and break a whole stack (deploy/localstack.py) from tests."""

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pymongo
import requests

from cqrs_site.core.codec import value_decode
from deploy import localstack, processes, redis_topology

ROOT = Path(__file__).resolve().parent.parent
SERVER_VARIABLES = ("MONGODB_URI", "KAFKA_BOOTSTRAP_SERVERS", "REDIS_URL", "EDGE_REDIS_SOCKET")


class StackControl:
    """A running stack (deploy/localstack.py) and the means to break and heal its processes."""

    def __init__(self, run_dir: Path, env: dict):
        self.run_dir, self.env = run_dir, env
        self.url = f"http://127.0.0.1:{env['PORT']}"
        self.writer = requests.Session()
        self.writer.headers["Authorization"] = "Token " + (run_dir / "api-token").read_text().strip()
        self.reader = requests.Session()
        self.stats_url = f"http://127.0.0.1:{env['HAPROXY_STATS_PORT']}"
        servers = dict(line.split("=", 1) for line in (run_dir / "servers.env").read_text().splitlines())
        self.mongo = pymongo.MongoClient(servers["MONGODB_URI"], serverSelectionTimeoutMS=3000).get_database()
        self.redis = redis_topology.client_for(servers, socket_timeout=3)
        self.prefix = env["CQRS_CACHE_PREFIX"]
        self._saved: localstack.Stack | None = None
        self._stack()

    def process(self, name: str):
        """One program of the stack (deploy/supervision.py Program: pid, start, stop, log)."""
        return self._stack().program(name)

    def _stack(self) -> localstack.Stack:
        """The stack as `up` saved it, read once: reading it swaps os.environ for a moment, which
        threads of a test (readers, writers) must never see."""
        if self._saved is None:
            with _env(self.env):
                self._saved = localstack.Stack.from_env()
        return self._saved

    def command(self, *args: str) -> subprocess.CompletedProcess:
        """`python -m deploy.localstack ARGS` for this stack (status, …)."""
        return subprocess.run(
            [sys.executable, "-m", "deploy.localstack", *args], cwd=ROOT, env=self.env, capture_output=True, text=True
        )

    def haproxy_servers(self, backend: str) -> dict[str, dict]:
        """Server name -> its row of HAProxy's stats CSV (status, scur, …) in `backend`."""
        rows = requests.get(self.stats_url + "/;csv", timeout=5).text.lstrip("# ").splitlines()
        header = rows[0].split(",")
        servers = {}
        for row in rows[1:]:
            fields = dict(zip(header, row.split(","), strict=False))
            if fields.get("pxname") == backend and fields.get("svname") not in ("FRONTEND", "BACKEND"):
                servers[fields["svname"]] = fields
        return servers

    def haproxy_states(self, backend: str) -> dict[str, str]:
        """Server name -> HAProxy's state (UP, DOWN, DRAIN, …) in `backend`."""
        return {name: row["status"] for name, row in self.haproxy_servers(backend).items()}

    def haproxy_admin(self, backend: str, server: str, action: str) -> None:
        """Set a server's admin state (drain, ready, maint) through the stats page."""
        answer = requests.post(self.stats_url + "/", data={"s": server, "action": action, "b": backend}, timeout=5)
        assert answer.status_code in (200, 303), answer.text[:200]

    def signal(self, name: str, signum: int) -> None:
        processes.signal_group(self.process(name).pid(), signum)

    def kill(self, name: str) -> int:
        """SIGKILL a program's whole process group, as a crash would; returns the dead PID. The
        stack's supervisor starts it again by itself."""
        pid = self.process(name).pid()
        processes.signal_group(pid, signal.SIGKILL)
        while processes.group_alive(pid):
            time.sleep(0.05)
        return pid

    def wait_restarted(self, name: str, dead: int, timeout: float = 30) -> None:
        """Until supervisor runs `name` again under a new PID, then until it is ready. (Between
        the kill and the restart supervisor reports no PID, which wait_ready takes for an exit.)"""
        program = self.process(name)
        deadline = time.monotonic() + timeout
        while program.pid() in (None, dead):
            assert time.monotonic() < deadline, f"{name} not restarted within {timeout} s"
            time.sleep(0.05)
        program.wait_ready()

    def heal(self) -> None:
        """Resume whatever is frozen, start whatever is stopped, and wait until all are ready."""
        for process in self._stack().all_processes():
            pid = process.pid()
            if pid is not None:
                processes.signal_group(pid, signal.SIGCONT)
            else:
                process.start()
        for process in self._stack().all_processes():
            process.wait_ready()
        deadline = time.monotonic() + 20
        while not all(
            state == "UP" for pool in ("read_pool", "write_pool") for state in self.haproxy_states(pool).values()
        ):
            assert time.monotonic() < deadline, "HAProxy does not see every instance up"
            time.sleep(0.2)

    def write_readiness(self) -> dict:
        """write-1's own /readyz (the producer's state: `kafka` up, suspect, stalled, resetting)."""
        try:
            return requests.get(f"http://127.0.0.1:{self.process('write-1').port}/readyz", timeout=2).json()
        except (requests.RequestException, ValueError):
            return {}

    def manage(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        servers = (self.run_dir / "servers.env").read_text().splitlines()
        env = {**self.env, **dict(line.split("=", 1) for line in servers)}
        env["DJANGO_SETTINGS_MODULE"] = "cqrs_site.settings.consumer"
        result = subprocess.run(
            [sys.executable, str(ROOT / "manage.py"), *args], cwd=ROOT, env=env, capture_output=True, text=True
        )
        if check:
            assert result.returncode == 0, result.stdout + result.stderr
        return result

    def consistency(self) -> dict:
        result = self.manage("check_consistency", "--json", "--no-progress", check=False)
        return json.loads(result.stdout.strip().splitlines()[-1])

    def cached_version(self, kind: str, doc_id: str) -> int | None:
        raw = self.redis.get(f"{self.prefix}:{kind}:{{{doc_id}}}")
        return None if raw is None else value_decode(raw)[0]

    def converged(self, kind: str, ids: list[str]) -> bool:
        """Every listed document's cache entry holds MongoDB's version, and no event is pending."""
        collection = self.mongo["posts" if kind == "post" else "users"]
        from bson import ObjectId

        docs = {str(d["_id"]): d for d in collection.find({"_id": {"$in": [ObjectId(i) for i in ids]}})}
        if any(d.get("outbox") for d in docs.values()):
            return False
        return all(self.cached_version(kind, i) == docs[i]["version"] for i in ids)

    def wait_converged(self, kind: str, ids: list[str], timeout: float) -> float:
        """Seconds until converged; fails the test after `timeout`."""
        start = time.monotonic()
        while not self.converged(kind, ids):
            assert time.monotonic() - start < timeout, f"not converged within {timeout}s"
            time.sleep(0.2)
        return time.monotonic() - start

    def posts_in_cache(self, count: int) -> list[str]:
        """Create `count` posts by a new user and wait until the cache holds all of them."""
        ids = self.create_posts(count)
        self.wait_converged("post", ids, 15)
        return ids

    def create_posts(self, count: int) -> list[str]:
        user = self.writer.post(self.url + "/api/users", json={"username": f"f{time.monotonic_ns()}"}).json()
        return [
            self.writer.post(
                self.url + "/api/posts", json={"user_id": user["id"], "title": f"t{i}", "content": "c"}
            ).json()["id"]
            for i in range(count)
        ]


class Background:
    """Threads that run while the `with` block does: `self.stop` is set at its end."""

    def __init__(self, *work) -> None:
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=w) for w in work]

    def __enter__(self):
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for thread in self.threads:
            thread.join(60)


def guarded_thread(work, errors: list, stop: threading.Event) -> threading.Thread:
    """A thread running `work`; if it raises, the error is recorded and `stop` is set: a dead
    thread must fail the test, not thin it out."""

    def run():
        try:
            work()
        except Exception as exc:
            errors.append(repr(exc))
            stop.set()

    return threading.Thread(target=run)


@contextlib.contextmanager
def _env(env: dict):
    """os.environ as the stack's processes see it (no suite server addresses), for a while."""
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def stack_start(run_dir: Path, *, own_servers: bool, group_suffix: str, **overrides: str) -> StackControl:
    """`make up`'s launcher on free ports. With `own_servers`, it starts its own Redis, MongoDB and
    Kafka (to break them); otherwise it uses the suite's."""
    env = dict(os.environ)
    env.pop("DJANGO_SETTINGS_MODULE", None)
    if own_servers:
        for variable in SERVER_VARIABLES:
            env.pop(variable, None)
        env.update({name: str(processes.free_port()) for name in ("REDIS_PORT", "MONGO_PORT", "KAFKA_PORT")})
        if overrides.get("REDIS_TOPOLOGY") == "sentinel":
            env["REDIS_REPLICA_PORT"] = str(processes.free_port())
            env["SENTINEL_PORT_BASE"] = str(processes.free_port_block(len(redis_topology.SENTINELS)))
        if overrides.get("REDIS_TOPOLOGY") == "cluster":
            env["CLUSTER_PORT_BASE"] = str(processes.free_port_block(redis_topology.CLUSTER_PORT_BLOCK))
    read_instances = int(overrides.get("READ_INSTANCES", "2"))
    env.update(
        {
            "CQRS_RUN_DIR": str(run_dir),
            "PORT": str(processes.free_port()),
            "HAPROXY_STATS_PORT": str(processes.free_port()),
            "PROMETHEUS_PORT": str(processes.free_port()),  # used with MONITORING=1
            "READ_PORT_BASE": str(processes.free_port_block(read_instances)),
            "WRITE_PORT_BASE": str(processes.free_port_block(int(overrides.get("WRITE_INSTANCES", "1")))),
            # Every port a test stack opens is a free one, metrics included (`make up` may run beside it).
            "METRICS_PORT_BASE": str(processes.free_port_block(int(overrides.get("CONSUMERS", "2")) + 2)),
            "READ_INSTANCES": str(read_instances),
            "WRITE_INSTANCES": "1",
            "CONSUMERS": "2",
            # Its own group: Tansu strands a member that joins right after two others left.
            "CACHE_CONSUMER_GROUP": os.environ["CACHE_CONSUMER_GROUP"] + group_suffix,
            **overrides,
        }
    )
    up = subprocess.run(
        [sys.executable, "-m", "deploy.localstack", "up"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert up.returncode == 0, up.stdout + up.stderr
    return StackControl(run_dir, env)


def stack_stop(stack: StackControl) -> None:
    """`make down`, then no process the stack started may be left: supervisord, its programs
    and their process groups (a pool's workers)."""
    supervisor = stack._stack().supervisor
    groups = [row["pid"] for row in supervisor.info().values() if row["pid"]]
    daemon = supervisor.pid()
    down = subprocess.run(
        [sys.executable, "-m", "deploy.localstack", "down"], cwd=ROOT, env=stack.env, capture_output=True, text=True
    )
    assert down.returncode == 0, down.stdout + down.stderr
    left = [pid for pid in groups if processes.group_alive(pid)]
    assert not left and (daemon is None or not processes.pid_alive(daemon)), f"left running after down: {left}"
