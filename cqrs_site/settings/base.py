"""Settings shared by every role. Each role module (read, write, consumer) changes only what it needs.

Every address and secret comes from the environment; the defaults are the local stack that
`make up` starts (see deploy/localstack.py), so a fresh checkout works without configuration.
"""

import os
from pathlib import Path

import dj_database_url

BASE_DIR = Path(__file__).resolve().parent.parent.parent
RUN_DIR = Path(os.environ.get("CQRS_RUN_DIR", BASE_DIR / ".run"))


def env_bool(name: str, default: bool = False) -> bool:
    return os.environ.get(name, str(default)).strip().lower() in {"1", "true", "yes", "on"}


def env_list(name: str, default: str) -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


CQRS_ROLE = "write"

DEVELOPMENT_SECRET_KEY = "dev-insecure-change-me"
SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", DEVELOPMENT_SECRET_KEY)
DEBUG = env_bool("DJANGO_DEBUG", False)
ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", "127.0.0.1,localhost,[::1]")

# DJANGO_ENV=production: refuse to start with settings that are only fit for a laptop, and
# require HTTPS for the admin's cookies (TLS ends in front of HAProxy or at it).
DJANGO_ENV = os.environ.get("DJANGO_ENV", "development")
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
    SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = env_bool("DJANGO_SECURE_COOKIES", True)
# Peers whose X-Forwarded-For is believed (HAProxy's addresses; networks allowed), for the
# client address a limit counts (the admin's failed logins).
CQRS_TRUSTED_PROXIES = env_list("CQRS_TRUSTED_PROXIES", "127.0.0.1,::1")
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"

INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "rest_framework",
    "rest_framework.authtoken",
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
        os.environ.get("DATABASE_URL", f"sqlite:///{RUN_DIR / 'db.sqlite3'}"),
        conn_max_age=60,
    )
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

USE_TZ = True
TIME_ZONE = "UTC"
LANGUAGE_CODE = "en-us"
STATIC_URL = "/static/"

# --- MongoDB: the store of record -------------------------------------------------------------
# The default is the embedded SecantusDB of `make up`, without retryable writes (deploy/processes.py
# says why); a real MongoDB keeps pymongo's retryWrites=true.
MONGODB_URI = os.environ.get("MONGODB_URI", "mongodb://127.0.0.1:27018/cqrs?retryWrites=false")
# How long an operation waits for a reachable server before the API answers 503.
MONGODB_TIMEOUT_MS = int(os.environ.get("MONGODB_TIMEOUT_MS", "2000"))
# A server that stops answering mid-request (hung, paused) fails the request after this long.
MONGODB_SOCKET_TIMEOUT_MS = int(os.environ.get("MONGODB_SOCKET_TIMEOUT_MS", "10000"))
# Connections per process. A gevent worker runs up to 1000 requests at once: without a cap, a
# burst of cache misses opens a connection per concurrent miss (pymongo's default allows 100 per
# process), and the server pays for every one of them afterwards. Waiting for a pooled
# connection is cheaper.
MONGODB_MAX_POOL_SIZE = int(os.environ.get("MONGODB_MAX_POOL_SIZE", "20"))

