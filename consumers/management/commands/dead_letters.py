import json
import sys
from datetime import UTC, datetime, timedelta

from confluent_kafka import KafkaException
from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from consumers.dead_letters import Filters, Unreadable, dead_letters, decode_error, replay
from consumers.registry import consumer_specs

UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def moment(text: str) -> datetime:
    """An ISO 8601 time (UTC unless it says otherwise), or an age: 30m, 6h, 2d."""
    if text and text[-1] in UNITS and text[:-1].isdigit():
        return datetime.now(UTC) - timedelta(seconds=int(text[:-1]) * UNITS[text[-1]])
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError as exc:
        raise CommandError(f"not a time: {text!r} (say 2026-11-27T10:00, or an age: 30m, 6h, 2d)") from exc
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def body(value: bytes | None) -> str:
    if value is None:
        return "(no value)"
    try:
        return json.dumps(json.loads(value), indent=2, ensure_ascii=False)
    except ValueError:
        return value.decode(errors="replace")


class Command(BaseCommand):
    help = (
        "The messages a consumer set aside on its dead-letter topic (it could not decode them): "
        "`list` them, `show` one whole, `replay` them to the topic they came from, where the "
        "consumers apply them through the version fence (safe to repeat; an entry never moves back). "
        "Filters narrow every action. Reading commits nothing and moves nothing."
    )

    def add_arguments(self, parser):
        actions = parser.add_subparsers(dest="action", required=True, metavar="list|show|replay")
        listing = actions.add_parser("list", help="one line per dead letter")
        listing.add_argument("--json", dest="as_json", action="store_true", help="one JSON object per line")
        listing.add_argument("--limit", type=int, default=None, help="at most this many (the oldest first)")
        showing = actions.add_parser("show", help="one dead letter, headers and body")
        showing.add_argument("id", help="PARTITION:OFFSET in the dead-letter topic, as `list` shows it")
        replaying = actions.add_parser("replay", help="send them again to the topic they came from")
        replaying.add_argument("ids", nargs="*", metavar="ID", help="these (PARTITION:OFFSET); else all that match")
        replaying.add_argument("--dry-run", action="store_true", help="say what would be sent, send nothing")
        replaying.add_argument(
            "--force", action="store_true", help="also those the current code cannot decode (they will come back)"
        )
        replaying.add_argument("--no-progress", action="store_true", help="no progress bar")
        for sub in (listing, replaying):
            sub.add_argument("--error", help="whose error contains this text (any case)")
            sub.add_argument("--since", type=moment, help="dead-lettered at or after: ISO time or age (30m, 6h, 2d)")
            sub.add_argument("--until", type=moment, help="dead-lettered before: ISO time or age")
            sub.add_argument("--key", help="whose message key is this")
        for sub in (listing, showing, replaying):
            sub.add_argument("--consumer", default="cache", choices=sorted(consumer_specs()), help="whose dead letters")

    def handle(self, *args, action, consumer, **options):
        spec = consumer_specs()[consumer]
        ids = options.get("ids") or ([options["id"]] if options.get("id") else [])
        filters = Filters(
            ids=frozenset(ids),
            error=options.get("error"),
            since=options.get("since"),
            until=options.get("until"),
            key=options.get("key"),
        )
        try:
            letters = list(dead_letters(spec, filters))
            getattr(self, f"_{action}")(spec, letters, filters, **options)
        except (Unreadable, KafkaException) as exc:
            raise CommandError(str(exc)) from exc

    def _list(self, spec, letters, filters, *, as_json: bool, limit: int | None, **options):
        shown = letters[:limit] if limit is not None else letters
        for letter in shown:
            refused = decode_error(spec, letter)
            if as_json:
                row = {
                    "id": letter.id,
                    "at": letter.at.isoformat() if letter.at else None,
                    "source": letter.source,
                    "key": (letter.key or b"").decode(errors="replace"),
                    "error": letter.error,
                    "decodes_now": refused is None,
                }
                self.stdout.write(json.dumps(row, ensure_ascii=False))
            else:
                at = letter.at.strftime("%Y-%m-%d %H:%M:%S") if letter.at else "?"
                now = "decodes now" if refused is None else "still poison"
                self.stdout.write(f"{letter.id:<10} {at}  {letter.source:<28} {now:<12}  {letter.error[:80]}")
        if not as_json:
            more = f" (showing {len(shown)})" if len(shown) < len(letters) else ""
            self.stdout.write(f"{len(letters)} dead letters on {spec.dead_letter_topic}{more}")

    def _show(self, spec, letters, filters, **options):
        if not letters:
            raise CommandError(f"no dead letter {options['id']} on {spec.dead_letter_topic} (see `dead_letters list`)")
        [letter] = letters
        refused = decode_error(spec, letter)
        self.stdout.write(f"dead letter {letter.id} on {spec.dead_letter_topic}")
        self.stdout.write(f"  from      {letter.source}")
        self.stdout.write(f"  at        {letter.at.isoformat() if letter.at else '?'}")
        self.stdout.write(f"  error     {letter.error}")
        self.stdout.write(f"  key       {(letter.key or b'').decode(errors='replace')}")
        self.stdout.write(f"  now       {'decodes with the current code' if refused is None else refused}")
        for name, value in sorted(letter.headers.items()):
            if not name.startswith("dlq."):
                self.stdout.write(f"  header    {name}: {value}")
        self.stdout.write(body(letter.value))

    def _replay(self, spec, letters, filters, *, dry_run: bool, force: bool, no_progress: bool, **options):
        missing = sorted(filters.ids - {letter.id for letter in letters})
        if missing:
            raise CommandError(f"no such dead letters: {', '.join(missing)}")
        if dry_run:
            for letter in letters:
                refused = None if force else decode_error(spec, letter)
                verdict = "would send" if refused is None else f"would skip ({refused})"
                self.stdout.write(f"{letter.id:<10} {letter.source:<28} {verdict}")
            self.stdout.write(f"{len(letters)} dead letters match; nothing sent (--dry-run)")
            return
        with tqdm(total=len(letters), unit="letter", disable=no_progress, file=sys.stderr) as bar:
            done = replay(spec, letters, force=force, progress=bar.update)
        for letter_id, why in sorted(done.skipped.items()):
            self.stdout.write(f"skipped {letter_id}: the current code cannot decode it ({why}); --force sends it")
        self.stdout.write(
            f"{len(done.sent)} replayed to {spec.topic}, {len(done.skipped)} skipped, {len(done.failed)} failed"
        )
        if done.failed:
            details = "; ".join(f"{letter_id}: {why}" for letter_id, why in sorted(done.failed.items()))
            raise CommandError(f"not acknowledged by the broker (run it again: replaying is safe): {details}")
