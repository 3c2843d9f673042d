"""Consumer role: run_consumer and the other long-running workers. No HTTP at all."""

from .base import *  # noqa: F403

CQRS_ROLE = "consumer"
