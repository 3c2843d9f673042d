"""`make bench`: the whole stack (deploy/localstack.py, as `make up` starts it) under load on
loopback, every scenario beside its yardstick from the same run. Each scenario is bounded in time.

Reads (through HAProxy):
  ceiling        a bare WSGI function (one Redis GET) under the read pool's gunicorn config,
                 HAProxy's own static answer, and redis-benchmark GET (raw Redis)
  hits           GET /api/posts/{id}, all cached: answered at the edge (HAProxy + Redis), and by
                 the read pool (a second HAProxy, EDGE_HITS=0); TIME_WAIT sockets counted;
                 edge hits with an access log line for each (EDGE_HIT_LOG_PERCENT=100)
  misses         each id once, the cache emptied before each pass
  feeds          pages of a user's posts, the latest and the most liked: cached, and from MongoDB
  visibility     at 100 writes/s, from a write's answer until the read path shows it: a like
                 (GET …/likes) and a new post (its author's feed and the latest)
Writes (through HAProxy, 16 connections), each beside the stores' own cost of the same work
at the same concurrency (bench/writes_ceiling.py): likes, patches, creates, likes of one post;
  each pair measured in turn --write-rounds times (single passes on this VM vary by half), the
  median pass of each compared.
Mixed: reads and writes 95/5 at a planned total rate; every planned write sent; the
  inspector's measured consistency over the run.
Consumer: a backlog applied by run_consumer (also without its event lines, two of them, round
  a few posts only, and with the feeds cached; each run with a backlog of its own whose every
  event is stored), against a raw consume of the first.
Observability: pool hits with the request metrics off, beside the same hits with them on.

Writes bench/results/latest.json, latest.md and PNG plots. `python -m bench.run --help`.
"""

import argparse
import json
import os
import platform
import random
import re
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import requests
from requests.adapters import HTTPAdapter

from deploy import localstack, processes, redis_topology

from .common import (
    MIXED_WRITE_WORKERS,
    PACED_WORKERS,
    PYTHON,
    RESULTS,
    ROOT,
    STATIC_BODY,
    at_least_one,
    log,
)
from .consumer import ConsumerScenarios
from .reads import ReadScenarios
from .report import targets, write_report
from .topologies import add_topology_arguments, run_topologies
from .writes import WriteScenarios

# What the bench's stack must not take from the environment: it starts its own servers.
SERVER_VARIABLES = ("MONGODB_URI", "KAFKA_BOOTSTRAP_SERVERS", "REDIS_URL", "EDGE_REDIS_SOCKET", "EDGE_REDIS_URL")
SERVER_VARIABLES += ("EDGE_HITS",)


