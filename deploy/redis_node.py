"""Start one Redis node or one sentinel of the Sentinel topology (deploy/redis_topology.py), then
become it (exec: supervisor's PID is the server's).

    python -m deploy.redis_node node --port P --dir D --seed H:P --sentinels H:P,... [--socket S]
    python -m deploy.redis_node sentinel --port P --dir D --seed H:P --quorum 2 ...
    python -m deploy.redis_node cluster-node --port P --bus-port B --dir D --peers H:P,... [--socket S]

A node asks the sentinels which node is the primary and starts as its replica. With no sentinel
answering (the topology's first start) it takes its seed role: the primary if it is the seed,
else the seed's replica. A node the sentinels still name as the primary was the primary and
died; it waits for them to promote another (its data died with it, and a primary back empty
would have its replica drop everything it holds), and starts as the primary itself only when
none was promoted in time: a lone node, or a replica that died too.

A Redis Cluster node keeps its identity in nodes.conf, in its directory. One that was a primary
and died waits, as a Sentinel node does, for the others to fail it over to its replica (they
then make it that replica's replica when it comes back), rather than come back at once as an
empty primary of its slots; with no peer answering (the whole cluster starting) it starts at once.

A sentinel writes its config on its first start only: it rewrites that file with what it learns
(the other sentinels, the replicas, each failover), and a restarted sentinel must keep it.
"""

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

import redis

# How long a node the sentinels still name as the primary waits for them to promote another:
# their down-after time (2 s) and a failover (1-2 s measured on loopback), with room to spare.
PROMOTION_WAIT_SECONDS = 15.0


def addresses(text: str) -> list[tuple[str, int]]:
    return [(host, int(port)) for host, _, port in (a.rpartition(":") for a in text.split(",") if a)]


def primary_named(sentinels: list[tuple[str, int]], service: str) -> list[tuple[str, int]]:
    """What each sentinel that answers names as the primary."""
    named = []
    for host, port in sentinels:
        try:
            client = redis.Redis(host=host, port=port, socket_timeout=0.5, socket_connect_timeout=0.5)
            answer = client.sentinel_get_master_addr_by_name(service)
            client.close()
        except redis.RedisError:
            continue
        if answer:
            named.append((answer[0].decode() if isinstance(answer[0], bytes) else answer[0], int(answer[1])))
    return named


def replica_of(me: tuple[str, int], seed: tuple[str, int], sentinels, service: str) -> tuple[str, int] | None:
    """The primary this node starts as a replica of; None: it starts as the primary."""
    deadline = time.monotonic() + PROMOTION_WAIT_SECONDS
    named = primary_named(sentinels, service)
    if not named:  # the first start: no sentinel yet
        return None if me == seed else seed
    while True:
        others = [address for address in named if address != me]
        if others:
            return others[0]
        if time.monotonic() > deadline:
            print(f"no replica was promoted in {PROMOTION_WAIT_SECONDS:.0f}s: starting as the primary", flush=True)
            return None
        time.sleep(0.2)
        named = primary_named(sentinels, service) or named


def cluster_identity(data: Path) -> tuple[str, bool] | None:
    """This node's id, and whether it was a primary holding slots, from its nodes.conf; None
    before its first start."""
    try:
        lines = (data / "nodes.conf").read_text().splitlines()
    except FileNotFoundError:
        return None
    for line in lines:
        fields = line.split()
        if len(fields) >= 8 and "myself" in fields[2].split(","):
            return fields[0], "master" in fields[2].split(",") and len(fields) > 8
    return None


def peers_still_name_me_primary(node_id: str, peers: list[tuple[str, int]]) -> bool | None:
    """Whether a peer still holds this node as a primary of slots (None: no peer answers)."""
    answered = False
    for host, port in peers:
        try:
            client = redis.Redis(host=host, port=port, socket_timeout=0.5, socket_connect_timeout=0.5)
            text = client.execute_command("CLUSTER", "NODES")
            client.close()
        except redis.RedisError:
            continue
        answered = True
        text = text.decode() if isinstance(text, bytes) else text
        for line in text.splitlines():
            fields = line.split()
            if fields and fields[0] == node_id:
                return "master" in fields[2].split(",") and len(fields) > 8
    return None if not answered else False


