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
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import requests
from requests.adapters import HTTPAdapter

from deploy import localstack, processes

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
PYTHON = sys.executable
# A 600-byte answer for HAProxy's static ceiling, the size of a cached post.
STATIC_BODY = '{"static":"' + "x" * 586 + '"}'
# The consumer scenario's compacting backlog goes round this many posts.
HOT_KEYS = 500
# The backlogs' versions start here.
BACKLOG_BASE_VERSION = 1_000_000
# Most paced calls in flight at once (the visibility scenarios' writes; the mixed scenario's have
# MIXED_WRITE_WORKERS).
PACED_WORKERS = 128
MIXED_WRITE_WORKERS = 256


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


def percentiles(values: list[float]) -> dict:
    ordered = sorted(values)
    if not ordered:
        return {}

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    return {
        "count": len(ordered),
        "p50": at(0.50),
        "p90": at(0.90),
        "p99": at(0.99),
        "max": ordered[-1],
        "mean": statistics.fmean(ordered),
    }


def scrape(address: str) -> dict[str, float]:
    text = requests.get(f"http://{address}/metrics", timeout=5).text
    return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line[:1] != "#"}


class Bench:
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
        }
        for variable in ("MONGODB_URI", "KAFKA_BOOTSTRAP_SERVERS", "REDIS_URL", "EDGE_REDIS_SOCKET", "EDGE_HITS"):
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
            "REDIS_URL": self.env["REDIS_URL"],
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

    def warm(self) -> None:
        self.manage("warm_cache", "--no-progress")

    def flush_posts_from_cache(self) -> int:
        import redis

        from cqrs_site.core.codec import AUXILIARY_SUFFIXES

        client = redis.Redis.from_url(self.env["REDIS_URL"])
        removed = 0
        for keys in _chunks(client.scan_iter(match="bench:post:*", count=2000), 2000):
            keys = [key for key in keys if not key.endswith(AUXILIARY_SUFFIXES)]  # entries, not their fences
            if keys:
                removed += client.delete(*keys)
        return removed

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

    def writes_ceiling(self, kind: str, *, hot: bool = False) -> dict:
        args = [PYTHON, "-m", "bench.writes_ceiling", kind, str(self.args.duration), "16", str(self.ids_file)]
        env = {**self.env, "KAFKA_EVENTS_TOPIC": self.ceiling_topic}
        output = subprocess.run([*args, *(["--hot"] if hot else [])], cwd=ROOT, env=env, capture_output=True, text=True)
        return json.loads(output.stdout.strip().splitlines()[-1])

    def time_wait(self) -> dict:
        """TIME_WAIT sockets to and from Redis: on its side (it closed first) and on the clients'."""
        port = self.env["REDIS_URL"].rsplit(":", 1)[1].split("/")[0]

        def count(selector: str) -> int:
            out = subprocess.run(["ss", "-tan", "state", "time-wait", selector], capture_output=True, text=True).stdout
            return max(0, len(out.splitlines()) - 1)

        return {"redis_side": count(f"( sport = :{port} )"), "client_side": count(f"( dport = :{port} )")}

    # --- scenarios ---------------------------------------------------------------------------
    def scenario_ceiling(self) -> None:
        log("ceilings: bare WSGI function, HAProxy's static answer, raw Redis")
        self.results["scenarios"]["ceiling_wsgi"] = self.wrk("read_posts.lua", self.ceiling_port)
        self.results["scenarios"]["haproxy_static"] = self.wrk("read_posts.lua", self.static_port)
        redis_port = self.env["REDIS_URL"].rsplit(":", 1)[1].split("/")[0]
        output = subprocess.run(
            ["redis-benchmark", "-p", redis_port, "-t", "get", "-n", "200000", "-c", "50", "--csv"],
            capture_output=True,
            text=True,
            timeout=120,
        ).stdout
        row = next(line for line in output.splitlines() if line.startswith('"GET"'))
        fields = [value.strip('"') for value in row.split(",")]
        self.results["scenarios"]["redis_benchmark_get"] = {
            "rps": float(fields[1]),
            "latency_ms": {"mean": float(fields[2]), "p50": float(fields[4]), "p99": float(fields[6])},
            "note": "redis-benchmark -t get -c 50, no pipelining: raw Redis, no HTTP",
        }

    def scenario_hits(self) -> None:
        self.warm()
        transport = "unix socket" if self.env.get("EDGE_REDIS_SOCKET") else "TCP"
        for dist in ("uniform", "zipf"):
            log(f"edge hits ({dist}, Redis over its {transport})")
            before = self.time_wait()
            result = self.wrk("read_posts.lua", self.port, BENCH_DIST=dist)
            result["time_wait"] = {"before": before, "after": self.time_wait()}
            result["redis_transport"] = transport
            self.results["scenarios"][f"edge_hits_{dist}"] = result
        log("edge hits (uniform), Redis over TCP")
        before = self.time_wait()
        result = self.wrk("read_posts.lua", self.edge_tcp_port)
        result["time_wait"] = {"before": before, "after": self.time_wait()}
        self.results["scenarios"]["edge_hits_tcp"] = result
        log("pool hits (uniform): the read pool, the edge off")
        self.results["scenarios"]["pool_hits_uniform"] = self.wrk("read_posts.lua", self.pool_port)
        log("pool hits without request metrics (the cost of observability)")
        self.results["scenarios"]["pool_hits_no_metrics"] = self.wrk("read_posts.lua", self.plain_port)
        log("edge hits (uniform), every hit logged through supervisor (EDGE_HIT_LOG_PERCENT=100)")
        self.results["scenarios"]["edge_hits_all_logged"] = self._with_every_hit_logged(
            lambda port: self.wrk("read_posts.lua", port)
        )

    def _with_every_hit_logged(self, load):
        """load(port) against the stack's HAProxy config with a line for every edge hit, its stdout
        relayed by a supervisord of its own as `make up` relays it (the cost measured is that relay)."""
        from deploy.supervision import Program, Supervisor

        run_dir = self.run_dir / "every-hit-logged"
        run_dir.mkdir(exist_ok=True)
        port = processes.free_port()
        env = {
            **self.stack.haproxy().env,
            "HAPROXY_BIND": f"127.0.0.1:{port}",
            "HAPROXY_STATS_BIND": f"127.0.0.1:{processes.free_port()}",
            "EDGE_HIT_LOG_PERCENT": "100",
        }
        argv = [shutil.which("haproxy") or "/usr/sbin/haproxy", "-db", "-f", str(self.run_dir / "haproxy.cfg")]
        proxy = Program("haproxy", argv, run_dir, port, env=env)
        supervisor = Supervisor(run_dir)
        proxy.supervisor = supervisor
        supervisor.write_config([(proxy, 30)])
        supervisor.start_daemon({k: v for k, v in os.environ.items() if not k.startswith("SUPERVISOR")})
        try:
            proxy.start()
            proxy.wait_ready()
            return load(port)
        finally:
            supervisor.shutdown()

    def scenario_misses(self) -> None:
        passes = []
        for number in range(self.args.miss_passes):
            removed = self.flush_posts_from_cache()
            log(f"misses pass {number + 1}: {removed} cache entries removed")
            passes.append(self.wrk("read_misses.lua", self.port))
        self.results["scenarios"]["misses"] = {
            "passes": passes,
            "rps": statistics.fmean(p["rps"] for p in passes),
            "requests": sum(p["requests"] for p in passes),
            "latency_ms": {q: statistics.fmean(p["latency_ms"][q] for p in passes) for q in passes[0]["latency_ms"]},
            "errors": {k: sum(p["errors"][k] for p in passes) for k in passes[0]["errors"]},
            "x_cache": {k: sum(p["x_cache"][k] for p in passes) for k in ("hit", "miss", "other")},
        }
        self.warm()

    def scenario_feeds(self) -> None:
        log("feeds: a user's posts, the latest, the most liked (cached), and from MongoDB")
        for path in ["/api/posts?order=latest", "/api/posts?order=top"] + [
            f"/api/users/{user}/posts" for user in self.users_file.read_text().split()
        ]:
            requests.get(self.url + path, timeout=30)  # each feed filled once
        self.results["scenarios"]["feed_hits"] = self.wrk("feeds.lua", self.port)
        # Few connections: SecantusDB runs one query at a time, and 0.1-0.5 s each for `latest`
        # and `top` (it sorts the whole collection), so more would only queue behind each other
        # and leave a backlog that holds up the next scenario.
        self.results["scenarios"]["feed_misses"] = self.wrk("feeds.lua", self.port, connections=4, BENCH_FRESH="1")

    def _write(self, post_id: str, n: int) -> tuple[float, int, int]:
        """One write (a like, or every 5th a patch); (seconds, status, version)."""
        started = time.perf_counter()
        if n % 5 == 4:
            answer = self.session.patch(f"{self.url}/api/posts/{post_id}", json={"title": f"Patched {n}"}, timeout=10)
        else:
            answer = self.session.post(f"{self.url}/api/posts/{post_id}/like", timeout=10)
        elapsed = time.perf_counter() - started
        version = answer.json().get("version", 0) if answer.status_code == 200 else 0
        return elapsed, answer.status_code, version

    def _paced(self, rate: float, seconds: float, task, workers: int = PACED_WORKERS) -> tuple[list, list[float]]:
        """Call task(n) at `rate` per second for `seconds` (open loop: a slow answer does not delay
        the next start, up to `workers` calls in flight). Every planned call is made; returns the
        results and each call's start lag behind its plan, in seconds (the client fell behind
        when every worker waited on an answer)."""
        count, started, lags = int(rate * seconds), time.monotonic(), []

        def run(n: int, planned: float):
            lags.append(time.monotonic() - planned)
            return task(n)

        with ThreadPoolExecutor(max_workers=workers) as pool:
            futures = []
            for n in range(count):
                planned = started + n / rate
                delay = planned - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                futures.append(pool.submit(run, n, planned))
            return [future.result() for future in futures], lags

    def settle(self, seconds: float = 60.0) -> float:
        """Wait until HAProxy holds no request for either pool in its queue or in flight (what an
        earlier scenario left behind); returns how long that took."""
        started = time.monotonic()
        stats = f"http://127.0.0.1:{self.env['HAPROXY_STATS_PORT']}/;csv"
        while time.monotonic() - started < seconds:
            rows = requests.get(stats, timeout=5).text.lstrip("# ").splitlines()
            header = rows[0].split(",")
            backends = [
                dict(zip(header, row.split(","), strict=False))
                for row in rows[1:]
                if row.startswith(("write_pool,BACKEND", "read_pool,BACKEND"))
            ]
            if all(backend["qcur"] == "0" and backend["scur"] == "0" for backend in backends):
                break
            time.sleep(0.5)
        return time.monotonic() - started

    def scenario_visibility(self) -> None:
        self.settle()
        rate = self.args.visibility_rate
        log(f"visibility: {rate} writes/s for {self.args.duration}s, then {rate} new posts/s")
        reader = threading.local()
        targets = self.ids[len(self.ids) // 2 :]

        def session():
            if not hasattr(reader, "session"):
                reader.session = requests.Session()
            return reader.session

        def write_then_watch(n: int) -> tuple[float | None, int]:
            post_id = targets[n % len(targets)]
            _elapsed, status, version = self._write(post_id, n)
            answered = time.perf_counter()
            if status != 200:
                return None, status
            while time.perf_counter() - answered < 10:
                seen = session().get(f"{self.url}/api/posts/{post_id}/likes", timeout=5)
                if seen.status_code == 200 and seen.json()["version"] >= version:
                    return (time.perf_counter() - answered) * 1000, status
                time.sleep(0.001)
            return 10_000.0, status

        def create_then_watch(n: int) -> tuple[float | None, int]:
            author = self.users_file.read_text().split()[n % 100]
            body = {"user_id": author, "title": f"New {n}", "content": "Fresh."}
            answer = self.session.post(f"{self.url}/api/posts", json=body, timeout=10)
            answered = time.perf_counter()
            if answer.status_code != 201:
                return None, answer.status_code
            post_id = answer.json()["id"]
            while time.perf_counter() - answered < 10:
                # The latest feed's first page, from Redis: at 100 new posts a second a post stays on a
                # page of 100 for about a second (a keyset cursor above it would read MongoDB instead).
                feeds = [f"/api/users/{author}/posts?limit=5", "/api/posts?order=latest&limit=100"]
                try:
                    if all(post_id in session().get(self.url + path, timeout=5).text for path in feeds):
                        return (time.perf_counter() - answered) * 1000, answer.status_code
                except requests.RequestException:
                    pass  # a slow page is a late one: the deadline decides
                time.sleep(0.001)
            return 10_000.0, answer.status_code

        for name, task in (("visibility", write_then_watch), ("feed_visibility", create_then_watch)):
            outcomes, lags = self._paced(rate, self.args.duration, task)
            delays = [delay for delay, status in outcomes if delay is not None]
            self.results["scenarios"][name] = {
                "rate_per_s": rate,
                "writes": len(outcomes),
                "writes_planned": int(rate * self.args.duration),
                "writes_started_late": sum(1 for lag in lags if lag > LATE_SECONDS),
                "write_errors": sum(1 for delay, _ in outcomes if delay is None),
                "write_statuses": _statuses(status for _, status in outcomes),
                "delay_ms": percentiles(delays),
            }
            self.settle()

    def scenario_writes(self) -> None:
        """Each write kind and its ceiling in turn, --write-rounds times. Likes of random posts are
        measured a third way in each round, before or after the stack's pool in turn: through a
        write instance without the fast path (writes/fastpath.py), Django and DRF answering every
        like; each pool's CPU per write says what the fast path saves. Each pass of likes of one
        post is checked for exact counts (`_hot_exact`)."""
        self.ceiling_topic = "bench.ceiling"
        self.manage(
            "create_topics", env={"KAFKA_EVENTS_TOPIC": self.ceiling_topic, "KAFKA_DEAD_LETTER_TOPIC": "bench.x"}
        )
        pool = self.stack.program("write-1").pid()
        for kind, hot in (("like", False), ("patch", False), ("create", False), ("like", True)):
            name = {"like": "likes", "patch": "patches", "create": "creates"}[kind] + ("_hot" if hot else "")
            apps, ceilings, djangos = [], [], []
            for round_ in range(self.args.write_rounds):
                self.settle()
                log(f"writes: {name}, then the stores' own cost of the same (round {round_ + 1})")
                passes = [(apps, self.port, pool)]
                if kind == "like" and not hot:
                    # In turn first and second: a later pass meets a longer log (README, writes).
                    without = (djangos, self.django_writes_port, self.django_writes.pid())
                    passes = [passes[0], without] if round_ % 2 == 0 else [without, passes[0]]
                for found, port, pid in passes:
                    if found is djangos:
                        log("writes: likes through Django, the write fast path off")
                    counts = self._hot_counts() if hot else None
                    found.append(self._write_pass(port, pid, kind, hot))
                    if hot:
                        found[-1]["exact"] = self._hot_exact(counts)
                ceilings.append(self.writes_ceiling(kind, hot=hot))
            app, ceiling = median_pass(apps), median_pass(ceilings)
            self.results["scenarios"][f"writes_{name}"] = {
                "app": app,
                "ceiling": ceiling,
                "rps": app["rps"],
                "ratio": app["rps"] / ceiling["rps"],
                "rounds": [{"app_rps": a["rps"], "ceiling_rps": c["rps"]} for a, c in zip(apps, ceilings, strict=True)],
            }
            if hot:
                self.results["scenarios"][f"writes_{name}"]["exact"] = [found["exact"] for found in apps]
            if djangos:
                self.results["scenarios"][f"writes_{name}"]["without_fast_path"] = {
                    "median": median_pass(djangos),
                    "rounds": [
                        {
                            "rps": d["rps"],
                            "pool_cpu_ms": d["pool_cpu_ms"],
                            "fast_rps": a["rps"],
                            "fast_cpu_ms": a["pool_cpu_ms"],
                        }
                        for a, d in zip(apps, djangos, strict=True)
                    ],
                }

    def _write_pass(self, port: int, pool_pid: int | None, kind: str, hot: bool) -> dict:
        """One write pass through HAProxy on `port`, with the CPU its write pool (the gunicorn
        master `pool_pid` and its workers) spent per write."""
        before = tree_cpu_seconds(pool_pid)
        found = self.wrk("writes.lua", port, connections=16, BENCH_WRITE=kind, BENCH_HOT="1" if hot else "0")
        writes = found["rps"] * self.args.duration
        found["pool_cpu_ms"] = round((tree_cpu_seconds(pool_pid) - before) * 1000 / writes, 2) if writes else None
        return found

    def _hot_counts(self) -> dict:
        """The hot post's counters in MongoDB and the write pools' count of likes answered 200."""
        import pymongo
        from bson import ObjectId

        with pymongo.MongoClient(self.env["MONGODB_URI"]) as client:
            posts = client.get_database().posts
            stored = posts.find_one({"_id": ObjectId(self.ids[0])}, {"like_count": 1, "version": 1})
        targets = json.loads((self.run_dir / "prometheus-targets.json").read_text())
        pools = [address for group in targets if group["labels"]["job"] == "write-pool" for address in group["targets"]]
        answered = sum(
            value
            for address in pools
            for name, value in scrape(address).items()
            if name.startswith("cqrs_http_requests_total{")
            and 'method="POST"' in name
            and 'status="200"' in name
            and '/like"' in name
        )
        return {"like_count": stored["like_count"], "version": stored["version"], "answered": int(answered)}

    def _hot_exact(self, before: dict, seconds: float = 30.0) -> dict:
        """Whether a pass of likes on one post counted every like it answered, once: in MongoDB
        (its like_count and version rose by the likes the write pool answered 200, those whose
        client was gone by then included), then in the cache, read through the API once the
        consumers have applied the last of them (how long that took is part of the answer)."""
        self.settle()
        after = self._hot_counts()
        answered = after["answered"] - before["answered"]
        counted = after["like_count"] - before["like_count"]
        found = {
            "answered": answered,
            "counted": counted,
            "versions": after["version"] - before["version"],
            "stored": {"like_count": after["like_count"], "version": after["version"]},
            "cache": None,
            "cache_after_s": None,
        }
        started = time.monotonic()
        while time.monotonic() - started < seconds:
            shown = self.session.get(f"{self.url}/api/posts/{self.ids[0]}/likes", timeout=10).json()
            found["cache"] = {"like_count": shown["like_count"], "version": shown["version"]}
            if shown["version"] >= after["version"]:
                found["cache_after_s"] = round(time.monotonic() - started, 3)
                break
            time.sleep(0.05)
        found["met"] = answered == counted == found["versions"] and found["cache"] == found["stored"]
        log(
            f"writes: one post: {answered} likes answered, {counted} counted in MongoDB, which holds "
            f"{found['stored']}, the cache {found['cache']} after {found['cache_after_s']} s: "
            + ("exact" if found["met"] else "NOT EXACT")
        )
        return found

    def scenario_mixed(self) -> None:
        """95% reads and 5% writes at planned total rates, lowest first: every planned write is
        sent (it is counted if it could not be), and the inspector measures the consistency
        meanwhile. Each rate is one row; the rows show where the machine's knee is."""
        rows = []
        for total in self.args.mixed_rates:
            self.settle()
            rows.append(self._mixed_at(total))
        self.results["scenarios"]["mixed"] = {"rates": rows}

    def _mixed_at(self, total: int) -> dict:
        write_rate, read_rate = total * 0.05, total * 0.95
        log(f"mixed: {read_rate:.0f} reads/s and {write_rate:.0f} writes/s planned")
        inspector = f"127.0.0.1:{self.stack.inspector_metrics_port}"

        def judged() -> dict[str, float]:
            metrics = scrape(inspector)
            return {
                outcome: sum(
                    v for k, v in metrics.items() if k.startswith("cqrs_inspector_judged_total") and outcome in k
                )
                for outcome in ('"consistent"', '"stale"')
            }

        before = judged()
        targets = self.ids[: len(self.ids) // 2]
        writes: list = []
        lags: list[float] = []

        def write_paced() -> None:
            done, started_late = self._paced(
                write_rate,
                self.args.duration,
                lambda n: self._write(targets[n % len(targets)], n),
                workers=MIXED_WRITE_WORKERS,
            )
            writes.extend(done)
            lags.extend(started_late)

        writer = threading.Thread(target=write_paced)
        writer.start()
        reads = self.wrk("read_posts.lua", self.port, BENCH_RATE=str(read_rate))
        writer.join()
        time.sleep(2)  # the inspector's second look at what differed (the visibility bound)
        after = judged()
        consistent, stale = (after[k] - before[k] for k in ('"consistent"', '"stale"'))
        latencies = [elapsed * 1000 for elapsed, status, _ in writes if status == 200]
        return {
            "reads": reads,
            "rps": reads["rps"],
            "planned_rate_per_s": total,
            "write_rate_per_s": write_rate,
            "writes": len(writes),
            "writes_planned": int(write_rate * self.args.duration),
            "writes_started_late": sum(1 for lag in lags if lag > LATE_SECONDS),
            "write_errors": sum(1 for _, status, _ in writes if status != 200),
            "write_statuses": _statuses(status for _, status, _ in writes),
            "write_latency_ms": percentiles(latencies),
            "write_share": len(writes) / (len(writes) + reads["requests"]),
            "inspector": {
                "consistent": consistent,
                "stale": stale,
                "consistency": consistent / max(consistent + stale, 1),
            },
        }

    def scenario_consumer(self) -> None:
        """A backlog read by a bare consumer, then applied by run_consumer four ways, each from
        a backlog of its own whose versions are above the one before: every run stores every
        event (one that re-applied the same backlog would only be fenced off, which is cheaper).
        Three backlogs go round every post (the target's case): a partition holds a sixth of the
        posts, so a batch of 5,000 from one partition holds up to three versions of a post, and
        the 50,000 events make 27,100-27,700 documents' cache writes (counted in Redis, 2026-11-28);
        the fourth goes round HOT_KEYS posts only, so a batch holds ten versions of each and makes
        one cache write per post (compaction's case); the fifth goes round every post again with
        the `top` and `latest` feeds cached (read once first): every like then moves its post into
        `top`, a place in a bounded feed beside each post's two entries (a like storm's case)."""
        events = self.args.events
        rounds = 1 + events // len(self.ids)  # versions each backlog over every post spans
        hot_ids = self.run_dir / "backlog-hot-ids.txt"
        hot_ids.write_text("\n".join(self.ids[:HOT_KEYS]) + "\n")
        topics = []
        # Versions far above any the write scenarios gave the posts (a backlog starting at 2 had
        # a share of its events fenced off, which is cheaper than storing them).
        backlogs = [(self.ids_file, BACKLOG_BASE_VERSION + n * rounds) for n in range(3)]
        backlogs.append((hot_ids, BACKLOG_BASE_VERSION + 3 * rounds))
        backlogs.append((self.ids_file, BACKLOG_BASE_VERSION + 4 * rounds))
        for n, (ids_file, base) in enumerate(backlogs):
            topic = f"bench.backlog.{int(time.time())}.{n}"
            log(f"consumer: producing a backlog of {events} events into {topic}")
            self.manage("create_topics", env={"KAFKA_EVENTS_TOPIC": topic, "KAFKA_DEAD_LETTER_TOPIC": topic + ".dlq"})
            self._backlog("produce", topic, str(events), ids_file.as_posix(), str(base))
            topics.append(topic)
        raw = self._backlog("raw", topics[0], str(events))
        log(f"raw consume: {raw['events_per_s']:.0f} events/s; now run_consumer")
        applied = self._backlog("apply", topics[0], str(events))
        quiet = self._backlog("apply", topics[1], str(events), "1", env={"CONSUMER_LOG_EVENTS": "0"})
        two = self._backlog("apply", topics[2], str(events), "2")
        hot = self._backlog("apply", topics[3], str(events))
        for order in ("top", "latest"):
            answer = self.session.get(f"{self.url}/api/posts", params={"order": order, "limit": 1}, timeout=30)
            answer.raise_for_status()
        feeds = self._backlog("apply", topics[4], str(events))
        self.results["scenarios"]["consumer"] = {
            "events": events,
            "raw_consume": raw,
            "run_consumer": applied,
            "run_consumer_without_event_lines": quiet,
            "two_consumers": two,
            "hot_keys": {"posts": min(HOT_KEYS, len(self.ids)), "run_consumer": hot},
            "feeds_cached": {"feeds": ["top", "latest"], "run_consumer": feeds},
            "ratio": applied["events_per_s"] / raw["events_per_s"],
        }

    def _backlog(self, *args: str, env: dict | None = None) -> dict:
        """One step of bench/backlog.py in its own process; its last line of output, as JSON."""
        result = subprocess.run(
            [PYTHON, "-m", "bench.backlog", *args],
            cwd=ROOT,
            env={**self.env, "DJANGO_SETTINGS_MODULE": "cqrs_site.settings.consumer", **(env or {})},
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            raise RuntimeError(f"bench.backlog {args[0]}: {result.stdout}{result.stderr}")
        return json.loads(result.stdout.splitlines()[-1])

    # --- the whole run -----------------------------------------------------------------------
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
            for name in self.args.only or SCENARIOS:
                getattr(self, f"scenario_{name}")()
        finally:
            self.down()
        self.results["total_s"] = round(time.monotonic() - started, 1)
        self.results["targets"] = targets(self.results["scenarios"])
        return self.results


# A paced write that starts this much behind its plan is counted as late (the client had every
# worker waiting on an answer).
LATE_SECONDS = 0.1
SCENARIOS = ["ceiling", "hits", "misses", "feeds", "visibility", "mixed", "writes", "consumer"]


def at_least_one(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def tree_cpu_seconds(pid: int | None) -> float:
    """CPU seconds (user and system) of a process and its children, from /proc (0 if gone)."""
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return 0.0
    own = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return own + sum(tree_cpu_seconds(int(child)) for child in children)


def median_pass(passes: list[dict]) -> dict:
    """Of passes of one load, the one with the median rate (the lower of the middle two)."""
    return sorted(passes, key=lambda found: found["rps"])[(len(passes) - 1) // 2]


def _statuses(codes) -> dict[str, int]:
    counts: dict[str, int] = {}
    for code in codes:
        counts[str(code)] = counts.get(str(code), 0) + 1
    return counts


def _chunks(iterable, size: int):
    chunk = []
    for item in iterable:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def targets(scenarios: dict) -> list[dict]:
    """The issues' targets, as ratios and figures from this run."""
    rows = []
    ceiling, pool, edge = (
        scenarios.get("ceiling_wsgi"),
        scenarios.get("pool_hits_uniform"),
        scenarios.get("edge_hits_uniform"),
    )
    static = scenarios.get("haproxy_static")
    if ceiling and pool:
        rows.append(_target("pool hits / bare-WSGI ceiling", pool["rps"] / ceiling["rps"], ">=", 0.8))
    if edge and pool:
        rows.append(_target("edge hits / pool hits", edge["rps"] / pool["rps"], ">=", 5.0))
    if edge and static:
        rows.append(_target("edge hits / HAProxy's static answer", edge["rps"] / static["rps"], ">=", 0.1))
    if edge:
        rows.append(_target("edge hits p99 (ms)", edge["latency_ms"]["p99"], "<", 10.0))
    misses = scenarios.get("misses")
    if pool and misses:
        rows.append(_target("pool hits / misses", pool["rps"] / misses["rps"], ">=", 3.0))
    feeds = scenarios.get("feed_hits")
    if feeds and pool:
        rows.append(
            _target("feed hits / single-post hits (both by the read pool)", feeds["rps"] / pool["rps"], ">=", 0.5)
        )
    for name, label in (("visibility", "a like"), ("feed_visibility", "a new post in its feeds")):
        found = scenarios.get(name)
        if found and found["delay_ms"]:
            rows.append(
                _target(f"visibility p99 (ms) of {label} at 100 writes/s", found["delay_ms"]["p99"], "<", 100.0)
            )
    for name in ("likes", "patches", "creates"):
        found = scenarios.get(f"writes_{name}")
        if found:
            rows.append(_target(f"{name} / the stores' own cost", found["ratio"], ">=", 0.6))
    hot = scenarios.get("writes_likes_hot")
    if hot and hot.get("exact"):
        exact = sum(1 for found in hot["exact"] if found["met"]) / len(hot["exact"])
        rows.append(_target("likes of one post counted exactly (MongoDB, then the cache): passes", exact, ">=", 1.0))
    for mixed in scenarios.get("mixed", {}).get("rates", []):
        at = f"mixed 95/5 at {mixed['planned_rate_per_s']:,}/s"
        rows.append(_target(f"{at}: planned writes sent", mixed["writes"] / mixed["writes_planned"], ">=", 1.0))
        if mixed["write_latency_ms"]:
            rows.append(_target(f"{at}: write p99 (ms)", mixed["write_latency_ms"]["p99"], "<", 250.0))
        rows.append(_target(f"{at}: the inspector's consistency", mixed["inspector"]["consistency"], ">=", 0.9999))
    consumer = scenarios.get("consumer")
    if consumer:
        rows.append(_target("run_consumer / raw consume", consumer["ratio"], ">=", 0.3))
    return rows


def _target(name: str, value: float, operator: str, goal: float) -> dict:
    met = {">=": value >= goal, "<=": value <= goal, "<": value < goal}[operator]
    return {"target": name, "value": round(value, 4), "goal": f"{operator} {goal}", "met": met}


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
    parser.add_argument("--out", type=Path, default=RESULTS, help="results directory (default bench/results)")
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is missing: `make bench` installs it (apt-get install wrk)")
    results = Bench(args).run()
    from bench.report import write_report

    write_report(results, args.out)
    log(f"done in {results['total_s']} s; results in {args.out}/latest.json, latest.md, *.png")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
