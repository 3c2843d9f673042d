from django.core.management.base import BaseCommand

from writes.documents import ensure_indexes


class Command(BaseCommand):
    help = "Create the MongoDB indexes the documents declare (idempotent; safe to run on every deploy)."

    def handle(self, *args, **options):
        ensure_indexes()
        self.stdout.write("indexes ensured")
