from django.core.management.base import BaseCommand, CommandError

from writes.topics import topics_create


class Command(BaseCommand):
    help = (
        "Create the event topic and its dead-letter topic with KAFKA_TOPIC_PARTITIONS partitions and "
        "KAFKA_REPLICATION_FACTOR replicas (idempotent)."
    )

    def handle(self, *args, **options):
        try:
            outcome = topics_create()
        except Exception as exc:
            raise CommandError(f"could not create topics: {exc}") from exc
        for topic, state in outcome.items():
            self.stdout.write(f"{topic}: {state}")
