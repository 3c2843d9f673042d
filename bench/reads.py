"""Read scenarios: the ceilings, edge and pool hits, misses, feed pages."""

import os
import shutil
import statistics
import subprocess

import requests

from deploy import processes

from .common import (
    chunks,
    log,
)


class ReadScenarios:
    """Scenarios of bench.run.Bench (its stack, wrk and results)."""

    def redis(self):
        """A client of the cache's primary (through the sentinels under --redis-topology sentinel)."""
        from deploy.redis_topology import client_for

        return client_for(self.env)

    def redis_port(self) -> str:
        """The port of the Redis the stack started first (the primary: the bench fails nothing over)."""
        return str(self.stack.own_servers["redis"])

    def flush_posts_from_cache(self) -> int:
        from cqrs_site.core.codec import AUXILIARY_SUFFIXES

        client = self.redis()
        removed = 0
        for keys in chunks(client.scan_iter(match="bench:post:*", count=2000), 2000):
            keys = [key for key in keys if not key.endswith(AUXILIARY_SUFFIXES)]  # entries, not their fences
            if keys:
                removed += client.delete(*keys)
        return removed

    def time_wait(self) -> dict:
        """TIME_WAIT sockets to and from Redis: on its side (it closed first) and on the clients'."""
        port = self.redis_port()

        def count(selector: str) -> int:
            out = subprocess.run(["ss", "-tan", "state", "time-wait", selector], capture_output=True, text=True).stdout
            return max(0, len(out.splitlines()) - 1)

        return {"redis_side": count(f"( sport = :{port} )"), "client_side": count(f"( dport = :{port} )")}

    def scenario_ceiling(self) -> None:
        log("ceilings: bare WSGI function, HAProxy's static answer, raw Redis")
        self.results["scenarios"]["ceiling_wsgi"] = self.wrk("read_posts.lua", self.ceiling_port)
        self.results["scenarios"]["haproxy_static"] = self.wrk("read_posts.lua", self.static_port)
        redis_port = self.redis_port()
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
        log("edge hits (uniform), every hit logged (EDGE_HIT_LOG_PERCENT=100)")
        self.results["scenarios"]["edge_hits_all_logged"] = self._with_every_hit_logged(
            lambda port: self.wrk("read_posts.lua", port)
        )

    def _with_every_hit_logged(self, load):
        """load(port) against the stack's HAProxy config with a line for every edge hit, under a
        supervisord of its own, writing to its log file as `make up`'s does."""
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
        proxy = Program("haproxy", argv, run_dir, port, env=env, writes_own_log=True)
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