class Bench(ReadScenarios, WriteScenarios, ConsumerScenarios):
    """The stack, its load and the results; the scenarios are its families'."""

    def __init__(self, args) -> None:
        self.args = args
        self.run_dir = (ROOT / ".run" / "bench").resolve()
        if self.run_dir.exists():
            shutil.rmtree(self.run_dir)
        self.run_dir.mkdir(parents=True)
        self.port = processes.free_port()
        self.env = {
            **{k: v for k, v in os.environ.items() if k not in ("DJANGO_SETTINGS_MODULE",)},
            "CQRS_RUN_DIR": str(self.run_dir),
            "PORT": str(self.port),
            "HAPROXY_STATS_PORT": str(processes.free_port()),
            "READ_PORT_BASE": str(processes.free_port_block(args.read_instances)),
            "WRITE_PORT_BASE": str(processes.free_port_block(1)),
            "METRICS_PORT_BASE": str(processes.free_port_block(5)),
            "REDIS_PORT": str(processes.free_port()),
            "MONGO_PORT": str(processes.free_port()),
            "KAFKA_PORT": str(processes.free_port()),
            "READ_INSTANCES": str(args.read_instances),
            "WRITE_INSTANCES": "1",
            "CONSUMERS": "2",
            "CACHE_CONSUMER_GROUP": "bench-cache",
            "CQRS_CACHE_PREFIX": "bench",
            # The write scenarios measure throughput, not the per-token limit (6,000 a minute by
            # default), which writes at 300/s would reach within a scenario or two.
            "CQRS_WRITES_PER_MINUTE": "0",
            # --redis-topology sentinel: a primary, a replica (the edge's) and three sentinels;
            # cluster: six nodes, three primaries with a replica each.
            "REDIS_TOPOLOGY": args.redis_topology,
            "REDIS_REPLICA_PORT": str(processes.free_port()),
            "SENTINEL_PORT_BASE": str(processes.free_port_block(3)),
            "CLUSTER_PORT_BASE": str(processes.free_port_block(redis_topology.CLUSTER_PORT_BLOCK)),
        }
        for variable in SERVER_VARIABLES:
            self.env.pop(variable, None)
        self.url = f"http://127.0.0.1:{self.port}"
        self.extra: list[processes.Process] = []
        self.results: dict = {"scenarios": {}}

    # --- the stack and its yardsticks -------------------------------------------------------------
    def up(self) -> None:
        log("starting the stack (deploy/localstack.py up)")
        started = time.monotonic()
        result = subprocess.run([PYTHON, "-m", "deploy.localstack", "up"], cwd=ROOT, env=self.env, text=True)
        if result.returncode != 0:
            raise SystemExit("the stack did not start; see .run/bench/logs/")
        self.results["stack_start_s"] = round(time.monotonic() - started, 1)
        self.env.update(
            line.split("=", 1) for line in (self.run_dir / "servers.env").read_text().splitlines() if "=" in line
        )
        self.stack = self._stack()
        self.token_file = self.run_dir / "api-token"
        self.session = requests.Session()
        # As many kept connections as _paced has workers at most: with requests' default of 10,
        # every write beyond 10 in flight opened a connection and dropped it after (urllib3
        # warned "Connection pool is full" through the mixed scenario; with 128, in an hour slow
        # enough for more than 128 of the mixed scenario's writes to be in flight at once).
        self.session.mount("http://", HTTPAdapter(pool_maxsize=max(PACED_WORKERS, MIXED_WRITE_WORKERS)))
        self.session.headers["Authorization"] = f"Token {self.token_file.read_text().strip()}"
        self._yardsticks_up()

    def _stack(self) -> localstack.Stack:
        saved = dict(os.environ)
        os.environ.update(self.env)
        try:
            return localstack.Stack.from_env()
        finally:
            os.environ.clear()
            os.environ.update(saved)

    def _haproxy(
        self,
        name: str,
        read_ports: list[int],
        *,
        write_port: int | None = None,
        config: str | None = None,
        edge_tcp: bool = False,
    ) -> tuple[int, processes.Process]:
        """Another HAProxy on the same template, the edge off (or on over TCP, not the unix
        socket): in front of `read_ports` and the stack's write pool (or `write_port`), or with a
        config of its own."""
        port = processes.free_port()
        path = self.run_dir / f"{name}.cfg"
        path.write_text(
            config
            or localstack.haproxy_render(
                [f"server read-{i + 1} 127.0.0.1:{p}" for i, p in enumerate(read_ports)],
                [f"server write-1 127.0.0.1:{write_port or self.stack.write_port_base}"],
            )
        )
        argv = [shutil.which("haproxy") or "/usr/sbin/haproxy", "-db", "-f", str(path)]
        env = {
            "HAPROXY_BIND": f"127.0.0.1:{port}",
            "HAPROXY_STATS_BIND": f"127.0.0.1:{processes.free_port()}",
            "EDGE_HITS": "1" if edge_tcp else "0",
            "REDIS_URL": self.env.get("EDGE_REDIS_URL", self.env["REDIS_URL"]),
            "CQRS_CACHE_PREFIX": "bench",
        }
        return port, processes.Process(name, argv, self.run_dir, port, env=env)

    def _yardsticks_up(self) -> None:
        """The bare WSGI ceiling behind its own HAProxy; the read pool behind an HAProxy without
        the edge; read instances without request metrics; a write instance without its fast path
        (every like through Django and DRF), behind an HAProxy of its own; HAProxy's static answer."""
        count = self.args.read_instances
        ceiling, plain = processes.free_port_block(count), processes.free_port_block(count)
        self.django_writes = self._app(
            "write-django", "cqrs_site.wsgi", processes.free_port(), role="write", CQRS_WRITE_FAST_PATH="0"
        )
        self.extra.append(self.django_writes)
        self.django_writes_port, proxy = self._haproxy(
            "haproxy-write-django", [self.stack.read_port_base], write_port=self.django_writes.port
        )
        self.extra.append(proxy)
        for index in range(count):
            self.extra.append(self._app(f"ceiling-{index + 1}", "bench.ceiling_wsgi", ceiling + index))
            self.extra.append(
                self._app(f"plain-{index + 1}", "cqrs_site.wsgi", plain + index, CQRS_REQUEST_METRICS="0")
            )
        self.ceiling_port, proxy = self._haproxy("haproxy-ceiling", [ceiling + i for i in range(count)])
        self.extra.append(proxy)
        self.pool_port, proxy = self._haproxy("haproxy-pool", [self.stack.read_port_base + i for i in range(count)])
        self.extra.append(proxy)
        self.plain_port, proxy = self._haproxy("haproxy-plain", [plain + i for i in range(count)])
        self.extra.append(proxy)
        pool_ports = [self.stack.read_port_base + i for i in range(count)]
        self.edge_tcp_port, proxy = self._haproxy("haproxy-edge-tcp", pool_ports, edge_tcp=True)
        self.extra.append(proxy)
        static = (
            "global\n    maxconn 4096\ndefaults\n    mode http\n    timeout client 30s\n    timeout connect 2s\n"
            '    timeout server 30s\nfrontend static\n    bind "${HAPROXY_BIND}"\n'
            f"    http-request return status 200 content-type application/json string '{STATIC_BODY}'\n"
        )
        self.static_port, proxy = self._haproxy("haproxy-static", [], config=static)
        self.extra.append(proxy)
        for process in self.extra:
            process.start()
        for process in self.extra:
            process.wait_ready()

    def _app(self, name: str, app: str, port: int, *, role: str = "read", **extra_env) -> processes.Process:
        argv = [str(processes.VENV_BIN / "gunicorn"), "-c", str(ROOT / f"deploy/gunicorn_{role}.py"), app]
        env = {
            **self.env,
            "GUNICORN_BIND": f"127.0.0.1:{port}",
            "DJANGO_SETTINGS_MODULE": f"cqrs_site.settings.{role}",
            "PROMETHEUS_MULTIPROC_DIR": str(self.run_dir / "metrics" / name),
            **extra_env,
        }
        return processes.Process(name, argv, self.run_dir, port, env=env, ready_path="/readyz")

    def down(self) -> None:
        for process in reversed(self.extra):
            process.stop()
        subprocess.run([PYTHON, "-m", "deploy.localstack", "down"], cwd=ROOT, env=self.env, capture_output=True)
        log("stack stopped")

    def manage(self, *args: str, settings: str = "write", env: dict | None = None) -> str:
        result = subprocess.run(
            [PYTHON, "manage.py", *args],
            cwd=ROOT,
            env={**self.env, "DJANGO_SETTINGS_MODULE": f"cqrs_site.settings.{settings}", **(env or {})},
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            raise RuntimeError(f"manage.py {' '.join(args)}: {result.stdout}{result.stderr}")
        return result.stdout

    # --- data --------------------------------------------------------------------------------
    def load(self) -> None:
        """N posts by 100 users, inserted as the write services store them (version 1, no outbox:
        their creation events are not part of the load), a copy of them for the writes' ceiling,
        then the cache warmed."""
        import django
        import pymongo

        # The document builders live with the write services, which need Django's settings loaded.
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cqrs_site.settings.consumer")
        django.setup()
        from writes.services import post_document, user_document

        log(f"loading {self.args.posts} posts")
        started = time.monotonic()
        db = pymongo.MongoClient(self.env["MONGODB_URI"]).get_database()
        now = datetime.now(UTC)
        users = [user_document(username=f"bench{n}", now=now) for n in range(100)]
        db.users.insert_many(users)
        content = "Lorem ipsum dolor sit amet, consectetur adipiscing elit. " * 8
        posts = [
            post_document(author=users[n % 100]["_id"], title=f"Post number {n}", content=content, now=now)
            for n in range(self.args.posts)
        ]
        for start in range(0, len(posts), 1000):
            db.posts.insert_many(posts[start : start + 1000])
            db.ceiling_posts.insert_many(posts[start : start + 1000])
        # The writes' ceiling (bench/writes_ceiling.py) updates this copy: the same documents
        # and the same indexes (each write keeps them up to date), outside the stack's view.
        for name, index in db.posts.index_information().items():
            if name != "_id_":
                db.ceiling_posts.create_index(index["key"], name=name)
        self.ids = [str(p["_id"]) for p in posts]
        random.Random(7).shuffle(self.ids)  # Zipf's hot ids are not the first inserted
        self.ids_file = self.run_dir / "post-ids.txt"
        self.ids_file.write_text("\n".join(self.ids) + "\n")
        self.users_file = self.run_dir / "user-ids.txt"
        self.users_file.write_text("\n".join(str(u["_id"]) for u in users) + "\n")
        self.author = str(users[0]["_id"])
        self.results["load_s"] = round(time.monotonic() - started, 1)
        self.warm()

    def cache_memory(self) -> dict:
        """Redis's memory once every post is loaded and cached: the sizing guide's bytes per post."""
        client = self.redis()
        used = client.info("memory")["used_memory"]
        return {"posts": len(self.ids), "keys": client.dbsize(), "used_memory": used, "per_post": used // len(self.ids)}

    def warm(self) -> None:
        self.manage("warm_cache", "--no-progress")

    # --- load generators ---------------------------------------------------------------------
    def wrk(
        self, script: str, port: int, *, connections: int | None = None, duration: int | None = None, **env
    ) -> dict:
        threads, connections = self.args.wrk_threads, connections or self.args.connections
        duration = duration or self.args.duration
        command = ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{duration}s", "--latency"]
        command += ["-s", f"bench/scripts/{script}", f"http://127.0.0.1:{port}"]
        env = {
            **os.environ,
            "BENCH_IDS": str(self.ids_file),
            "BENCH_USERS": str(self.users_file),
            "BENCH_TOKEN_FILE": str(self.token_file),
            "BENCH_AUTHOR": self.author,
            "BENCH_THREADS": str(threads),
            "BENCH_CONNECTIONS": str(connections),
            **env,
        }
        output = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=duration + 60)
        match = re.search(r"^BENCH-JSON (.*)$", output.stdout, re.M)
        if not match:
            raise RuntimeError(f"wrk gave no summary:\n{output.stdout}\n{output.stderr}")
        result = json.loads(match.group(1))
        result["connections"], result["threads"] = connections, threads
        return result

    # --- scenarios ---------------------------------------------------------------------------

    def run(self) -> dict:
        started = time.monotonic()
        self.results.update(
            {
                "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
                "machine": {
                    "cpus": os.cpu_count(),
                    "python": platform.python_version(),
                    "platform": platform.platform(),
                },
                "settings": {k: v for k, v in vars(self.args).items() if k not in ("only", "out")},
            }
        )
        try:
            self.up()
            self.load()
            self.results["cache_memory"] = self.cache_memory()
            for name in self.args.only or SCENARIOS:
                getattr(self, f"scenario_{name}")()
        finally:
            self.down()
        self.results["total_s"] = round(time.monotonic() - started, 1)
        self.results["targets"] = targets(self.results["scenarios"])
        return self.results


SCENARIOS = ["ceiling", "hits", "misses", "feeds", "visibility", "mixed", "writes", "consumer"]


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--posts", type=int, default=10_000, help="posts loaded and read (default 10,000)")
    parser.add_argument("--duration", type=int, default=10, help="seconds per load pass (default 10)")
    parser.add_argument(
        "--connections", type=int, default=32, help="wrk connections for reads (default 32, as the issues measured)"
    )
    parser.add_argument("--wrk-threads", type=int, default=2)
    parser.add_argument("--read-instances", type=int, default=2, help="read pool instances (default 2, as make up)")
    parser.add_argument("--miss-passes", type=int, default=3)
    parser.add_argument("--visibility-rate", type=int, default=100, help="writes per second (default 100)")
    parser.add_argument(
        "--mixed-rates",
        type=lambda text: [int(rate) for rate in text.split(",")],
        default=[1000, 1500, 2000],
        help="mixed 95/5: planned requests per second, one pass each (default 1000,1500,2000)",
    )
    parser.add_argument(
        "--write-rounds",
        type=at_least_one,
        default=3,
        help="passes of each write scenario, each followed by its ceiling; the medians are compared (default 3)",
    )
    parser.add_argument("--events", type=int, default=50_000, help="consumer backlog (default 50,000)")
    parser.add_argument("--only", nargs="*", choices=SCENARIOS)
    add_topology_arguments(parser)
    parser.add_argument("--out", type=Path, default=RESULTS, help="results directory (default bench/results)")
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is missing: `make bench` installs it (apt-get install wrk)")
    results = run_topologies(Bench, args, SCENARIOS)
    write_report(results, args.out)
    log(f"done in {results['total_s']} s; results in {args.out}/latest.json, latest.md, *.png")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
