"""The consumer scenario: a backlog applied by run_consumer against a raw consume."""

import json
import subprocess
import time

from .common import (
    BACKLOG_BASE_VERSION,
    HOT_KEYS,
    PYTHON,
    ROOT,
    log,
)


class ConsumerScenarios:
    """Scenarios of bench.run.Bench (its stack, wrk and results)."""

    def scenario_consumer(self) -> None:
        """A backlog read by a bare consumer, then applied by run_consumer four ways, each from
        a backlog of its own whose versions are above the one before: every run stores every
        event (one that re-applied the same backlog would only be fenced off, which is cheaper).
        Three backlogs go round every post (the target's case): a partition holds a sixth of the
        posts, so a batch of 5,000 from one partition holds up to three versions of a post, and
        the 50,000 events make 27,100-27,700 documents' cache writes (counted in Redis, 2026-11-28);
        the fourth goes round HOT_KEYS posts only, so a batch holds ten versions of each and makes
        one cache write per post (compaction's case); the fifth goes round every post again with
        the `top` and `latest` feeds cached (read once first): every like then moves its post into
        `top`, a place in a bounded feed beside each post's two entries (a like storm's case)."""
        events = self.args.events
        rounds = 1 + events // len(self.ids)  # versions each backlog over every post spans
        hot_ids = self.run_dir / "backlog-hot-ids.txt"
        hot_ids.write_text("\n".join(self.ids[:HOT_KEYS]) + "\n")
        topics = []
        # Versions far above any the write scenarios gave the posts (a backlog starting at 2 had
        # a share of its events fenced off, which is cheaper than storing them).
        backlogs = [(self.ids_file, BACKLOG_BASE_VERSION + n * rounds) for n in range(3)]
        backlogs.append((hot_ids, BACKLOG_BASE_VERSION + 3 * rounds))
        backlogs.append((self.ids_file, BACKLOG_BASE_VERSION + 4 * rounds))
        for n, (ids_file, base) in enumerate(backlogs):
            topic = f"bench.backlog.{int(time.time())}.{n}"
            log(f"consumer: producing a backlog of {events} events into {topic}")
            self.manage("create_topics", env={"KAFKA_EVENTS_TOPIC": topic, "KAFKA_DEAD_LETTER_TOPIC": topic + ".dlq"})
            self._backlog("produce", topic, str(events), ids_file.as_posix(), str(base))
            topics.append(topic)
        raw = self._backlog("raw", topics[0], str(events))
        log(f"raw consume: {raw['events_per_s']:.0f} events/s; now run_consumer")
        applied = self._backlog("apply", topics[0], str(events))
        quiet = self._backlog("apply", topics[1], str(events), "1", env={"CONSUMER_LOG_EVENTS": "0"})
        two = self._backlog("apply", topics[2], str(events), "2")
        hot = self._backlog("apply", topics[3], str(events))
        for order in ("top", "latest"):
            answer = self.session.get(f"{self.url}/api/posts", params={"order": order, "limit": 1}, timeout=30)
            answer.raise_for_status()
        feeds = self._backlog("apply", topics[4], str(events))
        self.results["scenarios"]["consumer"] = {
            "events": events,
            "raw_consume": raw,
            "run_consumer": applied,
            "run_consumer_without_event_lines": quiet,
            "two_consumers": two,
            "hot_keys": {"posts": min(HOT_KEYS, len(self.ids)), "run_consumer": hot},
            "feeds_cached": {"feeds": ["top", "latest"], "run_consumer": feeds},
            "ratio": applied["events_per_s"] / raw["events_per_s"],
        }

    def _backlog(self, *args: str, env: dict | None = None) -> dict:
        """One step of bench/backlog.py in its own process; its last line of output, as JSON."""
        result = subprocess.run(
            [PYTHON, "-m", "bench.backlog", *args],
            cwd=ROOT,
            env={**self.env, "DJANGO_SETTINGS_MODULE": "cqrs_site.settings.consumer", **(env or {})},
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            raise RuntimeError(f"bench.backlog {args[0]}: {result.stdout}{result.stderr}")
        return json.loads(result.stdout.splitlines()[-1])

    # --- the whole run -----------------------------------------------------------------------
