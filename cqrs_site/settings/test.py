"""Tests: the write role, whose URLs serve the whole API, so the test client drives both.

The servers' addresses come from the environment, set by tests/servers.py before this loads.
"""

from .write import *  # noqa: F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
# WhiteNoise serves the admin's files from the apps (no collectstatic in tests).
STATIC_ROOT = None
WHITENOISE_USE_FINDERS = True
