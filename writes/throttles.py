"""Write throttling per API client: CQRS_WRITES_PER_MINUTE writes per token, counted in Redis
by the fixed-window counter all limits share (cqrs_site/core/ratelimit.py). When Redis does not
answer, writes are not throttled: the cache is not a dependency of writes."""

from django.conf import settings
from rest_framework.throttling import BaseThrottle

from cqrs_site.core.ratelimit import FixedWindow


def writes_window() -> FixedWindow:
    """The writes per minute of each token (the user's id): DRF's throttle below and the write
    fast path (writes/fastpath.py) count in the same window."""
    return FixedWindow("writes", settings.CQRS_WRITES_PER_MINUTE, 60)


class WritesPerMinute(BaseThrottle):
    def allow_request(self, request, view) -> bool:
        if request.user is None:
            return True
        verdict = writes_window().hit(str(request.user.pk))
        self.retry_after = verdict.retry_after
        return verdict.allowed

    def wait(self) -> float:
        return max(1.0, self.retry_after)
