import logging
import signal
import threading
import time

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from pymongo.errors import PyMongoError

from cqrs_site.core.metrics import RELAY_PASS_ERRORS, TOPICS_REMADE, serve_metrics
from cqrs_site.core.sweeps import sweep_request
from writes.outbox import outbox_relay_pass
from writes.producer import publisher_close
from writes.topics import topic_partitions, topics_ensure, wanted_topics

logger = logging.getLogger("writes.relay")


def keep_topics(stopping: threading.Event) -> None:
    """Every RELAY_TOPIC_CHECK_SECONDS, make the topics right if the broker lost them (a memory-only
    broker restarted, an operator deleted one) or has them short of partitions. Runs on a thread
    of its own, so a broker that does not answer never holds up the relay or its exit."""
    while not stopping.wait(settings.RELAY_TOPIC_CHECK_SECONDS):
        try:
            have = topic_partitions(timeout=2)
            if all(have.get(topic) == settings.KAFKA_TOPIC_PARTITIONS for topic in wanted_topics()):
                continue
            remade = [state for state in topics_ensure(timeout=5) if state.outcome != "exists"]
        except Exception as exc:  # the broker is down, or the topics need an operator: try again
            logger.warning("could not check the topics: %s", exc)
            continue
        if remade:
            TOPICS_REMADE.inc(len(remade))
            # Events the broker held there are gone: the inspector repairs the cache from MongoDB.
            sweep_request(", ".join(f"topic {s.topic} {s.outcome}" for s in remade))


class Command(BaseCommand):
    help = (
        "Publish the events that writes committed but could not hand to Kafka (broker down, process "
        "killed), in order per document, with the idempotent producer: every RELAY_INTERVAL_SECONDS the "
        "documents writes noted for it, every RELAY_SCAN_SECONDS every outbox. Also keeps the topics "
        "(create_topics) when the broker comes back without them. Safe to run several: consumers ignore "
        "duplicates. SIGTERM stops it within a second."
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
        stopping = threading.Event()
        if not once:
            serve_metrics(metrics_port, settings.METRICS_HOST)
            threading.Thread(target=keep_topics, args=(stopping,), name="topic-keeper", daemon=True).start()
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: stopping.set())
        full_pass_at = 0.0  # the first pass is a full one
        try:
            while True:
                full = once or time.monotonic() >= full_pass_at
                try:
                    done = outbox_relay_pass(grace_seconds=grace, stop=None if once else stopping, due_only=not full)
                except PyMongoError as exc:
                    if once:
                        raise CommandError(f"MongoDB unavailable: {exc}") from exc
                    RELAY_PASS_ERRORS.inc()
                    logger.error("relay pass failed, retrying: %s", exc)
                    if stopping.wait(settings.RELAY_INTERVAL_SECONDS):
                        return
                    continue
                if full:
                    full_pass_at = time.monotonic() + settings.RELAY_SCAN_SECONDS
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
            # Within the second SIGTERM allows: what is unacknowledged stays in its outbox.
            publisher_close(timeout=0.5 if not once else 5)
