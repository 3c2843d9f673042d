"""Settings shared by every role. Each role module (read, write, consumer) changes only what it needs.

Every address and secret comes from the environment; the defaults are the local stack that
`make up` starts (see deploy/localstack.py), so a fresh checkout works without configuration.
"""

from pathlib import Path

import dj_database_url
from environs import Env, validate

# environs parses each variable and refuses a bad one at start, naming it and the form it expects:
#   Environment variable "KAFKA_TOPIC_PARTITIONS" invalid: Not a valid integer.
# An empty value counts as a value (KAFKA_TOPIC_PARTITIONS= is refused, not read as the default).
env = Env()
positive = validate.Range(min=1)  # lower case: not settings
not_negative = validate.Range(min=0)
boolean_forms = {"invalid": "Not a valid boolean: use true/false, yes/no, on/off or 1/0."}


def flag(name: str, default: bool) -> bool:
    """A boolean variable: DJANGO_DEBUG=ture is refused, where a hand-written parser would read False."""
    return env.bool(name, default, error_messages=boolean_forms)


BASE_DIR = Path(__file__).resolve().parent.parent.parent
RUN_DIR = env.path("CQRS_RUN_DIR", BASE_DIR / ".run")


CQRS_ROLE = "write"

DEVELOPMENT_SECRET_KEY = "dev-insecure-change-me"
SECRET_KEY = env.str("DJANGO_SECRET_KEY", DEVELOPMENT_SECRET_KEY)
DEBUG = flag("DJANGO_DEBUG", False)
ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]"], subcast=str.strip)

# DJANGO_ENV=production: refuse to start with settings that are only fit for a laptop, and
# require HTTPS for the admin's cookies (TLS ends in front of HAProxy or at it).
DJANGO_ENV = env.str("DJANGO_ENV", "development", validate=validate.OneOf(["development", "production"]))
if DJANGO_ENV == "production":
    unsafe = [
        problem
        for problem, found in (
            ("DJANGO_DEBUG is on", DEBUG),
            (
                "DJANGO_SECRET_KEY is missing, the development default, or shorter than 32 characters",
                SECRET_KEY == DEVELOPMENT_SECRET_KEY or len(SECRET_KEY) < 32,
            ),
            ("DJANGO_ALLOWED_HOSTS is empty", not ALLOWED_HOSTS),
        )
        if found
    ]
    if unsafe:
        from django.core.exceptions import ImproperlyConfigured

        raise ImproperlyConfigured("DJANGO_ENV=production refuses to start: " + "; ".join(unsafe) + ".")
    SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = flag("DJANGO_SECURE_COOKIES", True)
# Peers whose X-Forwarded-For is believed (HAProxy's addresses; networks allowed), for the
# client address a limit counts (the admin's failed logins). None by default: a proxy's address
# is the deployment's to name, and any client that shares it chooses its own address (the local
# stack's HAProxy connects from an address of its own: deploy/localstack.py).
CQRS_TRUSTED_PROXIES = env.list("CQRS_TRUSTED_PROXIES", [], subcast=str.strip)
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"

INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "rest_framework",
    "writes",
    "reads",
    "consumers",
]

MIDDLEWARE = ["cqrs_site.core.telemetry.route_label"]

ROOT_URLCONF = "cqrs_site.urls_read"
WSGI_APPLICATION = "cqrs_site.wsgi.application"

