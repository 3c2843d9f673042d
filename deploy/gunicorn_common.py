"""What both pools' gunicorn settings share: timeouts, logging, the control socket, and
metrics across workers. deploy/gunicorn_{read,write}.py import all of it.

Metrics: each worker keeps its values in files under PROMETHEUS_MULTIPROC_DIR, one directory per
gunicorn instance (the launcher gives each its own; otherwise a temporary one), emptied when the
master starts; `/metrics` adds up the files (cqrs_site/core/metrics.py).
"""

import ctypes
import ctypes.util
import os
import shutil
import signal
import tempfile

from gunicorn import glogging

timeout = 30
graceful_timeout = 20
keepalive = 10
preload_app = False
# The application logs each request as JSON, with its request id (CQRS_ACCESS_LOG); gunicorn's
# own access log only if asked for (RequestedAccessLog).
accesslog = os.environ.get("GUNICORN_ACCESSLOG") or None


class RequestedAccessLog(glogging.Logger):
    """gunicorn's logger, whose access log is on only when `accesslog` asks for it. gunicorn
    turns it on for any logging configuration too, and logconfig_dict (below) is always given:
    every request was logged twice, the second line without its request id (half of the pools'
    log lines, each through the supervisor's pipes)."""

    def access(self, resp, req, environ, request_time):
        if self.cfg.accesslog:
            super().access(resp, req, environ, request_time)


logger_class = RequestedAccessLog
errorlog = "-"
# gunicorn's control socket defaults to one path per user ($HOME/.gunicorn/gunicorn.ctl), which
# every instance on a host would share; off unless given a path of its own.
control_socket = os.environ.get("GUNICORN_CONTROL_SOCKET") or "unused"
control_socket_disable = not os.environ.get("GUNICORN_CONTROL_SOCKET")

_own_dir = not os.environ.get("PROMETHEUS_MULTIPROC_DIR")
# Set before any worker imports prometheus_client, which reads it at import time.
metrics_dir = os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="cqrs-metrics-"))

# gunicorn's own lines (start, stop, worker deaths) as JSON objects, like the application's.
logconfig_dict = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"json": {"()": "cqrs_site.core.logs.JsonFormatter"}},
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


def post_fork(server, worker):
    # A worker dies with its master (Linux's parent-death signal): killed, a master would
    # otherwise leave its workers holding the port until they noticed (15 s, measured), and the
    # supervisor's restart would fail to bind it.
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != server.pid:  # the master died before the line above
        os._exit(1)


def child_exit(server, worker):
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid, metrics_dir)


def on_exit(server):
    if _own_dir:
        shutil.rmtree(metrics_dir, ignore_errors=True)
