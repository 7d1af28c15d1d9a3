"""Time composing the example issue, per stage and per tier.

    .venv/bin/python bench/compose.py [ISSUE] [--runs N]

Prints the median of N runs for each stage (load, validate, render, mjml, inline,
text, message) and the total per variant; the target is under 150 ms a variant.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from composer.composing.inline import inline_css
from composer.composing.load import load_issue
from composer.composing.message import build_message
from composer.composing.mjml_html import mjml_to_html
from composer.composing.pipeline import ComposedIssue
from composer.composing.render import render_mjml, web_url
from composer.composing.text import render_text
from composer.composing.validate import validate_issue
from composer.config import load_config

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("issue", nargs="?", default=ROOT / "issues" / "2024-05-03-example.md")
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    config = load_config(ROOT / "config.toml")
    path = Path(args.issue)

    for tier in ("paid", "free"):
        timings: dict[str, list[float]] = {}
        cold = 0.0

        def timed(
            stage: str, work: Callable[[], Any], timings: dict[str, list[float]] = timings
        ) -> Any:
            start = time.perf_counter()
            result = work()
            timings.setdefault(stage, []).append(time.perf_counter() - start)
            return result

        for run in range(args.runs + 1):
            issue = timed("load", lambda: load_issue(path))
            timed("validate", lambda: validate_issue(issue, config.newsletter.templates))  # noqa: B023
            mjml = timed("render", lambda: render_mjml(issue, config, tier))  # noqa: B023
            raw_html = timed("mjml", lambda: mjml_to_html(mjml))  # noqa: B023
            html = timed("inline", lambda: inline_css(raw_html))  # noqa: B023
            text = timed("text", lambda: render_text(issue, config, tier))  # noqa: B023
            composed = ComposedIssue(
                issue, tier, issue.title, issue.preheader, web_url(issue, config), mjml, html, text
            )
            timed("message", lambda: build_message(composed, config).as_bytes())  # noqa: B023
            if run == 0:  # the first run warms caches (template compilation, CSS parsing)
                cold = sum(values[0] for values in timings.values()) * 1000
                timings.clear()
        medians = {stage: statistics.median(values) * 1000 for stage, values in timings.items()}
        total = sum(medians.values())
        print(
            f"{tier}: {total:6.1f} ms a variant (median of {args.runs}; first run {cold:.1f} ms), "
            f"{len(html) / 1024:.1f} KB HTML"
        )
        for stage, value in medians.items():
            print(f"  {stage:<9}{value:7.2f} ms")


if __name__ == "__main__":
    main()
