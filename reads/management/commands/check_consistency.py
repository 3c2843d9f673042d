import json
import sys

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from reads.consistency import consistency_check, document_count


class Command(BaseCommand):
    help = (
        "Compare every cached entry and feed place (reads/models.py) with MongoDB and report how many "
        "are consistent, stale (behind MongoDB for longer than --bound seconds, or other bytes), "
        "missing (not cached; harmless), in flight (behind by a write younger than --bound: not "
        "judged) and orphaned (cached, but no such document), in all and per read model. --repair "
        "rewrites stale ones through the version fence and deletes orphans. Exits 1 when stale "
        "entries remain. The continuous inspector (run_inspector) does the same all the time."
    )

    def add_arguments(self, parser):
        parser.add_argument("--repair", action="store_true", help="rewrite stale entries and delete orphans")
        parser.add_argument("--batch-size", type=int, default=500, help="documents per MongoDB batch")
        parser.add_argument(
            "--bound",
            type=float,
            default=settings.VISIBILITY_BOUND_SECONDS,
            help="seconds a difference may last before it is stale (VISIBILITY_BOUND_SECONDS)",
        )
        parser.add_argument("--json", dest="as_json", action="store_true", help="print the report as one JSON object")
        parser.add_argument("--no-progress", action="store_true", help="no progress bar")

    def handle(self, *args, repair, batch_size, bound, as_json, no_progress, **options):
        with tqdm(total=document_count(), unit="doc", disable=no_progress, file=sys.stderr) as bar:
            try:
                report = consistency_check(repair=repair, batch_size=batch_size, bound=bound, progress=bar.update)
            except Exception as exc:
                raise CommandError(f"consistency check failed: {exc}") from exc
        if as_json:
            self.stdout.write(json.dumps(report.as_dict(), sort_keys=True))
        else:
            totals = report.as_dict()
            by_model = totals.pop("by_model")
            for name, value in totals.items():
                self.stdout.write(f"{name:<11} {value}")
            for model, counts in sorted(by_model.items()):
                self.stdout.write(f"  {model:<11} " + ", ".join(f"{k} {v}" for k, v in counts.items()))
            for key in report.stale_keys[:10]:
                self.stdout.write(f"stale: {key}")
        if report.stale_left:
            raise CommandError(f"{report.stale_left} stale entries remain (run with --repair to fix them)")
