"""Write throttling per API client: CQRS_WRITES_PER_MINUTE writes per token, counted in Redis.

A fixed one-minute window per client (one INCR and EXPIRE in a pipeline). Redis is the read
cache, not a dependency of writes: when it does not answer, writes are not throttled.
"""

import logging
import time

from django.conf import settings
from django_redis import get_redis_connection
from redis.exceptions import RedisError
from rest_framework.throttling import BaseThrottle

logger = logging.getLogger(__name__)

WINDOW_SECONDS = 60


class WritesPerMinute(BaseThrottle):
    def allow_request(self, request, view) -> bool:
        limit = settings.CQRS_WRITES_PER_MINUTE
        if not limit or request.user is None:
            return True
        now = time.time()
        window = int(now // WINDOW_SECONDS)
        self.retry_after = (window + 1) * WINDOW_SECONDS - now
        key = f"{settings.CQRS_CACHE_PREFIX}:throttle:{request.user.pk}:{window}"
        try:
            pipe = get_redis_connection("default").pipeline(transaction=False)
            pipe.incr(key)
            pipe.expire(key, WINDOW_SECONDS + 5)
            count, _ = pipe.execute()
        except RedisError as exc:
            logger.warning("write throttle not applied, Redis unavailable: %s", exc)
            return True
        return count <= limit

    def wait(self) -> float:
        return max(1.0, self.retry_after)