# --- Redis: the read cache, rebuildable from MongoDB ------------------------------------------
REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6380/0")
CACHES = {
    "default": {
        "BACKEND": "django_redis.cache.RedisCache",
        "LOCATION": REDIS_URL,
        "OPTIONS": {
            "CLIENT_CLASS": "django_redis.client.DefaultClient",
            "SOCKET_CONNECT_TIMEOUT": 1,
            "SOCKET_TIMEOUT": 1,
            "CONNECTION_POOL_KWARGS": {"max_connections": 200, "health_check_interval": 30},
        },
        "KEY_PREFIX": "django",
    }
}
# Domain cache entries (cqrs_site/core/codec.py) live beside Django's own keys under this prefix.
CQRS_CACHE_PREFIX = os.environ.get("CQRS_CACHE_PREFIX", "cqrs")
# TTL is the last backstop for staleness, not the mechanism; jitter spreads expiries.
CQRS_CACHE_TTL_SECONDS = int(os.environ.get("CQRS_CACHE_TTL_SECONDS", "3600"))
CQRS_CACHE_TTL_JITTER = float(os.environ.get("CQRS_CACHE_TTL_JITTER", "0.1"))
# The staleness a write may have before the cache is judged behind (the inspector and
# check_consistency look again after this long before they call a difference stale).
VISIBILITY_BOUND_SECONDS = float(os.environ.get("VISIBILITY_BOUND_SECONDS", "1.0"))
# The cache inspector (manage.py run_inspector): documents checked per second in a regular sweep,
# and per MongoDB batch. A sweep asked for (the broker lost data) runs at full speed.
INSPECTOR_DOCS_PER_SECOND = float(os.environ.get("INSPECTOR_DOCS_PER_SECOND", "200"))
INSPECTOR_BATCH_SIZE = int(os.environ.get("INSPECTOR_BATCH_SIZE", "250"))
# A regular sweep lasts at least this long, however few the documents.
INSPECTOR_MIN_SWEEP_SECONDS = float(os.environ.get("INSPECTOR_MIN_SWEEP_SECONDS", "5"))
# Feeds (a user's posts, the latest, the most liked) hold at most this many posts each; deeper
# pages are read from MongoDB. A feed expires FEED_TTL_SECONDS (± jitter) after it was filled.
FEED_MAX_MEMBERS = int(os.environ.get("FEED_MAX_MEMBERS", "1000"))
FEED_TTL_SECONDS = int(os.environ.get("FEED_TTL_SECONDS", "3600"))
# A tombstone must outlive any fill that could still be in flight for the deleted document.
CQRS_TOMBSTONE_TTL_SECONDS = int(os.environ.get("CQRS_TOMBSTONE_TTL_SECONDS", "86400"))
# Fault injection for the race tests: each read-through fill sleeps up to this long between its
# MongoDB read and its cache write. 0 (the default) in every real deployment.
CQRS_FAULT_FILL_DELAY_SECONDS = float(os.environ.get("CQRS_FAULT_FILL_DELAY_SECONDS", "0"))

