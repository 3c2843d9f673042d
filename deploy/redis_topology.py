"""Redis under Sentinel, or as a Redis Cluster, on loopback, for `make up REDIS_TOPOLOGY=…` and
the tests (Debian's redis-server and redis-sentinel), each node on ports of its own, started and
stopped by supervisor like every other server of the stack.

Sentinel: a primary, a replica and three sentinels.

The app finds the primary through the sentinels (cqrs_site/settings/base.py, REDIS_TOPOLOGY);
HAProxy's edge reads the replica (EDGE_REDIS_URL, EDGE_REDIS_SOCKET), the read replica on its
own host. Each node starts through `python -m deploy.redis_node` (which asks the sentinels
whether it comes back as the primary or as a replica), each sentinel too (which writes its
config on its first start only: a sentinel rewrites it with what it learns, failovers included).

Cluster: six nodes, three primaries with a replica each (`redis-cli --cluster create`, once the
six answer: `form`). The app reaches it through REDIS_CLUSTER_NODES (redis-py's RedisCluster);
HAProxy's edge routes each hit by the key's slot (deploy/edge.lua).
"""

import subprocess
import time
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


# Cluster: the seed node is `redis` (REDIS_PORT), the others these; each node has a bus port too.
CLUSTER_NODES = ("redis", "redis-2", "redis-3", "redis-4", "redis-5", "redis-6")
# A primary that does not answer its peers for this long is failed over to its replica.
CLUSTER_NODE_TIMEOUT_MS = 2000
# CLUSTER_PORT_BASE's block: the five other nodes' ports, then at +10 the six bus ports.
CLUSTER_PORT_BLOCK = 16


def topology_ports(topology: str = "sentinel") -> dict[str, int]:
    """Sentinel: the ports of the replica and the sentinels (the primary's is REDIS_PORT's),
    REDIS_REPLICA_PORT (6381) and SENTINEL_PORT_BASE (26380) on. Cluster: the five other nodes'
    and every node's bus port (`<name>-bus`), from CLUSTER_PORT_BASE (7001)."""
    if topology == "cluster":
        base = env_int("CLUSTER_PORT_BASE", 7001)
        ports = {name: base + i for i, name in enumerate(CLUSTER_NODES[1:])}
        return {**ports, **{f"{name}-bus": base + 10 + i for i, name in enumerate(CLUSTER_NODES)}}
    base = env_int("SENTINEL_PORT_BASE", 26380)
    return {REPLICA: env_int("REDIS_REPLICA_PORT", 6381), **{name: base + i for i, name in enumerate(SENTINELS)}}


def topology_of(ports: dict[str, int]) -> str:
    """The topology a set of topology_ports is for."""
    return "cluster" if "redis-bus" in ports else "sentinel"


def cluster_addresses(primary_port: int, ports: dict[str, int]) -> list[str]:
    return [f"127.0.0.1:{primary_port}", *(f"127.0.0.1:{ports[name]}" for name in CLUSTER_NODES[1:])]


def cluster_processes(run_dir: Path, primary_port: int, ports: dict[str, int]) -> list[Process]:
    peers = ",".join(cluster_addresses(primary_port, ports))
    nodes = []
    for name in CLUSTER_NODES:
        port = primary_port if name == "redis" else ports[name]
        argv = [PYTHON, "-m", "deploy.redis_node", "cluster-node", "--port", str(port), "--dir", str(run_dir / name)]
        argv += ["--bus-port", str(ports[f"{name}-bus"]), "--peers", peers]
        argv += ["--node-timeout-ms", str(CLUSTER_NODE_TIMEOUT_MS)]
        socket = node_socket(run_dir, name)
        if socket is not None:
            argv += ["--socket", str(socket)]
        nodes.append(Process(name, argv, run_dir, port))
    return nodes


def cluster_reset(run_dir: Path) -> None:
    """Forget a cluster an earlier `up` formed here (a fresh stack forms a new one)."""
    for name in CLUSTER_NODES:
        (run_dir / name / "nodes.conf").unlink(missing_ok=True)


