"""The process's Redis client, over django-redis's connection pool.

Made on first use in each process (after gunicorn forks), never at import time. Django's own
`get_redis_connection()` looks the cache backend up in a per-thread (under gevent, per-greenlet)
handler, building a backend object per request: too much for the read hot path.
"""

from django_redis import get_redis_connection

from .process import PerProcess

redis_client = PerProcess(lambda: get_redis_connection("default"))
