"""Tests: the write role, whose URLs serve the whole API, so the test client drives both.

The servers' addresses come from the environment, set by tests/servers.py before this loads.
"""

from .write import *  # noqa: F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
