"""gunicorn settings for the read pool: `gunicorn -c deploy/gunicorn_read.py cqrs_site.wsgi`.

gevent workers: a read is mostly waiting on Redis, so one process serves many at once. Clients
(Redis pool, MongoDB) are created lazily in each worker, after the fork.
"""

from environs import Env, validate

from deploy.gunicorn_common import *  # noqa: F403 (timeouts, logging, the metrics hooks)

env = Env()  # a bad value stops gunicorn with the variable's name and the form it expects

raw_env = ["DJANGO_SETTINGS_MODULE=cqrs_site.settings.read"]
bind = env.str("GUNICORN_BIND", "127.0.0.1:8101")
worker_class = env.str("GUNICORN_WORKER_CLASS", "gevent")
workers = env.int("GUNICORN_WORKERS", 2, validate=validate.Range(min=1))
worker_connections = env.int("GUNICORN_WORKER_CONNECTIONS", 1000, validate=validate.Range(min=1))
threads = env.int("GUNICORN_THREADS", 1, validate=validate.Range(min=1))  # for worker_class gthread


def post_worker_init(worker):
    # Warm the worker before its first request: import the URLconf and the views, open the Redis
    # connection. Otherwise the first request to a new worker (after a start or a reload) takes
    # about 0.7 s on these machines.
    from django.urls import get_resolver

    from cqrs_site.core.redis_client import redis_client

    get_resolver().url_patterns  # noqa: B018 (the import is the point)
    redis_client().ping()
