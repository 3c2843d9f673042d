"""Redis key names of the read cache. Every key belongs to one aggregate and carries its version."""

from django.conf import settings

PREFIX = settings.CQRS_CACHE_PREFIX


def user_key(user_id: str) -> str:
    return f"{PREFIX}:user:{user_id}"


def post_key(post_id: str) -> str:
    return f"{PREFIX}:post:{post_id}"


def post_likes_key(post_id: str) -> str:
    return f"{PREFIX}:post:{post_id}:likes"


def fill_lock_key(key: str) -> str:
    return f"{key}:filling"


def high_water_key(key: str) -> str:
    return f"{key}:hw"


# Suffixes of the keys that sit beside an entry (not entries themselves).
AUXILIARY_SUFFIXES = (b":filling", b":hw")