def cluster_node(args) -> list[str]:
    data = Path(args.dir)
    data.mkdir(parents=True, exist_ok=True)
    identity = cluster_identity(data)
    if identity is not None and identity[1]:
        deadline = time.monotonic() + PROMOTION_WAIT_SECONDS
        peers = [peer for peer in addresses(args.peers) if peer != ("127.0.0.1", args.port)]
        while peers_still_name_me_primary(identity[0], peers) and time.monotonic() < deadline:
            time.sleep(0.2)
    argv = [shutil.which("redis-server") or "redis-server", "--bind", "127.0.0.1", "--port", str(args.port)]
    argv += ["--save", "", "--appendonly", "no", "--dir", str(data), "--daemonize", "no"]
    argv += ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"]
    argv += ["--cluster-port", str(args.bus_port), "--cluster-node-timeout", str(args.node_timeout_ms)]
    # Slots whose primary is down answer errors; the others go on answering (reads fall
    # through to MongoDB for the first only).
    argv += ["--cluster-require-full-coverage", "no", "--cluster-allow-reads-when-down", "no"]
    argv += ["--repl-diskless-sync", "yes", "--repl-diskless-sync-delay", "0"]
    if args.socket:
        argv += ["--unixsocket", args.socket, "--unixsocketperm", "700"]
    return argv


def node(args) -> list[str]:
    data = Path(args.dir)
    data.mkdir(parents=True, exist_ok=True)
    me, seed = ("127.0.0.1", args.port), addresses(args.seed)[0]
    argv = [shutil.which("redis-server") or "redis-server", "--bind", "127.0.0.1", "--port", str(args.port)]
    argv += ["--save", "", "--appendonly", "no", "--dir", str(data), "--daemonize", "no"]
    # A replica that comes back syncs at once (Redis 7.0 waits 5 s for others to join a sync).
    argv += ["--repl-diskless-sync", "yes", "--repl-diskless-sync-delay", "0"]
    if args.socket:
        argv += ["--unixsocket", args.socket, "--unixsocketperm", "700"]
    primary = replica_of(me, seed, addresses(args.sentinels), args.service)
    if primary is not None:
        argv += ["--replicaof", primary[0], str(primary[1])]
    print(f"redis node :{args.port} starts as {'the primary' if primary is None else f'a replica of {primary}'}")
    return argv


def sentinel(args) -> list[str]:
    data = Path(args.dir)
    data.mkdir(parents=True, exist_ok=True)
    config = data / "sentinel.conf"
    if not config.exists():
        host, port = addresses(args.seed)[0]
        config.write_text(
            f"port {args.port}\nbind 127.0.0.1\ndaemonize no\ndir {data}\n"
            f"sentinel monitor {args.service} {host} {port} {args.quorum}\n"
            f"sentinel down-after-milliseconds {args.service} {args.down_after_ms}\n"
            f"sentinel failover-timeout {args.service} {args.failover_timeout_ms}\n"
            f"sentinel parallel-syncs {args.service} 1\n"
        )
    binary = shutil.which("redis-sentinel")
    if binary:
        return [binary, str(config)]
    return [shutil.which("redis-server") or "redis-server", str(config), "--sentinel"]


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m deploy.redis_node")
    parser.add_argument("role", choices=["node", "sentinel", "cluster-node"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--dir", required=True)
    parser.add_argument("--seed", default="", help="the primary of the first start, host:port")
    parser.add_argument("--peers", default="", help="the cluster's other nodes, host:port,...")
    parser.add_argument("--bus-port", type=int)
    parser.add_argument("--node-timeout-ms", type=int, default=2000)
    parser.add_argument("--service", default="cache")
    parser.add_argument("--sentinels", default="")
    parser.add_argument("--socket")
    parser.add_argument("--quorum", type=int, default=2)
    parser.add_argument("--down-after-ms", type=int, default=2000)
    parser.add_argument("--failover-timeout-ms", type=int, default=10000)
    args = parser.parse_args()
    argv = {"node": node, "sentinel": sentinel, "cluster-node": cluster_node}[args.role](args)
    sys.stdout.flush()
    os.execv(argv[0], argv)


if __name__ == "__main__":
    main()
