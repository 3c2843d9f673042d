"""Write scenarios: visibility, writes beside the stores' own cost, mixed 95/5."""

import json
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import requests

from .common import (
    LATE_SECONDS,
    MIXED_WRITE_WORKERS,
    PACED_WORKERS,
    PYTHON,
    ROOT,
    log,
    median_pass,
    percentiles,
    scrape,
    statuses,
    tree_cpu_seconds,
)


class WriteScenarios:
    """Scenarios of bench.run.Bench (its stack, wrk and results)."""

    def writes_ceiling(self, kind: str, *, hot: bool = False) -> dict:
        args = [PYTHON, "-m", "bench.writes_ceiling", kind, str(self.args.duration), "16", str(self.ids_file)]
        env = {**self.env, "KAFKA_EVENTS_TOPIC": self.ceiling_topic}
        output = subprocess.run([*args, *(["--hot"] if hot else [])], cwd=ROOT, env=env, capture_output=True, text=True)
        return json.loads(output.stdout.strip().splitlines()[-1])

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
                "write_statuses": statuses(status for _, status in outcomes),
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
                    # In turn first and second: a later pass meets a longer log (docs/stand-ins.md, Tansu).
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
            "write_statuses": statuses(status for _, status, _ in writes),
            "write_latency_ms": percentiles(latencies),
            "write_share": len(writes) / (len(writes) + reads["requests"]),
            "inspector": {
                "consistent": consistent,
                "stale": stale,
                "consistency": consistent / max(consistent + stale, 1),
            },
        }
