import logging
import signal
import threading

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from pymongo.errors import PyMongoError

from cqrs_site.core.metrics import RELAY_PASS_ERRORS, serve_metrics
from writes.outbox import outbox_relay_pass
from writes.producer import publisher_close

logger = logging.getLogger("writes.relay")


class Command(BaseCommand):
    help = (
        "Publish the events that writes committed but could not hand to Kafka (broker down, process "
        "killed): every RELAY_INTERVAL_SECONDS, each document's pending outbox, in order, with the "
        "idempotent producer. Safe to run several: consumers ignore duplicates. SIGTERM stops it."
    )

    def add_arguments(self, parser):
        parser.add_argument("--once", action="store_true", help="one pass, then exit (non-zero if any event failed)")
        parser.add_argument("--grace", type=float, default=None, help="seconds a pending event is left to its write")
        parser.add_argument(
            "--metrics-port",
            type=int,
            default=settings.METRICS_PORT,
            help="serve Prometheus metrics on 127.0.0.1:PORT/metrics (METRICS_PORT; 0: off)",
        )

    def handle(self, *args, once, grace, metrics_port, **options):
        grace = settings.RELAY_GRACE_SECONDS if grace is None else grace
        if not once:
            serve_metrics(metrics_port, settings.METRICS_HOST)
        stopping = threading.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: stopping.set())
        try:
            while True:
                try:
                    done = outbox_relay_pass(grace_seconds=grace, stop=None if once else stopping)
                except PyMongoError as exc:
                    if once:
                        raise CommandError(f"MongoDB unavailable: {exc}") from exc
                    RELAY_PASS_ERRORS.inc()
                    logger.error("relay pass failed, retrying: %s", exc)
                    stopping.wait(settings.RELAY_INTERVAL_SECONDS)
                    continue
                if done.events:
                    logger.info(
                        "relayed %d events of %d documents, %d failed", done.events, done.documents, done.failed
                    )
                if once:
                    if done.failed:
                        raise CommandError(f"{done.failed} of {done.events} pending events could not be published")
                    self.stdout.write(f"{done.events} pending events published")
                    return
                if stopping.wait(settings.RELAY_INTERVAL_SECONDS):
                    return
        finally:
            publisher_close()
