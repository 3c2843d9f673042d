import json
import sys

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from reads.consistency import consistency_check, document_count


class Command(BaseCommand):
    help = (
        "Compare every cached entry with MongoDB and report how many are consistent, stale (an older "
        "version, or other bytes), missing (not cached; harmless) and orphaned (cached, but no such "
        "document). --repair rewrites stale entries through the version fence and deletes orphans. "
        "Exits 1 when stale entries remain. Entries written while it runs may show as stale: run it "
        "again, or after the consumers have caught up."
    )

    def add_arguments(self, parser):
        parser.add_argument("--repair", action="store_true", help="rewrite stale entries and delete orphans")
        parser.add_argument("--batch-size", type=int, default=500, help="documents per MongoDB batch")
        parser.add_argument("--json", dest="as_json", action="store_true", help="print the report as one JSON object")
        parser.add_argument("--no-progress", action="store_true", help="no progress bar")

    def handle(self, *args, repair, batch_size, as_json, no_progress, **options):
        with tqdm(total=document_count(), unit="doc", disable=no_progress, file=sys.stderr) as bar:
            try:
                report = consistency_check(repair=repair, batch_size=batch_size, progress=bar.update)
            except Exception as exc:
                raise CommandError(f"consistency check failed: {exc}") from exc
        if as_json:
            self.stdout.write(json.dumps(report.as_dict(), sort_keys=True))
        else:
            for name, value in report.as_dict().items():
                self.stdout.write(f"{name:<11} {value}")
            for key in report.stale_keys[:10]:
                self.stdout.write(f"stale: {key}")
        if report.stale_left:
            raise CommandError(f"{report.stale_left} stale entries remain (run with --repair to fix them)")
