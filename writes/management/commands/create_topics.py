from django.core.management.base import BaseCommand, CommandError

from writes.topics import topics_ensure


class Command(BaseCommand):
    help = (
        "Make the event topic and its dead-letter topic exist with KAFKA_TOPIC_PARTITIONS partitions "
        "and KAFKA_REPLICATION_FACTOR replicas: creates what is missing, adds partitions to a topic that "
        "has fewer, refuses to shrink one (idempotent; the relay does the same whenever the broker comes "
        "back without them)."
    )

    def handle(self, *args, **options):
        try:
            states = topics_ensure()
        except Exception as exc:
            raise CommandError(f"could not make the topics right: {exc}") from exc
        for state in states:
            self.stdout.write(f"{state.topic}: {state.outcome} ({state.partitions} partitions)")
