"""A Redis Cluster (REDIS_TOPOLOGY=cluster, deploy/redis_topology.py): a stack of its own whose
cache is six nodes, three primaries with a replica each, the edge routing each hit by its slot.

The primary serving a post's slot is SIGKILLed under likes and reads, with its replica's link up,
and with it cut a second before (the replica then lacks the last writes, their fences with
them). The cluster promotes the replica; supervisor starts the dead node again, which waits to
be failed over and comes back as the new primary's replica. Checked, as under Sentinel
(tests/faults/test_redis_failover.py):
- every read is answered 200 (the edge and the pool fall through to MongoDB meanwhile);
- the cache is written again within 5 s of the kill;
- MongoDB holds every acknowledged like;
- the cache converges to MongoDB within 60 s (the fixture's consistency check);
- readers that send X-Min-Version never get an older version; the others' regressions are
  recorded (test-artifacts/faults.json) and bounded;
- with the link cut, the consumers find that node's note went back and apply again what it lost.
"""

import time

import pytest
import redis
import requests

from deploy import redis_topology
from tests.faults.conftest import healed_and_consistent, topology_stack
from tests.faults.test_redis_failover import (
    POSTS,
    came_back_as_replica,
    check_failover,
    kill_under_load,
    node,
    role,
    rollbacks,
)

pytestmark = pytest.mark.faults


@pytest.fixture(scope="module")
def cluster_stack(tmp_path_factory):
    with topology_stack(tmp_path_factory, "cluster") as stack:
        yield stack


@pytest.fixture
def stack(cluster_stack):
    yield cluster_stack
    healed_and_consistent(cluster_stack)


def node_names(stack) -> dict[int, str]:
    """Port -> the node's program name."""
    saved = stack._stack()
    return {saved.own_servers["redis"]: "redis", **{saved.redis_ports[n]: n for n in redis_topology.CLUSTER_NODES[1:]}}


def nodes_seen(stack) -> dict[str, dict]:
    """CLUSTER NODES as the first node that answers sees it: program name -> its entry."""
    names = node_names(stack)
    for name in names.values():
        try:
            seen = node(stack, name).cluster("nodes")
        except redis.RedisError:
            continue
        return {names[int(address.split(":")[1].split("@")[0])]: entry for address, entry in seen.items()}
    raise AssertionError("no cluster node answers")


def serving(stack, post: str) -> tuple[str, str]:
    """(the primary serving the post's slot, its replica), by program name."""
    slot = stack.redis.keyslot(f"{stack.prefix}:post:{{{post}}}")
    seen = nodes_seen(stack)
    [primary] = [
        name
        for name, entry in seen.items()
        if "master" in entry["flags"] and any(int(a) <= slot <= int(b) for a, b in _ranges(entry["slots"]))
    ]
    [replica] = [name for name, entry in seen.items() if entry["master_id"] == seen[primary]["node_id"]]
    return primary, replica


def _ranges(slots: list) -> list[tuple[str, str]]:
    return [(s[0], s[-1]) for s in slots]


@pytest.mark.parametrize("link", ["up", "cut"])
def test_a_cluster_primary_killed_under_mixed_load_fails_over_and_the_cache_converges(stack, record, link):
    posts = stack.posts_in_cache(POSTS)
    dead, survivor = serving(stack, posts[0])
    rollbacks_before = rollbacks(stack)
    killed = kill_under_load(stack, posts, dead, node(stack, survivor), link)
    assert role(stack, survivor)[0] == "master", "the cluster did not promote the replica"
    came_back_as_replica(stack, dead, survivor)
    check_failover(stack, record, f"redis_cluster_primary_killed_link_{link}", posts, killed, link, rollbacks_before)
    # The edge answers hits again, on the dead primary's slots too (its map names the new primary).
    deadline = time.monotonic() + 10
    while requests.get(f"{stack.url}/api/posts/{posts[0]}", timeout=5).headers.get("X-Served-By") != "edge":
        assert time.monotonic() < deadline, "the edge did not find the slot's new primary"
        time.sleep(0.1)
