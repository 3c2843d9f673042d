import sys

from confluent_kafka import KafkaException
from django.core.management.base import BaseCommand, CommandError
from pymongo.errors import PyMongoError
from tqdm import tqdm

from cqrs_site.logs import request_id_set
from writes.documents import Post, User
from writes.events import POST, USER
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
        parser.add_argument("--users", nargs="+", metavar="ID", default=None, help="these users")
        parser.add_argument("--posts", nargs="+", metavar="ID", default=None, help="these posts")
        parser.add_argument("--all", action="store_true", help="every user and every post")
        parser.add_argument("--no-progress", action="store_true", help="no progress bar")

    def handle(self, *args, users, posts, all, no_progress, **options):
        if not (all or users or posts):
            raise CommandError("say what to replay: --all, --users ID..., or --posts ID...")
        plan = []
        if all or users:
            plan.append((USER, None if all else users, User))
        if all or posts:
            plan.append((POST, None if all else posts, Post))
        # One id for the whole replay, in every event's headers and the consumers' log lines.
        self.stdout.write(f"request id: {request_id_set(None)}")
        failed, missing = 0, []
        for aggregate, ids, document_class in plan:
            total = len(ids) if ids is not None else document_class._get_collection().estimated_document_count()
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
