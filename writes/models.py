"""The write app's Django models (SQL): only its API tokens (writes/tokens.py)."""

from .tokens import ApiToken

__all__ = ["ApiToken"]
