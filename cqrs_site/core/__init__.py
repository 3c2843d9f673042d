"""The base layer: what every role and app imports (errors, logs, metrics, the request layer,
HTTP validators, the Redis client and everything stored in Redis).

It imports no app (writes, reads, consumers) and nothing of the assembly above it (urls, wsgi,
admin, openapi, health), so the apps can import it without cycles. `make lint` holds that with
import-linter contracts (pyproject.toml).
"""
