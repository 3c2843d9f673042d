"""The process's Redis client: django-redis's connection pool for one server or a Sentinel
topology, redis-py's RedisCluster for a Redis Cluster (django-redis has none: its maintainers
declined one, jazzband/django-redis#208), and the little a caller must do differently on a
cluster: reads of many keys grouped by slot (`get_many`), a key on each primary (`node_keys`),
and which primary serves a key (`node_of`).

Made on first use in each process (after gunicorn forks), never at import time. Django's own
`get_redis_connection()` looks the cache backend up in a per-thread (under gevent, per-greenlet)
handler, building a backend object per request: too much for the read hot path.
"""

import functools

from django.conf import settings
from django_redis import get_redis_connection

from .process import PerProcess


def _client():
    if settings.REDIS_TOPOLOGY != "cluster":
        return get_redis_connection("default")
    from redis.cluster import ClusterNode, RedisCluster

    return RedisCluster(
        startup_nodes=[ClusterNode(host, port) for host, port in settings.REDIS_CLUSTER_NODES],
        socket_connect_timeout=1,
        socket_timeout=1,
        max_connections=200,
        health_check_interval=30,
    )


redis_client = PerProcess(_client)


@functools.cache
def clustered() -> bool:
    return settings.REDIS_TOPOLOGY == "cluster"


def get_many(keys: list[str]) -> list[bytes | None]:
    """MGET; on a cluster, one MGET per slot, pipelined per node (a document's keys share a
    slot, two documents' seldom do)."""
    if not keys:
        return []
    client = redis_client()
    return client.mget_nonatomic(keys) if clustered() else client.mget(keys)


def node_of(key: str) -> str:
    """The primary that serves `key` (host:port), as this process's client knows it; '' off a cluster."""
    if not clustered():
        return ""
    client = redis_client()
    return client.nodes_manager.get_node_from_slot(client.keyslot(key)).name


@functools.cache
def _slot_tags() -> dict[int, str]:
    """For each slot, a hash tag that falls in it (the shortest found)."""
    from redis.crc import key_slot

    tags: dict[int, str] = {}
    number = 0
    while len(tags) < 16384:
        tag = str(number)
        tags.setdefault(key_slot(tag.encode()), tag)
        number += 1
    return tags


def node_keys(key: str) -> list[str]:
    """`key` itself; on a cluster, one key per primary, each in a slot that primary serves (its
    first), so that each holds what that node knows: a node that fails over to a replica that
    lacks writes lacks that key's newest value with them (consumers/runner.py's notes)."""
    if not clustered():
        return [key]
    slots = redis_client().nodes_manager.slots_cache  # (replaced, not changed, when the map is read again)
    held = _node_keys.get(key)
    if held is not None and held[0] is slots:
        return held[1]
    firsts: dict[str, int] = {}
    for slot, nodes in sorted(slots.items()):
        firsts.setdefault(nodes[0].name, slot)
    tags = _slot_tags()
    keys = [f"{key}:{{{tags[slot]}}}" for slot in sorted(firsts.values())]
    _node_keys[key] = (slots, keys)
    return keys


# node_keys' answers, per key, with the slot map they were worked out from: the consumer asks for
# every batch, and sorting 16,384 slots each time is work done again for nothing.
_node_keys: dict[str, tuple[dict, list[str]]] = {}
