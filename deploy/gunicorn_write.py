"""gunicorn settings for the write pool: `gunicorn -c deploy/gunicorn_write.py cqrs_site.wsgi`.

Threaded workers: a write blocks on MongoDB and on the broker's acknowledgement, and the Kafka
client is thread-based (gevent would block on it). One producer per worker, made after fork.
"""

import os

from deploy.gunicorn_common import *  # noqa: F403 (timeouts, logging, the metrics hooks)

raw_env = ["DJANGO_SETTINGS_MODULE=cqrs_site.settings.write"]
bind = os.environ.get("GUNICORN_BIND", "127.0.0.1:8201")
worker_class = "gthread"
workers = int(os.environ.get("GUNICORN_WORKERS", "2"))
threads = int(os.environ.get("GUNICORN_THREADS", "8"))


def post_worker_init(worker):
    # Connect the producer before the first request, not during it.
    from writes.producer import publisher_warm

    publisher_warm()


def worker_exit(server, worker):
    # Hand what the producer still holds to the broker before the worker goes.
    from writes.producer import publisher_close

    publisher_close(timeout=5)