def cluster_form(primary_port: int, ports: dict[str, int], timeout: float = 60.0) -> None:
    """Make the six nodes one cluster, three primaries with a replica each, unless they are one
    already; return once every node sees every slot served and each primary has its replica."""
    addresses = cluster_addresses(primary_port, ports)
    seed = redis.Redis(host="127.0.0.1", port=primary_port, socket_timeout=5)
    if int(seed.cluster("info")["cluster_known_nodes"]) < len(addresses):
        subprocess.run(
            ["redis-cli", "--cluster", "create", *addresses, "--cluster-replicas", "1", "--cluster-yes"],
            check=True,
            capture_output=True,
            timeout=timeout,
        )
    deadline = time.monotonic() + timeout
    while True:
        states = []
        for address in addresses:
            host, _, port = address.rpartition(":")
            client = redis.Redis(host=host, port=int(port), socket_timeout=2)
            try:
                info = client.cluster("info")
                replicas = sum(1 for n in client.cluster("nodes").values() if "slave" in n["flags"] and n["connected"])
                states.append(info["cluster_state"] == "ok" and replicas == len(addresses) // 2)
            except redis.RedisError:
                states.append(False)
            finally:
                client.close()
        if all(states):
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"the Redis Cluster of {addresses} did not form in {timeout:.0f}s")
        time.sleep(0.2)


def node_socket(run_dir: Path, name: str) -> Path | None:
    """A node's unix socket, for the edge on the same host; None when the path is too long."""
    path = (run_dir / name / "redis.sock").resolve()
    return path if len(str(path)) < 100 else None


def sentinel_list(ports: dict[str, int]) -> str:
    return ",".join(f"127.0.0.1:{ports[name]}" for name in SENTINELS)


def processes(run_dir: Path, primary_port: int, ports: dict[str, int]) -> tuple[list[Process], list[Process]]:
    """The nodes (the seed primary first), then the sentinels: started in that order, a layer
    each, so that on a first start no sentinel yet answers a node (it then takes its seed role).
    A cluster's six nodes, and no second layer (`cluster_form` makes them one)."""
    if topology_of(ports) == "cluster":
        return cluster_processes(run_dir, primary_port, ports), []
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


def app_env(run_dir: Path, ports: dict[str, int], primary_port: int) -> dict[str, str]:
    """What the app and the edge need to use this topology."""
    if topology_of(ports) == "cluster":
        addresses = cluster_addresses(primary_port, ports)
        env = {
            "REDIS_TOPOLOGY": "cluster",
            "REDIS_URL": f"redis://127.0.0.1:{primary_port}/0",
            "REDIS_CLUSTER_NODES": ",".join(addresses),
        }
        sockets = [(a, node_socket(run_dir, name)) for a, name in zip(addresses, CLUSTER_NODES, strict=True)]
        if all(socket is not None for _, socket in sockets):
            env["EDGE_REDIS_SOCKETS"] = ",".join(f"{a}={socket}" for a, socket in sockets)
        return env
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
    """A client of the cache's primary (or cluster), as the app reaches it (tests, the bench)."""
    if servers.get("REDIS_TOPOLOGY") == "cluster":
        from redis.cluster import ClusterNode, RedisCluster

        nodes = [address.rpartition(":") for address in servers["REDIS_CLUSTER_NODES"].split(",")]
        return RedisCluster(startup_nodes=[ClusterNode(host, int(port)) for host, _, port in nodes], **kwargs)
    if servers.get("REDIS_TOPOLOGY") != "sentinel":
        return redis.Redis.from_url(servers["REDIS_URL"], **kwargs)
    addresses = (address.rpartition(":") for address in servers["REDIS_SENTINELS"].split(","))
    sentinels = [(host, int(port)) for host, _, port in addresses]
    sentinel = Sentinel(sentinels, sentinel_kwargs={"socket_timeout": 0.5}, **kwargs)
    return sentinel.master_for(servers.get("REDIS_SENTINEL_SERVICE", SERVICE))