# --- Kafka: the event log ---------------------------------------------------------------------
KAFKA_BOOTSTRAP_SERVERS = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:19092")
KAFKA_EVENTS_TOPIC = os.environ.get("KAFKA_EVENTS_TOPIC", "cqrs.events")
KAFKA_DEAD_LETTER_TOPIC = os.environ.get("KAFKA_DEAD_LETTER_TOPIC", "cqrs.events.dlq")
KAFKA_TOPIC_PARTITIONS = int(os.environ.get("KAFKA_TOPIC_PARTITIONS", "6"))
KAFKA_REPLICATION_FACTOR = int(os.environ.get("KAFKA_REPLICATION_FACTOR", "1"))
# A broker that cannot add partitions (the embedded Tansu) may have a short topic recreated, losing
# what it holds (writes/topics.py). Off, except in the local stack.
KAFKA_RECREATE_UNGROWABLE_TOPICS = env_bool("KAFKA_RECREATE_UNGROWABLE_TOPICS", False)
# How long a write waits for the broker's acknowledgement before it answers anyway: the event
# is already committed in the document's outbox, so the relay delivers it later.
KAFKA_PUBLISH_TIMEOUT_SECONDS = float(os.environ.get("KAFKA_PUBLISH_TIMEOUT_SECONDS", "2.0"))
# After one such timeout, writes answer without waiting for the broker for this long.
KAFKA_SUSPECT_SECONDS = float(os.environ.get("KAFKA_SUSPECT_SECONDS", "5.0"))
# A producer with messages outstanding this long, unacknowledged while the broker answers, is
# replaced (writes/producer.py): a broker that lost its state never acknowledges it again.
KAFKA_PRODUCER_STALL_SECONDS = float(os.environ.get("KAFKA_PRODUCER_STALL_SECONDS", "3.0"))
KAFKA_PRODUCER_CONFIG = {
    "bootstrap.servers": KAFKA_BOOTSTRAP_SERVERS,
    # Topics are the stack's (manage.py create_topics), never created by a client's metadata
    # request: a broker would make them with its own default partition count.
    "allow.auto.create.topics": False,
    "enable.idempotence": True,
    "acks": "all",
    "linger.ms": 1,
    "message.timeout.ms": int(os.environ.get("KAFKA_MESSAGE_TIMEOUT_MS", "30000")),
    # librdkafka backs off up to 10 s between reconnects by default: after an outage, that is
    # up to 10 s more before queued events go out.
    "reconnect.backoff.max.ms": 1000,
}
KAFKA_CONSUMER_CONFIG = {
    "bootstrap.servers": KAFKA_BOOTSTRAP_SERVERS,
    "enable.auto.commit": False,
    "enable.auto.offset.store": False,
    "auto.offset.reset": "earliest",
    # Tansu holds a JoinGroup for half the session timeout: 45 s (the default) costs a 23 s
    # start. 6 s is Kafka's default group.min.session.timeout.ms.
    "session.timeout.ms": int(os.environ.get("KAFKA_SESSION_TIMEOUT_MS", "6000")),
    "heartbeat.interval.ms": 1000,
    "fetch.wait.max.ms": 50,
    "reconnect.backoff.max.ms": 1000,
    "allow.auto.create.topics": False,  # librdkafka's default for consumers; stated, as for producers
    # A topic that gains partitions (create_topics) is seen within this long, not 5 minutes.
    "topic.metadata.refresh.interval.ms": 10000,
}
# Up to this many events per batch: as many as have arrived (a batch never waits to fill). Large
# batches when the consumer lags amortize its per-batch costs (5,000: 27k events/s, 500: 16k).
CONSUMER_BATCH_SIZE = int(os.environ.get("CONSUMER_BATCH_SIZE", "5000"))
CONSUMER_POLL_TIMEOUT_SECONDS = float(os.environ.get("CONSUMER_POLL_TIMEOUT_SECONDS", "0.2"))
# How often librdkafka reports the consumer's lag per partition (cqrs_consumer_lag_messages).
# A log line per applied event (its id, type and the write's request id). About a fifth of the
# consumer's throughput in the benchmark; off, only batches' failures and dead letters are logged.
CONSUMER_LOG_EVENTS = env_bool("CONSUMER_LOG_EVENTS", True)
CONSUMER_STATS_INTERVAL_MS = int(os.environ.get("CONSUMER_STATS_INTERVAL_MS", "2000"))
# The consumer's and the relay's /metrics port (0: not served). Pools serve /metrics on their own port.
METRICS_PORT = int(os.environ.get("METRICS_PORT") or 0)
METRICS_HOST = os.environ.get("METRICS_HOST", "127.0.0.1")  # 0.0.0.0 in a container

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
API_TOKEN_CACHE_SECONDS = float(os.environ.get("API_TOKEN_CACHE_SECONDS", "5"))
# Writes per API token per minute (0: no limit); more answer 429 with Retry-After.
CQRS_WRITES_PER_MINUTE = int(os.environ.get("CQRS_WRITES_PER_MINUTE", "6000"))
DATA_UPLOAD_MAX_MEMORY_SIZE = int(os.environ.get("CQRS_MAX_BODY_BYTES", str(64 * 1024)))

# One JSON object per line, with the request id (cqrs_site/core/logs.py); LOG_FORMAT=plain for a
# terminal. CQRS_ACCESS_LOG: a line per request from the pools (HAProxy logs every request anyway).
LOG_FORMAT = os.environ.get("LOG_FORMAT", "json")
# The request metrics of each pool (counter and latency histogram per route); off only to measure
# what they cost (make bench).
CQRS_REQUEST_METRICS = env_bool("CQRS_REQUEST_METRICS", True)
CQRS_ACCESS_LOG = env_bool("CQRS_ACCESS_LOG", True)
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
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
    "loggers": {"django": {"level": "WARNING"}},
}
CACHE_CONSUMER_GROUP = os.environ.get("CACHE_CONSUMER_GROUP", "cqrs-cache")
# The relay leaves an event alone this long after its write, which publishes it itself.
RELAY_GRACE_SECONDS = float(os.environ.get("RELAY_GRACE_SECONDS", "5"))
RELAY_INTERVAL_SECONDS = float(os.environ.get("RELAY_INTERVAL_SECONDS", "1"))
# Every this long, the relay also reads every outbox (a writer may have died before it could note
# its document for the relay); in between it reads only the noted ones (writes/outbox.py).
RELAY_SCAN_SECONDS = float(os.environ.get("RELAY_SCAN_SECONDS", "30"))
# How often the relay checks that the topics exist with their partitions (writes/topics.py).
RELAY_TOPIC_CHECK_SECONDS = float(os.environ.get("RELAY_TOPIC_CHECK_SECONDS", "2"))
