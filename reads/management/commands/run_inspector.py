import signal
import threading

from django.conf import settings
from django.core.management.base import BaseCommand

from cqrs_site.core.metrics import serve_metrics
from reads.inspector import Inspector


class Command(BaseCommand):
    help = (
        "The cache inspector: sweep every cache entry and feed place against MongoDB, all the time, at "
        "INSPECTOR_DOCS_PER_SECOND, and repair what stays behind MongoDB for longer than the visibility "
        "bound, through the version fence. Its metrics are the system's measured consistency. A sweep "
        "asked for (a consumer or the relay found the broker lost data) starts at once, at full speed. "
        "SIGTERM stops it. One per deployment is enough; several are safe."
    )

    def add_arguments(self, parser):
        parser.add_argument("--rate", type=float, default=settings.INSPECTOR_DOCS_PER_SECOND, help="documents/s")
        parser.add_argument("--bound", type=float, default=settings.VISIBILITY_BOUND_SECONDS, help="seconds")
        parser.add_argument("--batch-size", type=int, default=settings.INSPECTOR_BATCH_SIZE)
        parser.add_argument("--sweeps", type=int, default=None, help="stop after this many sweeps")
        parser.add_argument(
            "--metrics-port",
            type=int,
            default=settings.METRICS_PORT,
            help="serve Prometheus metrics on 127.0.0.1:PORT/metrics (METRICS_PORT; 0: off)",
        )

    def handle(self, *args, rate, bound, batch_size, sweeps, metrics_port, **options):
        stop = threading.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: stop.set())
        serve_metrics(metrics_port, settings.METRICS_HOST)
        inspector = Inspector(
            rate=rate, bound=bound, batch_size=batch_size, min_sweep_seconds=settings.INSPECTOR_MIN_SWEEP_SECONDS
        )
        inspector.run(stop, sweeps=sweeps)
