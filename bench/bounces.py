"""Benchmark `bounces fetch`: 10,000 reports in a Maildir, read, recorded and marked.

    .venv/bin/python bench/bounces.py                  # 10,000 reports
    .venv/bin/python bench/bounces.py --reports 50000

A dispatch of the example to as many readers is recorded first (no SMTP: its
delivery record only), then the Maildir is filled with the test fixtures' reports
about them: hard DSNs to the copies' VERP return paths, Gmail DSNs matched by
Message-ID, delayed DSNs, Exim and qmail bounces, ARF complaints and auto-replies.
Peak RSS is read after the first tenth and at the end: equal peaks mean memory
does not grow with the mailbox.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

FORMATS = (
    "postfix-dsn-hard",
    "gmail-dsn-hard",
    "postfix-dsn-delayed",
    "exim-bounce-plain",
    "qmail-bounce",
    "arf-abuse",
    "vacation-auto-submitted",
    "office365-ndr-hard",
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reports", type=int, default=10_000)
    args = parser.parse_args()

    from composer.bounces.fetch import fetch_bounces
    from composer.bounces.mailbox import MaildirMailbox
    from composer.config import subscriber_settings
    from composer.returnpath import ReturnPaths
    from composer.store import NewSubscriber, open_store
    from composer.store.deliveries import Outcome, Recipient
    from tests.bounce_reports import BOUNCES, report

    count = args.reports
    paths = ReturnPaths(BOUNCES, b"bench-" + b"x" * 40)
    dispatch = paths.for_dispatch("id:bench")
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        settings = subscriber_settings("bench.db", root)
        assert not isinstance(settings, str), settings
        with open_store(settings) as store:
            store.import_many(
                NewSubscriber(
                    email=f"reader{n}@example{n % 50}.com", key=f"reader{n}@example{n % 50}.com"
                )
                for n in range(count)
            )
            readers = list(store.iter_all())
            with store.deliveries("id:bench") as journal:
                journal.record(
                    Outcome(
                        recipient=Recipient(
                            email=s.email, tier="free", key=s.key, subscriber_id=s.id
                        ),
                        state="sending",
                        attempts=1,
                        message_id=f"<bench.{s.id}@example.com>",
                    )
                    for s in readers
                )
        box = root / "Maildir"
        for sub in ("new", "cur", "tmp"):
            (box / sub).mkdir(parents=True)
        for n, subscriber in enumerate(readers):
            name = FORMATS[n % len(FORMATS)]
            raw = report(
                name,
                recipient=subscriber.email,
                message_id=f"<bench.{subscriber.id}@example.com>",
                to=dispatch.address(subscriber.id) if n % 2 else BOUNCES,
                event=f"{name}.{n}",
            )
            (box / "new" / f"1714737600.M{n}P1.bench").write_bytes(raw)
        del readers

        peaks: dict[str, float] = {}
        processed = 0

        def sample(_: object) -> None:
            nonlocal processed
            processed += 1
            if processed == count // 10:
                peaks["after_a_tenth_mb"] = _peak_mb()

        mailbox = MaildirMailbox(box)
        started, cpu = time.perf_counter(), time.process_time()
        with open_store(settings) as store:
            summary = fetch_bounces(mailbox, store, paths, soft_limit=3, on_result=sample)
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
        peaks["at_the_end_mb"] = _peak_mb()
        print(
            json.dumps(
                {
                    "reports": count,
                    "seconds": round(seconds, 2),
                    "cpu_seconds": round(cpu, 2),
                    "per_second": round(count / seconds),
                    "bounced": summary.bounced,
                    "soft": summary.soft,
                    "complaints": summary.complaints,
                    "auto_replies": summary.auto_replies,
                    "not_understood": summary.not_understood,
                    "left_in_new": len(os.listdir(box / "new")),
                    **peaks,
                }
            )
        )


def _peak_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


if __name__ == "__main__":
    main()
