"""Redis under Sentinel on loopback, for `make up REDIS_TOPOLOGY=sentinel` and the tests: a
primary, a replica and three sentinels (Debian's redis-server and redis-sentinel), each on a
port of its own, started and stopped by supervisor like every other server of the stack.

The app finds the primary through the sentinels (cqrs_site/settings/base.py, REDIS_TOPOLOGY);
HAProxy's edge reads the replica (EDGE_REDIS_URL, EDGE_REDIS_SOCKET), the read replica on its
own host. Each node starts through `python -m deploy.redis_node` (which asks the sentinels
whether it comes back as the primary or as a replica), each sentinel too (which writes its
config on its first start only: a sentinel rewrites it with what it learns, failovers included).
"""

from pathlib import Path

import redis
from redis.sentinel import Sentinel

from .processes import PYTHON, Process, env_int

SERVICE = "cache"
REPLICA = "redis-2"
SENTINELS = ("sentinel-1", "sentinel-2", "sentinel-3")
QUORUM = 2
# A primary that does not answer for this long is down for a sentinel; with two agreeing, they
# promote the replica. At 1 s, on a busy two-core machine, a sentinel found the replica it had
# just promoted down too, and the sentinels failed over again, to the node that had just come
# back: a second, needless loss of writes (measured). Production: 5 s or more.
DOWN_AFTER_MS = 2000
FAILOVER_TIMEOUT_MS = 10000


def topology_ports() -> dict[str, int]:
    """The ports of the replica and the sentinels (the primary's is REDIS_PORT's):
    REDIS_REPLICA_PORT (6381) and SENTINEL_PORT_BASE (26380) on."""
    base = env_int("SENTINEL_PORT_BASE", 26380)
    return {REPLICA: env_int("REDIS_REPLICA_PORT", 6381), **{name: base + i for i, name in enumerate(SENTINELS)}}


def node_socket(run_dir: Path, name: str) -> Path | None:
    """A node's unix socket, for the edge on the same host; None when the path is too long."""
    path = (run_dir / name / "redis.sock").resolve()
    return path if len(str(path)) < 100 else None


def sentinel_list(ports: dict[str, int]) -> str:
    return ",".join(f"127.0.0.1:{ports[name]}" for name in SENTINELS)


def processes(run_dir: Path, primary_port: int, ports: dict[str, int]) -> tuple[list[Process], list[Process]]:
    """The nodes (the seed primary first), then the sentinels: started in that order, a layer
    each, so that on a first start no sentinel yet answers a node (it then takes its seed role)."""
    seed = f"127.0.0.1:{primary_port}"
    nodes = []
    for name, port in (("redis", primary_port), (REPLICA, ports[REPLICA])):
        data = run_dir / name
        argv = [PYTHON, "-m", "deploy.redis_node", "node", "--port", str(port), "--dir", str(data)]
        argv += ["--seed", seed, "--sentinels", sentinel_list(ports), "--service", SERVICE]
        socket = node_socket(run_dir, name)
        if socket is not None:
            argv += ["--socket", str(socket)]
        nodes.append(Process(name, argv, run_dir, port))
    sentinels = []
    for name in SENTINELS:
        argv = [PYTHON, "-m", "deploy.redis_node", "sentinel", "--port", str(ports[name])]
        argv += ["--dir", str(run_dir / name), "--seed", seed, "--service", SERVICE, "--quorum", str(QUORUM)]
        argv += ["--down-after-ms", str(DOWN_AFTER_MS), "--failover-timeout-ms", str(FAILOVER_TIMEOUT_MS)]
        sentinels.append(Process(name, argv, run_dir, ports[name]))
    return nodes, sentinels


def app_env(run_dir: Path, ports: dict[str, int]) -> dict[str, str]:
    """What the app and the edge need to use this topology."""
    env = {
        "REDIS_TOPOLOGY": "sentinel",
        "REDIS_URL": f"redis://{SERVICE}/0",
        "REDIS_SENTINELS": sentinel_list(ports),
        "REDIS_SENTINEL_SERVICE": SERVICE,
        "EDGE_REDIS_URL": f"redis://127.0.0.1:{ports[REPLICA]}/0",
    }
    socket = node_socket(run_dir, REPLICA)
    if socket is not None:
        env["EDGE_REDIS_SOCKET"] = str(socket)
    return env


def client_for(servers: dict, **kwargs) -> redis.Redis:
    """A client of the cache's primary, as the app reaches it (tests, the bench)."""
    if servers.get("REDIS_TOPOLOGY") != "sentinel":
        return redis.Redis.from_url(servers["REDIS_URL"], **kwargs)
    addresses = (address.rpartition(":") for address in servers["REDIS_SENTINELS"].split(","))
    sentinels = [(host, int(port)) for host, _, port in addresses]
    sentinel = Sentinel(sentinels, sentinel_kwargs={"socket_timeout": 0.5}, **kwargs)
    return sentinel.master_for(servers.get("REDIS_SENTINEL_SERVICE", SERVICE))
