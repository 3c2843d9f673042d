"""What both pools' gunicorn settings share: metrics across workers, and JSON logs.

Metrics: each worker keeps its values in files under PROMETHEUS_MULTIPROC_DIR, one directory per
gunicorn instance (the launcher gives each its own; otherwise a temporary one), emptied when the
master starts; `/metrics` adds up the files (cqrs_site/metrics.py).
"""

import os
import shutil
import tempfile

_own_dir = not os.environ.get("PROMETHEUS_MULTIPROC_DIR")
# Set before any worker imports prometheus_client, which reads it at import time.
metrics_dir = os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="cqrs-metrics-"))

# gunicorn's own lines (start, stop, worker deaths) as JSON objects, like the application's.
logconfig_dict = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"json": {"()": "cqrs_site.logs.JsonFormatter"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"}},
    "loggers": {
        "gunicorn.error": {"level": "INFO", "handlers": ["console"], "propagate": False},
        "gunicorn.access": {"level": "INFO", "handlers": ["console"], "propagate": False},
    },
}


def on_starting(server):
    # Values of a previous run of this instance would be added to this one's.
    shutil.rmtree(metrics_dir, ignore_errors=True)
    os.makedirs(metrics_dir, exist_ok=True)


def child_exit(server, worker):
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid, metrics_dir)


def on_exit(server):
    if _own_dir:
        shutil.rmtree(metrics_dir, ignore_errors=True)
