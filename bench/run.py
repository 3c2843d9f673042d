"""`make bench`: the whole stack (deploy/localstack.py, as `make up` starts it) under load on loopback.

Scenarios (all through HAProxy unless stated), each bounded in time:
  ceiling      a bare WSGI function under the read pool's gunicorn config behind the same HAProxy
               config, one Redis GET per request; and redis-benchmark GET (raw Redis)
  hits         GET /api/posts/{id} over N posts, all cached: uniform and Zipf-skewed keys
  misses       the same, each id once, with the cache emptied before each pass
  mixed        reads (wrk) while writes (likes and patches) run at a fixed rate of 5% of requests
  visibility   at 100 writes/s, the time from a write's answer until the read path has its version
  consumer     a backlog of events applied by run_consumer, against a raw consume of the same topic

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

from deploy import localstack, processes

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
PYTHON = sys.executable


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


class Bench:
    def __init__(self, args) -> None:
        self.args = args
        self.run_dir = (ROOT / ".run" / "bench").resolve()
        if self.run_dir.exists():
            shutil.rmtree(self.run_dir)
        self.run_dir.mkdir(parents=True)
        self.port = processes.free_port()
        self.ceiling_port = processes.free_port()
        self.env = {
            **{k: v for k, v in os.environ.items() if k not in ("DJANGO_SETTINGS_MODULE",)},
            "CQRS_RUN_DIR": str(self.run_dir),
            "PORT": str(self.port),
            "HAPROXY_STATS_PORT": str(processes.free_port()),
            "READ_PORT_BASE": str(processes.free_port_block(args.read_instances)),
            "WRITE_PORT_BASE": str(processes.free_port_block(1)),
            "REDIS_PORT": str(processes.free_port()),
            "MONGO_PORT": str(processes.free_port()),
            "KAFKA_PORT": str(processes.free_port()),
            "METRICS_PORT_BASE": str(processes.free_port_block(5)),
            "READ_INSTANCES": str(args.read_instances),
            "WRITE_INSTANCES": "1",
            "CONSUMERS": "2",
            "CACHE_CONSUMER_GROUP": "bench-cache",
            "CQRS_CACHE_PREFIX": "bench",
        }
        for variable in ("MONGODB_URI", "KAFKA_BOOTSTRAP_SERVERS", "REDIS_URL"):
            self.env.pop(variable, None)
        self.url = f"http://127.0.0.1:{self.port}"
        self.extra: list[processes.Process] = []
        self.results: dict = {"scenarios": {}}

    # --- the stack ---------------------------------------------------------------------------
    def up(self) -> None:
        log("starting the stack (deploy/localstack.py up)")
        started = time.monotonic()
        result = subprocess.run([PYTHON, "-m", "deploy.localstack", "up"], cwd=ROOT, env=self.env, text=True)
        if result.returncode != 0:
            raise SystemExit("the stack did not start; see .run/bench/logs/")
        self.results["stack_start_s"] = round(time.monotonic() - started, 1)
        servers = dict(
            line.split("=", 1) for line in (self.run_dir / "servers.env").read_text().splitlines() if "=" in line
        )
        self.env.update(servers)
        self.token = (self.run_dir / "api-token").read_text().strip()
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Token {self.token}"
        self._ceiling_up()

    def _ceiling_up(self) -> None:
        """The bare WSGI function on its own gunicorn instances and its own HAProxy, with the read
        pool's gunicorn config file and the same HAProxy template (the write pool behind it too)."""
        stack = self._stack()
        base = processes.free_port_block(self.args.read_instances)
        for index in range(self.args.read_instances):
            argv = [str(processes.VENV_BIN / "gunicorn"), "-c", str(ROOT / "deploy/gunicorn_read.py")]
            process = processes.Process(
                f"ceiling-{index + 1}",
                [*argv, "bench.ceiling_wsgi"],
                self.run_dir,
                base + index,
                env={**self.env, "GUNICORN_BIND": f"127.0.0.1:{base + index}"},
                ready_path="/readyz",
            )
            self.extra.append(process)
        config = self.run_dir / "haproxy-ceiling.cfg"
        config.write_text(
            localstack.haproxy_render(
                [f"server read-{i + 1} 127.0.0.1:{base + i}" for i in range(self.args.read_instances)],
                [f"server write-1 127.0.0.1:{stack.write_port_base}"],
            )
        )
        argv = [shutil.which("haproxy") or "/usr/sbin/haproxy", "-db", "-f", str(config)]
        haproxy_env = {
            "HAPROXY_BIND": f"127.0.0.1:{self.ceiling_port}",
            "HAPROXY_STATS_BIND": f"127.0.0.1:{processes.free_port()}",
        }
        self.extra.append(processes.Process("haproxy-ceiling", argv, self.run_dir, self.ceiling_port, env=haproxy_env))
        for process in self.extra:
            process.start()
        for process in self.extra:
            process.wait_ready()

    def _stack(self) -> localstack.Stack:
        saved = dict(os.environ)
        os.environ.update(self.env)
        try:
            return localstack.Stack.from_env()
        finally:
            os.environ.clear()
            os.environ.update(saved)

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
        """N posts by 100 users, inserted as the write services store them (version 1, no
        outbox: their creation events are not part of the load), then the cache warmed."""
        import pymongo

        from writes.services import post_document, user_document

        log(f"loading {self.args.posts} posts")
        started = time.monotonic()
        db = pymongo.MongoClient(self.env["MONGODB_URI"]).get_database()
        now = datetime.now(UTC)
        # The services' own document builders, without the outbox events (nothing to publish:
        # the cache is warmed from MongoDB below).
        users = [user_document(username=f"bench{n}", now=now) for n in range(100)]
        db.users.insert_many(users)
        content = "Lorem ipsum dolor sit amet, consectetur adipiscing elit. " * 8
        posts = [
            post_document(author=users[n % 100]["_id"], title=f"Post number {n}", content=content, now=now)
            for n in range(self.args.posts)
        ]
        for start in range(0, len(posts), 1000):
            db.posts.insert_many(posts[start : start + 1000])
        self.ids = [str(p["_id"]) for p in posts]
        random.Random(7).shuffle(self.ids)  # Zipf's hot ids are not the first inserted
        self.ids_file = self.run_dir / "post-ids.txt"
        self.ids_file.write_text("\n".join(self.ids) + "\n")
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

    # --- load generator ----------------------------------------------------------------------
    def wrk(self, script: str, url: str, *, duration: int, connections: int, extra_env: dict | None = None) -> dict:
        threads = self.args.wrk_threads
        command = ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{duration}s", "--latency"]
        command += ["-s", f"bench/scripts/{script}", url]
        env = {**os.environ, "BENCH_IDS": str(self.ids_file), "BENCH_THREADS": str(threads), **(extra_env or {})}
        output = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=duration + 60)
        match = re.search(r"^BENCH-JSON (.*)$", output.stdout, re.M)
        if not match:
            raise RuntimeError(f"wrk gave no summary:\n{output.stdout}\n{output.stderr}")
        result = json.loads(match.group(1))
        result["connections"], result["threads"] = connections, threads
        return result

    # --- scenarios ---------------------------------------------------------------------------
    def scenario_ceiling(self) -> None:
        log("ceiling: bare WSGI function behind HAProxy")
        self.results["scenarios"]["ceiling_wsgi"] = self.wrk(
            "read_posts.lua",
            f"http://127.0.0.1:{self.ceiling_port}",
            duration=self.args.duration,
            connections=self.args.connections,
        )
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
        for dist in ("uniform", "zipf"):
            log(f"hits ({dist})")
            result = self.wrk(
                "read_posts.lua",
                self.url,
                duration=self.args.duration,
                connections=self.args.connections,
                extra_env={"BENCH_DIST": dist},
            )
            self.results["scenarios"][f"hits_{dist}"] = result

    def scenario_misses(self) -> None:
        passes = []
        for number in range(self.args.miss_passes):
            removed = self.flush_posts_from_cache()
            log(f"misses pass {number + 1}: {removed} cache entries removed")
            passes.append(
                self.wrk("read_misses.lua", self.url, duration=self.args.duration, connections=self.args.connections)
            )
        requests_total = sum(p["requests"] for p in passes)
        merged = {
            "passes": passes,
            "rps": statistics.fmean(p["rps"] for p in passes),
            "requests": requests_total,
            "latency_ms": {q: statistics.fmean(p["latency_ms"][q] for p in passes) for q in passes[0]["latency_ms"]},
            "errors": {k: sum(p["errors"][k] for p in passes) for k in passes[0]["errors"]},
            "x_cache": {k: sum(p["x_cache"][k] for p in passes) for k in ("hit", "miss", "other")},
        }
        self.results["scenarios"]["misses"] = merged
        self.warm()

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

    def _paced(self, rate: float, seconds: float, task) -> tuple[list, int]:
        """Call task(n) at `rate` per second for `seconds` (open loop: a slow answer does not delay
        the next start) on up to 128 threads. Returns the results of the calls that started, and
        how many could not start because all threads were waiting on answers (the server fell
        behind); the scenario never outlasts `seconds` plus one request timeout."""
        count = int(rate * seconds)
        started = time.monotonic()
        futures = []
        with ThreadPoolExecutor(max_workers=128) as pool:
            for n in range(count):
                delay = started + n / rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                futures.append(pool.submit(task, n))
            not_started = sum(1 for future in futures if future.cancel())
            return [future.result() for future in futures if not future.cancelled()], not_started

    def scenario_mixed(self) -> None:
        hits = self.results["scenarios"]["hits_uniform"]["rps"]
        write_rate = max(10.0, round(hits * 0.05 / 0.95))
        log(f"mixed: reads at full speed, writes at {write_rate:.0f}/s (5% of the hit throughput)")
        targets = self.ids[: len(self.ids) // 2]  # the visibility scenario writes the other half
        writes: list = []
        skipped: list[int] = []

        def write_paced() -> None:
            done, not_started = self._paced(
                write_rate, self.args.duration, lambda n: self._write(targets[n % len(targets)], n)
            )
            writes.extend(done)
            skipped.append(not_started)

        writer = threading.Thread(target=write_paced)
        writer.start()
        reads = self.wrk("read_posts.lua", self.url, duration=self.args.duration, connections=self.args.connections)
        writer.join()
        latencies = [elapsed * 1000 for elapsed, status, _ in writes if status == 200]
        self.results["scenarios"]["mixed"] = {
            "reads": reads,
            "rps": reads["rps"],
            "write_rate_per_s": write_rate,
            "writes": len(writes),
            "writes_not_started": skipped[0],
            "write_errors": sum(1 for _, status, _ in writes if status != 200),
            "write_statuses": _statuses(status for _, status, _ in writes),
            "write_latency_ms": percentiles(latencies),
            "write_share": len(writes) / (len(writes) + reads["requests"]),
        }

    def settle(self, seconds: float = 60.0) -> float:
        """Wait until HAProxy holds no write in its queue or in flight (a previous scenario may have
        overloaded the write pool); returns how long that took."""
        started = time.monotonic()
        stats = f"http://127.0.0.1:{self.env['HAPROXY_STATS_PORT']}/;csv"
        while time.monotonic() - started < seconds:
            rows = requests.get(stats, timeout=5).text.lstrip("# ").splitlines()
            header = rows[0].split(",")
            backend = next(
                dict(zip(header, row.split(","), strict=False))
                for row in rows[1:]
                if row.startswith("write_pool,BACKEND")
            )
            if backend["qcur"] == "0" and backend["scur"] == "0":
                break
            time.sleep(0.5)
        return time.monotonic() - started

    def scenario_visibility(self) -> None:
        settled = self.settle()
        if settled > 1:
            log(f"waited {settled:.0f} s for the write pool to drain")
        rate = self.args.visibility_rate
        log(f"visibility: {rate} writes/s for {self.args.duration}s")
        reader = threading.local()
        targets = self.ids[len(self.ids) // 2 :]

        def write_then_watch(n: int) -> tuple[float | None, int]:
            post_id = targets[n % len(targets)]
            _elapsed, status, version = self._write(post_id, n)
            answered = time.perf_counter()
            if status != 200:
                return None, status
            if not hasattr(reader, "session"):
                reader.session = requests.Session()
            while time.perf_counter() - answered < 10:
                seen = reader.session.get(f"{self.url}/api/posts/{post_id}/likes", timeout=5)
                if seen.status_code == 200 and seen.json()["version"] >= version:
                    return (time.perf_counter() - answered) * 1000, status
                time.sleep(0.001)
            return 10_000.0, status

        outcomes, not_started = self._paced(rate, self.args.duration, write_then_watch)
        delays = [delay for delay, status in outcomes if delay is not None]
        self.results["scenarios"]["visibility"] = {
            "rate_per_s": rate,
            "writes": len(outcomes),
            "writes_not_started": not_started,
            "write_errors": sum(1 for delay, _ in outcomes if delay is None),
            "write_statuses": _statuses(status for _, status in outcomes),
            "delay_ms": percentiles(delays),
            "note": "from the write's answer to the first GET .../likes (read pool, polled every ~1 ms) "
            "showing its version or a later one",
        }

    def scenario_consumer(self) -> None:
        events = self.args.events
        topic = f"bench.backlog.{int(time.time())}"
        log(f"consumer: producing a backlog of {events} events into {topic}")
        self.manage("create_topics", env={"KAFKA_EVENTS_TOPIC": topic, "KAFKA_DEAD_LETTER_TOPIC": topic + ".dlq"})
        self._backlog("produce", topic, str(events), self.ids_file.as_posix())
        raw = self._backlog("raw", topic, str(events))
        log(f"raw consume: {raw['events_per_s']:.0f} events/s; now run_consumer")
        applied = self._backlog("apply", topic, str(events))
        self.results["scenarios"]["consumer"] = {
            "events": events,
            "raw_consume": raw,
            "run_consumer": applied,
            "ratio": applied["events_per_s"] / raw["events_per_s"],
        }

    def _backlog(self, *args: str) -> dict:
        """One step of bench/backlog.py in its own process; its last line of output, as JSON."""
        result = subprocess.run(
            [PYTHON, "-m", "bench.backlog", *args],
            cwd=ROOT,
            env={**self.env, "DJANGO_SETTINGS_MODULE": "cqrs_site.settings.consumer"},
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
            chosen = self.args.only or ["ceiling", "hits", "misses", "visibility", "mixed", "consumer"]
            for name in chosen:
                getattr(self, f"scenario_{name}")()
        finally:
            self.down()
        self.results["total_s"] = round(time.monotonic() - started, 1)
        self.results["targets"] = targets(self.results["scenarios"])
        return self.results


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
    """The issue's targets, as ratios from this run."""
    rows = []
    ceiling, hits = scenarios.get("ceiling_wsgi"), scenarios.get("hits_uniform")
    if ceiling and hits:
        rows.append(_target("hit throughput / ceiling throughput", hits["rps"] / ceiling["rps"], ">=", 0.8))
        rows.append(
            _target("hit p99 / ceiling p99", hits["latency_ms"]["p99"] / ceiling["latency_ms"]["p99"], "<=", 1.5)
        )
    misses = scenarios.get("misses")
    if hits and misses:
        rows.append(_target("hit throughput / miss throughput", hits["rps"] / misses["rps"], ">=", 3.0))
    visibility = scenarios.get("visibility")
    if visibility and visibility["delay_ms"]:
        rows.append(_target("visibility p99 (ms) at 100 writes/s", visibility["delay_ms"]["p99"], "<", 100.0))
    consumer = scenarios.get("consumer")
    if consumer:
        rows.append(_target("run_consumer / raw consume rate", consumer["ratio"], ">=", 0.7))
    return rows


def _target(name: str, value: float, operator: str, goal: float) -> dict:
    met = {">=": value >= goal, "<=": value <= goal, "<": value < goal}[operator]
    return {"target": name, "value": round(value, 3), "goal": f"{operator} {goal}", "met": met}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--posts", type=int, default=10_000, help="posts loaded and read (default 10,000)")
    parser.add_argument("--duration", type=int, default=10, help="seconds per load pass (default 10)")
    parser.add_argument("--connections", type=int, default=64, help="wrk connections (default 64)")
    parser.add_argument("--wrk-threads", type=int, default=2)
    parser.add_argument("--read-instances", type=int, default=2, help="read pool instances (default 2, as make up)")
    parser.add_argument("--miss-passes", type=int, default=3)
    parser.add_argument("--visibility-rate", type=int, default=100, help="writes per second (default 100)")
    parser.add_argument("--events", type=int, default=50_000, help="consumer backlog (default 50,000)")
    parser.add_argument("--only", nargs="*", choices=["ceiling", "hits", "misses", "mixed", "visibility", "consumer"])
    parser.add_argument("--out", type=Path, default=RESULTS, help="results directory (default bench/results)")
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is missing: `make install` (apt-get install wrk)")
    results = Bench(args).run()
    from bench.report import write_report

    write_report(results, args.out)
    log(f"done in {results['total_s']} s; results in {args.out}/latest.json, latest.md, *.png")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