# Django's own tables (auth users, sessions, API tokens). Domain records live only in MongoDB.
DATABASES = {
    "default": dj_database_url.parse(
        env.str("DATABASE_URL", f"sqlite:///{RUN_DIR / 'db.sqlite3'}"),
        conn_max_age=60,
    )
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

USE_TZ = True
TIME_ZONE = "UTC"
LANGUAGE_CODE = "en-us"
STATIC_URL = "/static/"

# --- MongoDB: the store of record -------------------------------------------------------------
# The default is the port of `make up`'s embedded server; its local profile (deploy/processes.py)
# adds what that stand-in needs. A real MongoDB keeps pymongo's defaults (retryWrites=true).
MONGODB_URI = env.str("MONGODB_URI", "mongodb://127.0.0.1:27018/cqrs")
# How a post's change is applied and its event read (writes/changes.py): "find_and_modify", one
# findAndModify that returns the event the change made (MongoDB's way), or "update_and_read_back",
# an update matched by `_id` alone, then the event read back by its id (the embedded SecantusDB's
# way: it runs findAndModify, and any filter beyond `_id`, as a scan of the collection).
MONGODB_POST_CHANGES = env.str(
    "MONGODB_POST_CHANGES", "find_and_modify", validate=validate.OneOf(["find_and_modify", "update_and_read_back"])
)
# Every write waits for its journal (j=true: not settable, and a URI's journal=false is
# overridden): a write acknowledged before its journal reached disk is lost when the server
# crashes, and a later write reuses its version (measured: 2 SIGKILLs of the embedded server lost
# 8 acknowledged likes without it, 0 of 6,165 over 4 with it). "majority" also waits for a
# majority of a replica set, so a failover cannot roll an acknowledged write back; on a standalone
# server it is the same as 1. Lower it only knowing that (deploy/README.md, durability).
MONGODB_WRITE_CONCERN = env.str(
    "MONGODB_WRITE_CONCERN", "majority", validate=validate.Regexp(r"^(majority|[1-9][0-9]*)$")
)
# How long a write that MongoDB failed in flight looks for its own mark once the server answers
# again, before it answers 503 "outcome unknown" (writes/outcome.py).
WRITE_OUTCOME_SECONDS = env.float("WRITE_OUTCOME_SECONDS", 5, validate=not_negative)
# How long an operation waits for a reachable server before the API answers 503.
MONGODB_TIMEOUT_MS = env.int("MONGODB_TIMEOUT_MS", 2000, validate=positive)
# A server that stops answering mid-request (hung, paused) fails the request after this long.
MONGODB_SOCKET_TIMEOUT_MS = env.int("MONGODB_SOCKET_TIMEOUT_MS", 10000, validate=positive)
# Connections per process. A gevent worker runs up to 1000 requests at once: without a cap, a
# burst of cache misses opens a connection per concurrent miss (pymongo's default allows 100 per
# process), and the server pays for every one of them afterwards. Waiting for a pooled
# connection is cheaper.
MONGODB_MAX_POOL_SIZE = env.int("MONGODB_MAX_POOL_SIZE", 20, validate=positive)

# --- Redis: the read cache, rebuildable from MongoDB ------------------------------------------
# The topology (deploy/README.md, "Redis topologies"): `single`, one server at REDIS_URL; or
# `sentinel`, a primary with replicas whose address REDIS_SENTINELS' sentinels give for
# REDIS_SENTINEL_SERVICE (REDIS_URL is then redis://<service>/<db>, as django-redis takes it);
# or `cluster`, a Redis Cluster that REDIS_CLUSTER_NODES' nodes (any of them) describe, reached
# with redis-py's RedisCluster (django-redis has none: cqrs_site/core/redis_client.py).
REDIS_TOPOLOGY = env.str("REDIS_TOPOLOGY", "single", validate=validate.OneOf(["single", "sentinel", "cluster"]))
REDIS_URL = env.str("REDIS_URL", "redis://127.0.0.1:6380/0")
REDIS_SENTINELS = [
    (host, int(port)) for host, _, port in (address.rpartition(":") for address in env.list("REDIS_SENTINELS", []))
]
REDIS_SENTINEL_SERVICE = env.str("REDIS_SENTINEL_SERVICE", "cache")
REDIS_CLUSTER_NODES = [
    (host, int(port)) for host, _, port in (address.rpartition(":") for address in env.list("REDIS_CLUSTER_NODES", []))
]
if REDIS_TOPOLOGY == "cluster" and not REDIS_CLUSTER_NODES:
    from django.core.exceptions import ImproperlyConfigured

    raise ImproperlyConfigured("REDIS_TOPOLOGY=cluster needs REDIS_CLUSTER_NODES (host:port,host:port,...)")
if REDIS_TOPOLOGY == "sentinel" and not REDIS_SENTINELS:
    from django.core.exceptions import ImproperlyConfigured

    raise ImproperlyConfigured("REDIS_TOPOLOGY=sentinel needs REDIS_SENTINELS (host:port,host:port,...)")
_redis_sentinel = (
    {
        "CLIENT_CLASS": "django_redis.client.SentinelClient",
        "CONNECTION_FACTORY": "django_redis.pool.SentinelConnectionFactory",
        "SENTINELS": REDIS_SENTINELS,
        "SENTINEL_KWARGS": {"socket_connect_timeout": 0.5, "socket_timeout": 0.5},
    }
    if REDIS_TOPOLOGY == "sentinel"
    else {"CLIENT_CLASS": "django_redis.client.DefaultClient"}
)
CACHES = {
    "default": {
        "BACKEND": "django_redis.cache.RedisCache",
        "LOCATION": REDIS_URL,
        "OPTIONS": {
            **_redis_sentinel,
            "SOCKET_CONNECT_TIMEOUT": 1,
            "SOCKET_TIMEOUT": 1,
            "CONNECTION_POOL_KWARGS": {"max_connections": 200, "health_check_interval": 30},
        },
        "KEY_PREFIX": "django",
    }
}
# Domain cache entries (cqrs_site/core/codec.py) live beside Django's own keys under this prefix.
CQRS_CACHE_PREFIX = env.str("CQRS_CACHE_PREFIX", "cqrs")
# TTL is the last backstop for staleness, not the mechanism; jitter spreads expiries.
CQRS_CACHE_TTL_SECONDS = env.int("CQRS_CACHE_TTL_SECONDS", 3600, validate=positive)
CQRS_CACHE_TTL_JITTER = env.float("CQRS_CACHE_TTL_JITTER", 0.1, validate=not_negative)
# The staleness a write may have before the cache is judged behind (the inspector and
# check_consistency look again after this long before they call a difference stale).
VISIBILITY_BOUND_SECONDS = env.float("VISIBILITY_BOUND_SECONDS", 1.0, validate=not_negative)
# The cache inspector (manage.py run_inspector): documents checked per second in a regular sweep,
# and per MongoDB batch. A sweep asked for (the broker lost data) runs at full speed.
INSPECTOR_DOCS_PER_SECOND = env.float("INSPECTOR_DOCS_PER_SECOND", 200, validate=not_negative)
INSPECTOR_BATCH_SIZE = env.int("INSPECTOR_BATCH_SIZE", 250, validate=positive)
# A regular sweep lasts at least this long, however few the documents.
INSPECTOR_MIN_SWEEP_SECONDS = env.float("INSPECTOR_MIN_SWEEP_SECONDS", 5, validate=not_negative)
# Feeds (a user's posts, the latest, the most liked) hold at most this many posts each; deeper
# pages are read from MongoDB. A feed expires FEED_TTL_SECONDS (± jitter) after it was filled.
FEED_MAX_MEMBERS = env.int("FEED_MAX_MEMBERS", 1000, validate=positive)
FEED_TTL_SECONDS = env.int("FEED_TTL_SECONDS", 3600, validate=positive)
# A tombstone must outlive any fill that could still be in flight for the deleted document.
CQRS_TOMBSTONE_TTL_SECONDS = env.int("CQRS_TOMBSTONE_TTL_SECONDS", 86400, validate=positive)
# Fault injection for the race tests: each read-through fill sleeps up to this long between its
# MongoDB read and its cache write. 0 (the default) in every real deployment.
CQRS_FAULT_FILL_DELAY_SECONDS = env.float("CQRS_FAULT_FILL_DELAY_SECONDS", 0, validate=not_negative)

# --- Kafka: the event log ---------------------------------------------------------------------
KAFKA_BOOTSTRAP_SERVERS = env.str("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:19092")
KAFKA_EVENTS_TOPIC = env.str("KAFKA_EVENTS_TOPIC", "cqrs.events")
KAFKA_DEAD_LETTER_TOPIC = env.str("KAFKA_DEAD_LETTER_TOPIC", "cqrs.events.dlq")
KAFKA_TOPIC_PARTITIONS = env.int("KAFKA_TOPIC_PARTITIONS", 6, validate=positive)
KAFKA_REPLICATION_FACTOR = env.int("KAFKA_REPLICATION_FACTOR", 1, validate=positive)
# A broker that cannot add partitions (the embedded Tansu) may have a short topic recreated, losing
# what it holds (writes/topics.py). Off, except in the local stack.
KAFKA_RECREATE_UNGROWABLE_TOPICS = flag("KAFKA_RECREATE_UNGROWABLE_TOPICS", False)
# How long a write waits for the broker's acknowledgement before it answers anyway: the event
# is already committed in the document's outbox, so the relay delivers it later.
KAFKA_PUBLISH_TIMEOUT_SECONDS = env.float("KAFKA_PUBLISH_TIMEOUT_SECONDS", 2.0, validate=not_negative)
# After one such timeout, writes answer without waiting for the broker for this long.
KAFKA_SUSPECT_SECONDS = env.float("KAFKA_SUSPECT_SECONDS", 5.0, validate=not_negative)
# A producer with messages outstanding this long, unacknowledged while the broker answers, is
# replaced (writes/producer.py): a broker that lost its state never acknowledges it again.
KAFKA_PRODUCER_STALL_SECONDS = env.float("KAFKA_PRODUCER_STALL_SECONDS", 3.0, validate=not_negative)
KAFKA_PRODUCER_CONFIG = {
    "bootstrap.servers": KAFKA_BOOTSTRAP_SERVERS,
    # Topics are the stack's (manage.py create_topics), never created by a client's metadata
    # request: a broker would make them with its own default partition count.
    "allow.auto.create.topics": False,
    "enable.idempotence": True,
    "acks": "all",
    "linger.ms": 1,
    "message.timeout.ms": env.int("KAFKA_MESSAGE_TIMEOUT_MS", 30000, validate=positive),
    # librdkafka backs off up to 10 s between reconnects by default: after an outage, that is
    # up to 10 s more before queued events go out.
    "reconnect.backoff.max.ms": 1000,
}
KAFKA_CONSUMER_CONFIG = {
    "bootstrap.servers": KAFKA_BOOTSTRAP_SERVERS,
    "enable.auto.commit": False,
    "enable.auto.offset.store": False,
    "auto.offset.reset": "earliest",
    # librdkafka's own defaults, for a real Kafka (KIP-62 and KIP-345): a member is given up
    # after 45 s of silence, which a restart inside that time never reaches with static
    # membership (below). The embedded Tansu needs 2 s and 300 ms (docs/stand-ins.md says why).
    "session.timeout.ms": env.int("KAFKA_SESSION_TIMEOUT_MS", 45000, validate=positive),
    "heartbeat.interval.ms": env.int("KAFKA_HEARTBEAT_INTERVAL_MS", 3000, validate=positive),
    # Cooperative rebalancing (KIP-429): a member that joins or leaves moves only the partitions
    # that change owner; the others are never stopped. Eager ("range,roundrobin") stops all.
    "partition.assignment.strategy": env.str("KAFKA_ASSIGNMENT_STRATEGY", "cooperative-sticky"),
    # How long the broker may hold a fetch that found nothing: librdkafka's default. Kafka answers
    # a held fetch as soon as data arrives; the embedded Tansu, after a restart, does not (its
    # local profile sets 50: docs/stand-ins.md).
    "fetch.wait.max.ms": env.int("KAFKA_FETCH_WAIT_MAX_MS", 500, validate=positive),
    "reconnect.backoff.max.ms": 1000,
    "allow.auto.create.topics": False,  # librdkafka's default for consumers; stated, as for producers
    # A topic that gains partitions (create_topics) is seen within this long, not 5 minutes.
    "topic.metadata.refresh.interval.ms": 10000,
}
# Static group membership (KIP-345): a stable name per consumer process (a StatefulSet's pod
# name, "consumer-1" under supervisor). A consumer restarted under the same name within the
# session timeout takes its partitions back with no rebalance. Empty: dynamic membership.
CONSUMER_INSTANCE_ID = env.str("CONSUMER_INSTANCE_ID", "")
# Up to this many events per batch: as many as have arrived (a batch never waits to fill). Large
# batches when the consumer lags amortize its per-batch costs (5,000: 27k events/s, 500: 16k, in
# 2026-11), and, events carrying whole states, a batch writes each document once however many
# of its events it holds. Larger is not faster: 20,000 cost the consumer a third more CPU per
# event than 5,000 (100 MB more memory, a working set beyond the CPU's caches; measured).
CONSUMER_BATCH_SIZE = env.int("CONSUMER_BATCH_SIZE", 5000, validate=positive)
# A batch's cache writes go to Redis in script calls of at most this many (a document's all in
# one call): a call holds Redis, every read included, for its whole run, about 4 ms per 1,000
# writes. 5,000 new posts make 25,000 writes (two entries, three feed places each).
CONSUMER_WRITES_PER_CALL = env.int("CONSUMER_WRITES_PER_CALL", 15000, validate=positive)
CONSUMER_POLL_TIMEOUT_SECONDS = env.float("CONSUMER_POLL_TIMEOUT_SECONDS", 0.2, validate=not_negative)
# How often a consumer checks, between batches, that the cache still holds what it applied
# (consumers/runner.py: a failover to a replica that had not received the last writes, or a Redis
# restarted empty, takes them back). When the cache kept no record at all of how far the group
# applied, the consumer applies again this many seconds of the log.
CONSUMER_CACHE_CHECK_SECONDS = env.float("CONSUMER_CACHE_CHECK_SECONDS", 0.5, validate=not_negative)
CONSUMER_REPLAY_SECONDS = env.int("CONSUMER_REPLAY_SECONDS", 60, validate=not_negative)
# A log line per applied event (its id, type and the write's request id). 1-27% of the consumer's
# throughput in the benchmark, more in hours slow for Python (deploy/README.md); off, only
# batches' failures and dead letters are logged.
CONSUMER_LOG_EVENTS = flag("CONSUMER_LOG_EVENTS", True)
# How often librdkafka reports the consumer's lag per partition (cqrs_consumer_lag_messages).
CONSUMER_STATS_INTERVAL_MS = env.int("CONSUMER_STATS_INTERVAL_MS", 2000, validate=positive)
# The consumer's and the relay's /metrics port (0: not served). Pools serve /metrics on their own port.
METRICS_PORT = env.int("METRICS_PORT", 0, validate=not_negative)
METRICS_HOST = env.str("METRICS_HOST", "127.0.0.1")  # 0.0.0.0 in a container

# --- API --------------------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["writes.authentication.CachedTokenAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PARSER_CLASSES": ["writes.parsers.JSONObjectParser"],
    "DEFAULT_THROTTLE_CLASSES": ["writes.throttles.WritesPerMinute"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "EXCEPTION_HANDLER": "writes.errors.api_exception_handler",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "UNAUTHENTICATED_USER": None,
}
# A process remembers a valid API token this long (writes/authentication.py): a revoked token is
# refused by every process within it.
API_TOKEN_CACHE_SECONDS = env.float("API_TOKEN_CACHE_SECONDS", 5, validate=not_negative)
# Writes per API token per minute (0: no limit); more answer 429 with Retry-After.
CQRS_WRITES_PER_MINUTE = env.int("CQRS_WRITES_PER_MINUTE", 6000, validate=not_negative)
DATA_UPLOAD_MAX_MEMORY_SIZE = env.int("CQRS_MAX_BODY_BYTES", 64 * 1024, validate=positive)

# One JSON object per line, with the request id (cqrs_site/core/logs.py); LOG_FORMAT=plain for a
# terminal. CQRS_ACCESS_LOG: a line per request from the pools (HAProxy logs every request anyway).
LOG_FORMAT = env.str("LOG_FORMAT", "json", validate=validate.OneOf(["json", "plain"]))
# The request metrics of each pool (counter and latency histogram per route); off only to measure
# what they cost (make bench).
CQRS_REQUEST_METRICS = flag("CQRS_REQUEST_METRICS", True)
# Likes and dislikes answered below Django in the write pool (writes/fastpath.py); off only to
# measure what it saves (make bench).
CQRS_WRITE_FAST_PATH = flag("CQRS_WRITE_FAST_PATH", True)
CQRS_ACCESS_LOG = flag("CQRS_ACCESS_LOG", True)
LOG_LEVEL = env.str("LOG_LEVEL", "INFO", validate=validate.OneOf(["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]))
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "json": {"()": "cqrs_site.core.logs.JsonFormatter"},
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "plain" if LOG_FORMAT == "plain" else "json"}
    },
    "root": {
        "handlers": ["console"],
        "level": env.str(
            "LOG_LEVEL", "INFO", validate=validate.OneOf(["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"])
        ),
    },
    "loggers": {"django": {"level": "WARNING"}},
}
CACHE_CONSUMER_GROUP = env.str("CACHE_CONSUMER_GROUP", "cqrs-cache")
# The relay leaves an event alone this long after its write, which publishes it itself.
RELAY_GRACE_SECONDS = env.float("RELAY_GRACE_SECONDS", 5, validate=not_negative)
RELAY_INTERVAL_SECONDS = env.float("RELAY_INTERVAL_SECONDS", 1, validate=not_negative)
# Every this long, the relay also reads every outbox (a writer may have died before it could note
# its document for the relay); in between it reads only the noted ones (writes/outbox.py). An
# index range (0.5 ms at 18,000 posts on SecantusDB), so a killed writer's events wait at most
# about this plus RELAY_GRACE_SECONDS. (30 s while that query scanned the collection.)
RELAY_SCAN_SECONDS = env.float("RELAY_SCAN_SECONDS", 5, validate=not_negative)
# How often the relay checks that the topics exist with their partitions (writes/topics.py): a
# real Kafka keeps them; the embedded Tansu loses them when it restarts (its local profile: 2 s).
RELAY_TOPIC_CHECK_SECONDS = env.float("RELAY_TOPIC_CHECK_SECONDS", 30, validate=not_negative)
