import sys

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from reads.consistency import cache_warm, document_count


class Command(BaseCommand):
    help = (
        "Fill the Redis cache from MongoDB (every user and post), through the version fence, so it "
        "never replaces a newer entry. Use after Redis lost its data or before sending traffic."
    )

    def add_arguments(self, parser):
        parser.add_argument("--batch-size", type=int, default=500, help="documents per MongoDB batch")
        parser.add_argument("--no-progress", action="store_true", help="no progress bar")

    def handle(self, *args, batch_size, no_progress, **options):
        with tqdm(total=document_count(), unit="doc", disable=no_progress, file=sys.stderr) as bar:
            try:
                stored, current = cache_warm(batch_size=batch_size, progress=bar.update)
            except Exception as exc:
                raise CommandError(f"warming the cache failed: {exc}") from exc
        self.stdout.write(f"{stored} entries stored, {current} already current")
