"""gunicorn settings for the write pool: `gunicorn -c deploy/gunicorn_write.py cqrs_site.wsgi`.

Threaded workers: a write blocks on MongoDB and on the broker's acknowledgement, and the Kafka
client is thread-based (gevent would block on it). One producer per worker, made after fork.
"""

from environs import Env, validate

from deploy.gunicorn_common import *  # noqa: F403 (timeouts, logging, the metrics hooks)

env = Env()  # a bad value stops gunicorn with the variable's name and the form it expects

raw_env = ["DJANGO_SETTINGS_MODULE=cqrs_site.settings.write"]
bind = env.str("GUNICORN_BIND", "127.0.0.1:8201")
worker_class = "gthread"
workers = env.int("GUNICORN_WORKERS", 2, validate=validate.Range(min=1))
threads = env.int("GUNICORN_THREADS", 8, validate=validate.Range(min=1))


def post_worker_init(worker):
    # Connect the producer before the first request, not during it.
    from writes.producer import publisher_warm

    publisher_warm()


def worker_exit(server, worker):
    # Hand what the producer still holds to the broker before the worker goes.
    from writes.producer import publisher_close

    publisher_close(timeout=5)
