"""One fixed-window counter in Redis, for every limit the API keeps: writes per API token
(writes/throttles.py) and failed admin logins (cqrs_site/admin/sites.py).

A window is `window_seconds` long and aligned on the clock; its count lives under
`codec.window_key` and expires with it. Redis is the read cache, not a dependency of writes or
of the admin: when it does not answer, nothing is limited (and the caller is told so).
"""

import logging
import time
from dataclasses import dataclass

from redis.exceptions import RedisError

from . import codec
from .redis_client import redis_client

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    count: int
    retry_after: float  # seconds until the window ends


@dataclass(frozen=True)
class FixedWindow:
    name: str
    limit: int  # 0: no limit
    window_seconds: int

    def _window(self, identity: str) -> tuple[str, float]:
        """The current window's key for `identity`, and the seconds left in it."""
        now = time.time()
        number = int(now // self.window_seconds)
        return codec.window_key(self.name, identity, number), (number + 1) * self.window_seconds - now

    def hit(self, identity: str) -> Verdict:
        """Count one event for `identity`; allowed while the window's count is within the limit."""
        key, left = self._window(identity)
        if not self.limit:
            return Verdict(True, 0, left)
        try:
            pipe = redis_client().pipeline(transaction=False)
            pipe.incr(key)
            pipe.expire(key, self.window_seconds + 5)
            count, _ = pipe.execute()
        except RedisError as exc:
            logger.warning("%s limit not applied, Redis unavailable: %s", self.name, exc)
            return Verdict(True, 0, left)
        return Verdict(count <= self.limit, count, left)

    def peek(self, identity: str) -> Verdict:
        """The window's count so far, without counting; allowed while it is below the limit."""
        key, left = self._window(identity)
        if not self.limit:
            return Verdict(True, 0, left)
        try:
            count = int(redis_client().get(key) or 0)
        except RedisError as exc:
            logger.warning("%s limit not applied, Redis unavailable: %s", self.name, exc)
            return Verdict(True, 0, left)
        return Verdict(count < self.limit, count, left)

    def reset(self, identity: str) -> None:
        try:
            redis_client().delete(self._window(identity)[0])
        except RedisError:
            pass
