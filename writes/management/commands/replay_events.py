import sys

from confluent_kafka import KafkaException
from django.core.management.base import BaseCommand, CommandError
from pymongo.errors import PyMongoError
from tqdm import tqdm

from cqrs_site.core.logs import request_id_set
from writes.aggregates import AGGREGATES
from writes.outbox import events_replay


class Command(BaseCommand):
    help = (
        "Re-publish the current state of chosen users and posts (or all of them) as UserReplayed / "
        "PostReplayed events, and wait until the broker has acknowledged each. Use after the broker "
        "lost events (Tansu keeps them in memory only; a Kafka cluster that lost a partition): the "
        "consumers bring the cache to MongoDB's state. Consumers apply events through the version "
        "fence, so replaying is always safe. Exits 1 if an id is unknown or an event was not sent."
    )

    def add_arguments(self, parser):
        for name in AGGREGATES:  # --users, --posts
            parser.add_argument(f"--{name}s", nargs="+", metavar="ID", default=None, help=f"these {name}s")
        parser.add_argument("--all", action="store_true", help="every document of every aggregate")
        parser.add_argument("--no-progress", action="store_true", help="no progress bar")

    def handle(self, *args, all, no_progress, **options):
        chosen = {name: options[f"{name}s"] for name in AGGREGATES}
        if not (all or any(chosen.values())):
            choices = ", ".join(f"--{name}s ID..." for name in AGGREGATES)
            raise CommandError(f"say what to replay: --all, or {choices}")
        plan = [(spec, None if all else chosen[name]) for name, spec in AGGREGATES.items() if all or chosen[name]]
        # One id for the whole replay, in every event's headers and the consumers' log lines.
        self.stdout.write(f"request id: {request_id_set(None)}")
        failed, missing = 0, []
        for spec, ids in plan:
            aggregate = spec.name
            total = len(ids) if ids is not None else spec.collection().estimated_document_count()
            with tqdm(total=total, unit=aggregate, disable=no_progress, file=sys.stderr) as bar:
                try:
                    done = events_replay(aggregate=aggregate, ids=ids, progress=bar.update)
                except (PyMongoError, KafkaException) as exc:
                    raise CommandError(f"replaying {aggregate}s failed: {exc}") from exc
            self.stdout.write(f"{aggregate}s: {done.published} replayed, {done.failed} not acknowledged")
            failed += done.failed
            missing += done.missing
        if missing:
            raise CommandError(f"no such documents: {', '.join(missing)}")
        if failed:
            raise CommandError(f"{failed} events were not acknowledged by the broker; run it again")
